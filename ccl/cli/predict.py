"""``python -m ccl.cli.predict RUN_DIR [note.txt]``: code one note with a trained run.

Reads the note from the file (or stdin), prompts the run's model exactly as the predict
stage does, and prints, first, the model and its reach (backbone, base model, the data it was
trained on and the size of its code vocabulary: :func:`ccl.review.explain.model_reach`),
then each code with its description, score (log-probability and probability), the evidence
phrases tied to it (by the model's span prompt) with their character offsets in the note,
and its guideline flags in full, naming the missing code (:mod:`ccl.eval.guidelines`);
evidence not found in the note is marked. Codes not billable in the run's Tabular List are
flagged. ``--json``: one JSON object (:func:`ccl.review.explain.explain` plus ``model`` and
``warnings``); ``--html``: the review page (:mod:`ccl.review.page`); ``--evidence FILE``:
human-evidence mode from a coder's phrases; ``--pack``/``--cache-dir``: a moved run folder's
base model (:mod:`ccl.utils.base_model`). A run with ``infer.restrict_codes`` decodes with
the same allowed codes (``restrict_codes.json`` of the run folder).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from ccl.cli.errors import cli_main
from ccl.icd.tabular import load_tabular
from ccl.records import Document, EvidenceSpan
from ccl.review.explain import explain, model_reach
from ccl.review.page import write_page
from ccl.utils.base_model import pack_base
from ccl.utils.run_folder import RunFolder, trained_model_meta

RUN_KEYS = ("train", "backbone", "infer", "icd", "paths")  # what ccl.cli.predict reads of a run's config.yaml


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


def read_evidence_file(path: Path, note: str) -> list[str]:
    """The evidence phrases a coder corrected, for human-evidence mode: a text file with one
    phrase a line (blank lines and ``#`` comments skipped), or JSON: a list of phrases or of
    ``{"text"}``/``{"start", "end"}`` objects, or ``ccl.cli.predict --json`` output (its
    ``evidence``). Offsets are read from the note. Raises ``ValueError`` naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such evidence file; give one phrase a line, or JSON")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if text.lstrip()[:1] in ("[", "{") else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); give one phrase a line, "
                         "or a JSON list of phrases") from None
    if data is None:
        phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    else:
        items = data.get("evidence", []) if isinstance(data, dict) else data
        phrases = []
        for item in items:
            if isinstance(item, str):
                phrases.append(item)
            elif isinstance(item, dict) and isinstance(item.get("start"), int) and isinstance(item.get("end"), int):
                if not 0 <= item["start"] < item["end"] <= len(note):
                    raise ValueError(f"{path}: span {item['start']}-{item['end']} lies outside the note "
                                     f"({len(note)} characters); fix its offsets")
                phrases.append(note[item["start"]:item["end"]])
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                phrases.append(item["text"])
            else:
                raise ValueError(f"{path}: evidence item {item!r} is not a phrase, {{text}} or {{start, end}}")
    phrases = [" ".join(p.split()) for p in phrases if p.strip()]
    if not phrases:
        raise ValueError(f"{path}: holds no evidence phrase; give one phrase a line")
    return phrases


def _describe_model(run_dir: Path, cfg: Any, base: str | None, allowed: list[str] | None) -> dict[str, Any]:
    """The model ``ccl.cli.predict`` codes with and its reach (see :func:`ccl.review.explain.model_reach`)."""
    meta = trained_model_meta(run_dir) if str(cfg.train.mode) != "none" else {}
    reach = model_reach(run_dir)
    vocab = (meta.get("codes") or None) if meta.get("code_tokens") else None
    codes = allowed or vocab or reach["codes"]
    return {"run": str(run_dir), "backbone": str(cfg.backbone.name), "mode": str(cfg.train.mode),
            "base_model": base, "steps": meta.get("steps"), "trained_on": reach,
            "code_vocabulary": len(codes) if codes is not None else None,
            "code_vocabulary_from": ("restrict_codes.json" if allowed else "code tokens" if vocab
                                     else "training codes" if codes is not None else None)}


def _print_model(console: Console, model: dict[str, Any]) -> None:
    reach = model["trained_on"]
    spans = ", ".join(f"{n} {tier}" for tier, n in reach["span_pairs"].items() if n is not None)
    trained = (f"{reach['train_documents']} {reach['source'] or ''} training documents".replace("  ", " ")
               if reach["train_documents"] is not None else "unknown data")
    base = f" on {model['base_model']}" if model["base_model"] else ""
    console.print(f"model: {model['run']} ({model['backbone']}, {model['mode']}{base}"
                  f"{', ' + str(model['steps']) + ' steps' if model['steps'] else ''})",
                  markup=False, highlight=False, soft_wrap=True)
    vocab = model["code_vocabulary"]
    reach_line = (f"reach: trained on {trained}{' + span pairs: ' + spans if spans else ''}; "
                  + (f"it knows {vocab} codes ({model['code_vocabulary_from']}): codes outside them are "
                     "not coded, read the note for those" if vocab is not None else "its code vocabulary is unknown"))
    console.print(reach_line, markup=False, highlight=False, soft_wrap=True)


def _print_review(console: Console, record: dict[str, Any]) -> None:
    console.rule("[bold]Evidence and ICD-10-CM codes")
    evidence = record["evidence"]
    for c in record["codes"]:
        score = "" if c["logprob"] is None else f"  p={c['probability']:.2f} (log p {c['logprob']:.2f})"
        desc = c["description"] if c["billable"] else "NOT a billable code in this Tabular List"
        gold = "" if c["gold"] is None else ("  [gold]" if c["gold"] else "  [extra: not in gold]")
        console.print(f"{c['code']} - {desc}{score}{gold}", markup=False, highlight=False, soft_wrap=True)
        for i in c["evidence"]:
            e = evidence[i]
            console.print(f"    evidence: {_where(e)}", markup=False, highlight=False, soft_wrap=True)
        if record["linked"] and not c["evidence"]:
            console.print("    evidence: none of the listed evidence is coded to it", markup=False,
                          highlight=False, soft_wrap=True)
        for f in c["flags"]:
            console.print(f"    FLAG {f['label']}: {f['text']}", markup=False, highlight=False, soft_wrap=True)
    if not record["codes"]:
        console.print("(no codes)")
    rest = [e for e in evidence if not record["linked"] or not e["code_in_answer"]]
    if rest:
        console.rule("[bold]Evidence " + ("not tied to a code of the answer" if record["linked"]
                                          else "(not tied to codes: --no-link, or the model coded none of it)"))
        for e in rest:
            tie = f"  (coded alone: {e['code']}, not in the answer)" if e["code"] else ""
            console.print(f"  • {_where(e)}{tie}", markup=False, highlight=False, soft_wrap=True)
    for key in ("missed", "extra"):
        if record.get(key):
            console.print(f"{key} against gold: {', '.join(record[key])}", markup=False, highlight=False)


def _where(e: dict[str, Any]) -> str:
    times = f" (x{e['times']})" if e["times"] > 1 else ""
    if not e["found"]:
        return f"\"{e['text']}\"{times}  NOT FOUND in the note"
    return f"\"{e['text']}\"{times}  [chars {e['start']}-{e['end']}]"


@cli_main("ccl.cli.predict")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccl.cli.predict", description=__doc__.splitlines()[0])
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
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (model, reach, codes with evidence offsets, flags)")
    parser.add_argument("--html", type=Path, default=None, help="also write a self-contained review page here")
    parser.add_argument("--evidence", type=Path, default=None,
                        help="human-evidence mode: code the note from these evidence phrases (one a line, "
                             "or JSON: phrases, {start,end} spans, or --json output)")
    parser.add_argument("--gold", default=None, help="gold codes, comma-separated: marks missed and extra codes")
    parser.add_argument("--no-link", action="store_true",
                        help="do not ask the model which code each evidence phrase supports")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="the backbone cache holding the run's base model (default: CCL_CACHE, the "
                             "cache beside a moved run, the run's paths.cache_dir)")
    parser.add_argument("--pack", action="store_true",
                        help="copy the run's base model into RUN/base_model (the folder then moves alone) and exit")
    args = parser.parse_args(argv)

    console = Console(stderr=args.json)
    cfg = _load_run_config(args.run_dir)
    cache = args.cache_dir or (Path(os.environ["CCL_CACHE"]) if os.environ.get("CCL_CACHE") else None)
    if cache is not None:
        cfg.paths.cache_dir = str(cache)
    if args.pack:
        packed = pack_base(trained_model_meta(args.run_dir), args.run_dir,
                           configured_cache=Path(cfg.paths.cache_dir))
        console.print(f"packed the base model into {packed}" if packed else "nothing to pack: the run's model "
                      "needs no separate base (full fine-tune or hub id)", markup=False)
        return 0
    text = read_note(args.note, args.encoding)
    if not text.strip():
        where = f"{args.note}: the note file is empty" if args.note is not None else "stdin gave an empty note"
        fix = "give a file with the note's text" if args.note is not None else "give a text file or pipe the note"
        raise ValueError(f"{where} (nothing but whitespace); {fix}")
    phrases = read_evidence_file(args.evidence, text) if args.evidence else None
    if args.max_new_tokens:
        cfg.infer.max_new_tokens = args.max_new_tokens
    cfg.infer.human_evidence = phrases is not None
    if args.long_notes:
        cfg.infer.long_notes = args.long_notes
    gold = [c.strip().upper() for c in args.gold.split(",") if c.strip()] if args.gold else None

    # local import: torch + transformers (~3 s), not for --help; tests replace the stage's functions
    from ccl.stages import predict as stage

    tab = load_tabular(cfg.icd.tabular_xml, Path(cfg.paths.cache_dir))
    model, tokenizer = stage.load_trained(cfg, None, args.run_dir)
    model = stage.place_model(model, stage.inference_device(cfg.train))
    base = getattr(getattr(getattr(model, "base_model", model), "config", None), "_name_or_path", None)
    allowed = None
    if cfg.infer.get("restrict_codes") and RunFolder(args.run_dir).restrict_codes.is_file():
        allowed = json.loads(RunFolder(args.run_dir).restrict_codes.read_text(encoding="utf-8"))
    about = _describe_model(args.run_dir, cfg, str(base) if base else None, allowed)
    if not args.json:
        _print_model(console, about)
    spans = [EvidenceSpan(0, 0, p, "") for p in phrases] if phrases else []
    bound = stage.answer_bound(cfg, args.run_dir)
    # one engine for the note and for tying its evidence to codes (None: predict_documents builds one)
    engine = (stage.engines.make_engine(cfg.infer, model, tokenizer)
              if model is not None and tokenizer is not None else None)
    # --json: stdout is the JSON object alone; progress lines go to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        [row] = stage.predict_documents(cfg, model, tokenizer, [Document(id="note", text=text, codes=[], spans=spans)],
                                  allowed_codes=allowed, max_new_tokens=bound, engine=engine)
        if phrases is not None:
            row["evidence"] = phrases
        links = {}
        if not args.no_link and engine is not None and row["evidence"] and not cfg.infer.get("restrict_codes"):
            links = stage.recode_phrases(engine, tokenizer, row["evidence"], bool(cfg.backbone.use_chat_template))
    record = explain(text, row, tab, links, gold)
    record["model"] = about
    record["mode"] = "human_evidence" if phrases is not None else "model_evidence"
    record["warnings"] = []
    if row.get("note_tokens_cut"):
        record["warnings"].append(
            f"the note was cut to fit backbone.max_length={cfg.backbone.max_length} (with room for {bound} "
            f"answer tokens): {row['note_tokens_cut']:,} tokens at its end were not read. Code it in "
            "overlapping windows with --long-notes window.")
    elif row.get("windows", 1) > 1:
        record["warnings"].append(f"the note was coded in {row['windows']} overlapping windows")
    if args.html:
        write_page(args.html, [dict(record, id=str(args.note or "stdin"))], title="CCL review")
    if args.json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False, indent=1) + "\n")
        return 0
    for line in record["warnings"]:
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if phrases is not None:
        console.print(f"human-evidence mode: coded from the {len(phrases)} phrases of {args.evidence}",
                      markup=False, highlight=False, soft_wrap=True)
    _print_review(console, record)
    if args.html:
        console.print(f"review page: {args.html}", markup=False, highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
