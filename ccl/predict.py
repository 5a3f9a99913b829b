"""``python -m ccl.predict RUN_DIR [note.txt]``: code one note with a trained run.

Reads the note from the file (or stdin), prompts the run's model exactly as the
predict stage does, and prints the evidence it found and ``CODE - description``
lines. Codes that are not billable in the run's Tabular List are flagged. Each code
shows its score (the log-probability of its tokens in the same generation, and that
probability) and any guideline flag of the Tabular List's notes (Excludes1 pairs, a
missing 7th character, a missing "code first" / "use additional code" half;
:mod:`ccl.eval.guidelines`). A run with ``infer.restrict_codes`` decodes with the same
allowed codes (``restrict_codes.json`` of the run folder).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ccl.data.records import Document


def _load_run_config(run_dir: Path):
    path = run_dir / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: not a CCL run folder (no config.yaml); give the folder of a finished run")
    cfg = OmegaConf.load(path)
    if cfg.train.mode != "none" and not (run_dir / "model").exists():
        raise SystemExit(f"{run_dir / 'model'}: the run has no trained model; run its train stage first")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccl.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by python -m ccl.run")
    parser.add_argument("note", nargs="?", type=Path, help="a text file (default: read stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    args = parser.parse_args(argv)

    console = Console()
    cfg = _load_run_config(args.run_dir)
    if args.note is not None and not args.note.exists():
        raise SystemExit(f"{args.note}: no such file")
    text = args.note.read_text(encoding="utf-8") if args.note else sys.stdin.read()
    if not text.strip():
        raise SystemExit("empty note: give a text file or pipe the note on stdin")
    if args.max_new_tokens:
        cfg.infer.max_new_tokens = args.max_new_tokens
    cfg.infer.human_evidence = False

    from ccl.eval.guidelines import GuidelineChecker
    from ccl.icd.tabular import load_tabular
    from ccl.inference.constrained import ALLOWED_CODES_FILE
    from ccl.stages.predict import predict_documents
    from ccl.stages.train import load_trained

    tab = load_tabular(cfg.icd.tabular_xml, Path(cfg.paths.cache_dir))
    model, tokenizer = load_trained(cfg, None, args.run_dir)
    allowed = None
    if cfg.infer.get("restrict_codes") and (args.run_dir / ALLOWED_CODES_FILE).is_file():
        allowed = json.loads((args.run_dir / ALLOWED_CODES_FILE).read_text(encoding="utf-8"))
    [row] = predict_documents(cfg, model, tokenizer, [Document(id="note", text=text, codes=[])],
                              allowed_codes=allowed)
    scores = row.get("code_scores") or {}
    flags = GuidelineChecker(tab).check(row["codes"]).per_code()

    console.rule("[bold]Evidence")
    for ev in row["evidence"] or ["(none)"]:
        console.print(f"  • {ev}")
    table = Table(title="ICD-10-CM codes", show_header=True)
    table.add_column("code", style="bold cyan")
    table.add_column("description")
    table.add_column("log p", justify="right")
    table.add_column("p", justify="right")
    table.add_column("guideline flags")
    for code in row["codes"]:
        lp = scores.get(code)
        score = ("–", "–") if lp is None else (f"{lp:.2f}", f"{math.exp(lp):.2f}")
        flag = ", ".join(flags.get(code, [])) or ""
        if tab.is_billable(code):
            table.add_row(code, tab.description(code), *score, f"[yellow]{flag}[/]")
        else:
            table.add_row(f"[red]{code}[/]", "[red]not a billable code in this Tabular List[/]", *score,
                          f"[yellow]{flag}[/]")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
