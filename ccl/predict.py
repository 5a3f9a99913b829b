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

from ccl.cli_errors import cli_main
from ccl.data.records import Document
from ccl.eval.guidelines import GuidelineChecker
from ccl.icd.tabular import load_tabular
from ccl.utils.run_folder import RunFolder


def _load_run_config(run_dir: Path):
    folder = RunFolder(run_dir)
    if not folder.config.exists():
        raise SystemExit(f"{folder.config}: not a CCL run folder (no config.yaml); give the folder of a finished run")
    cfg = OmegaConf.load(folder.config)
    if cfg.train.mode != "none" and not folder.model.exists():
        raise SystemExit(f"{folder.model}: the run has no trained model; run its train stage first")
    return cfg


def read_note(path: Path | None, encoding: str) -> str:
    """The note's text from ``path`` (or stdin's bytes), decoded with ``encoding``.

    Raises ``ValueError`` naming the file (or stdin), the byte offset of the first byte
    that is not valid in ``encoding``, and the ``--encoding`` option; ``FileNotFoundError``
    for a missing file; ``LookupError``-turned-``ValueError`` for an unknown encoding.
    """
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"--encoding {encoding}: unknown encoding (e.g. utf-8, latin-1, cp1252)") from None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give a text file or pipe the note on stdin")
    data = path.read_bytes() if path is not None else sys.stdin.buffer.read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        where = path if path is not None else "stdin"
        raise ValueError(
            f"{where}: not valid {encoding} text: byte 0x{data[err.start]:02x} at byte offset {err.start}; "
            f"pass the note's encoding, e.g. --encoding latin-1 (or cp1252), or convert it to UTF-8"
        ) from None


@cli_main("ccl.predict")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccl.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by python -m ccl.run")
    parser.add_argument("note", nargs="?", type=Path, help="a text file (default: read stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--encoding", default="utf-8",
                        help="the note's text encoding (default utf-8; e.g. latin-1, cp1252)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--long-notes", choices=("truncate", "window"), default=None,
                        help="a note over the model's context: cut its end (truncate, the default) "
                             "or code it in overlapping windows (window)")
    args = parser.parse_args(argv)

    console = Console()
    cfg = _load_run_config(args.run_dir)
    text = read_note(args.note, args.encoding)
    if not text.strip():
        raise SystemExit("empty note: give a text file or pipe the note on stdin")
    if args.max_new_tokens:
        cfg.infer.max_new_tokens = args.max_new_tokens
    cfg.infer.human_evidence = False
    if args.long_notes:
        cfg.infer.long_notes = args.long_notes

    # why: transformers + lightning: slow import (~3 s), not for --help; tests replace
    # ccl.stages.predict's functions, looked up here per call
    from ccl.stages.predict import answer_bound, inference_device, place_model, predict_documents
    from ccl.stages.train import load_trained

    tab = load_tabular(cfg.icd.tabular_xml, Path(cfg.paths.cache_dir))
    model, tokenizer = load_trained(cfg, None, args.run_dir)
    model = place_model(model, inference_device(cfg.train))
    allowed = None
    if cfg.infer.get("restrict_codes") and RunFolder(args.run_dir).restrict_codes.is_file():
        allowed = json.loads(RunFolder(args.run_dir).restrict_codes.read_text(encoding="utf-8"))
    [row] = predict_documents(cfg, model, tokenizer, [Document(id="note", text=text, codes=[])],
                              allowed_codes=allowed, max_new_tokens=answer_bound(cfg, args.run_dir))
    scores = row.get("code_scores") or {}
    flags = GuidelineChecker(tab).check(row["codes"]).per_code()

    if row.get("note_tokens_cut"):
        console.print(
            f"[yellow]warning: the note was cut to fit backbone.max_length={cfg.backbone.max_length} "
            f"(with room for {cfg.infer.max_new_tokens} answer tokens): {row['note_tokens_cut']:,} "
            "tokens at its end were not read. Code it in overlapping windows with "
            "--long-notes window.[/]"
        )
    elif row.get("windows", 1) > 1:
        console.print(f"[cyan]the note was coded in {row['windows']} overlapping windows[/]")
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
