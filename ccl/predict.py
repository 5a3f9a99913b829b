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
import codecs
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

RUN_KEYS = ("train", "backbone", "infer", "icd", "paths")  # what ccl.predict reads of a run's config.yaml


def _load_run_config(run_dir: Path):
    """The resolved config of a CCL run folder. Raises ``ValueError`` naming the folder when it
    is not one (no ``config.yaml``, or one of another program), ``FileNotFoundError`` when its
    model was not trained."""
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise ValueError(f"{run_dir}: not a CCL run folder (no config.yaml); give the folder of a finished run")
    try:
        cfg = OmegaConf.load(folder.config)
    except Exception as err:  # a YAML or OmegaConf error: the file is not a CCL config
        raise ValueError(f"{run_dir}: not a CCL run folder ({folder.config} does not read as a CCL config: "
                         f"{' '.join(str(err).split())[:120]}); give the folder of a finished run") from None
    missing = [k for k in RUN_KEYS if not OmegaConf.is_dict(cfg) or k not in cfg]
    if missing:
        raise ValueError(f"{run_dir}: not a CCL run folder (its config.yaml has no {', '.join(missing)} "
                         "section); give the folder of a finished ccl.run")
    if cfg.train.mode != "none" and not folder.model.exists():
        raise FileNotFoundError(f"{folder.model}: the run has no trained model; run its train stage first")
    return cfg


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE before UTF-16 LE


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``data`` declares (UTF-8/16/32), or None."""
    return next((name for bom, name in BOMS if data.startswith(bom)), None)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1 (leave the option out to use the run's bound)")
    return value


def read_note(path: Path | None, encoding: str | None = None) -> str:
    """The note's text from ``path`` (or stdin's bytes), decoded with ``encoding``; ``None``
    (the default): the encoding a byte-order mark declares (UTF-8, UTF-16 or UTF-32, as
    Unicode's BOM rule), else UTF-8. A given ``encoding`` is used as given.

    Raises ``ValueError`` naming the file (or stdin) when the bytes are not valid in the
    encoding (with the byte offset, the BOM found and the ``--encoding`` option) or hold NUL
    bytes without a BOM (UTF-16/32 without one); ``FileNotFoundError`` for a missing file;
    ``ValueError`` for an unknown encoding.
    """
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"--encoding {encoding}: unknown encoding (e.g. utf-8, latin-1, cp1252)") from None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give a text file or pipe the note on stdin")
    data = path.read_bytes() if path is not None else sys.stdin.buffer.read()
    where = path if path is not None else "stdin"
    declared = bom_encoding(data)
    if encoding is None and declared is None and b"\x00" in data:
        raise ValueError(f"{where}: holds NUL bytes: UTF-16 or UTF-32 text without a byte-order mark? "
                         "pass its encoding, e.g. --encoding utf-16-le (or utf-16-be, utf-32-le)")
    chosen = encoding or declared or "utf-8"
    try:
        return data.decode(chosen).lstrip("\ufeff")
    except UnicodeDecodeError as err:
        hint = (f"it starts with a {declared.replace('-sig', '').upper()} byte-order mark: leave --encoding out"
                if declared and encoding else "pass the note's encoding, e.g. --encoding latin-1 (or cp1252)")
        raise ValueError(
            f"{where}: not valid {chosen} text: byte 0x{data[err.start]:02x} at byte offset {err.start}; "
            f"{hint}, or convert it to UTF-8"
        ) from None


@cli_main("ccl.predict")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccl.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by python -m ccl.run")
    parser.add_argument("note", nargs="?", type=Path, help="a text file (default: read stdin)")
    parser.add_argument("--max-new-tokens", type=_positive, default=None,
                        help="answer length bound in tokens (>= 1; default: the run's bound)")
    parser.add_argument("--encoding", default=None,
                        help="the note's text encoding (default: the one its byte-order mark declares, "
                             "UTF-8/16/32, else utf-8; e.g. latin-1, cp1252)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--long-notes", choices=("truncate", "window"), default=None,
                        help="a note over the model's context: cut its end (truncate, the default) "
                             "or code it in overlapping windows (window)")
    args = parser.parse_args(argv)

    console = Console()
    cfg = _load_run_config(args.run_dir)
    text = read_note(args.note, args.encoding)
    if not text.strip():
        where = f"{args.note}: the note file is empty" if args.note is not None else "stdin gave an empty note"
        fix = "give a file with the note's text" if args.note is not None else "give a text file or pipe the note"
        raise ValueError(f"{where} (nothing but whitespace); {fix}")
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
