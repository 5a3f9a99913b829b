"""``python -m ccl.cli.review RUN_DIR --out DIR``: the review page of a run's predictions.

Reads ``predictions.jsonl`` and the notes of ``data/<split>.jsonl`` of a finished run and
writes ``DIR/review.html`` (and its data, ``DIR/review.json``; one self-contained page, every note: its text with each
evidence phrase highlighted at its offsets, codes with probabilities and guideline flags,
gold codes beside them with missed and extra codes marked). Evidence is tied to codes by
the run's model under the span prompt when its weights are there (``--link model``, the
default when ``model/`` exists), else by the words a phrase shares with a code's
description (``--link lexical``), or not at all (``--link none``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from ccl.cli.errors import cli_main
from ccl.icd.tabular import load_tabular
from ccl.review.explain import explain, lexical_links
from ccl.review.page import write_page
from ccl.utils.atomic import write_text_atomic


def _read_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}; give the folder of a finished ccl.run (its predict stage ran)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@cli_main("ccl.cli.review")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccl.cli.review", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder (predictions.jsonl, data/)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write review.html into")
    parser.add_argument("--split", default="test", help="the split predictions.jsonl holds (default test)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N notes")
    parser.add_argument("--ids", default=None, help="only these note ids, comma-separated")
    parser.add_argument("--link", choices=("model", "lexical", "none"), default=None,
                        help="how evidence is tied to codes (default: model when model/ exists, else lexical)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)

    run_dir = args.run_dir
    rows = _read_jsonl(run_dir / "predictions.jsonl", "predictions.jsonl")
    docs = {d["id"]: d for d in _read_jsonl(run_dir / "data" / f"{args.split}.jsonl", f"data/{args.split}.jsonl")}
    if args.ids:
        wanted = [i.strip() for i in args.ids.split(",") if i.strip()]
        unknown = [i for i in wanted if i not in docs]
        if unknown:
            raise ValueError(f"--ids: {', '.join(unknown)} not in {run_dir / 'data' / (args.split + '.jsonl')}")
        rows = [r for r in rows if r["id"] in wanted]
    rows = [r for r in rows if r["id"] in docs][: args.limit]
    cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    tab = load_tabular(cfg.icd.tabular_xml if cfg is not None else None,
                       Path(cfg.paths.cache_dir) if cfg is not None else Path(".cache/ccl"))
    link = args.link or ("model" if any((run_dir / "model").glob("*.safetensors")) and cfg is not None else "lexical")
    model_links: dict = {}
    if link == "model":
        # local import: torch + transformers (~3 s), only for links by the run's model
        from ccl.stages import predict as stage

        model, tokenizer = stage.load_trained(cfg, None, run_dir)
        model = stage.place_model(model, stage.inference_device(cfg.train))
        engine = stage.engines.make_engine(cfg.infer, model, tokenizer)
        model_links = stage.recode_phrases(engine, tokenizer, [p for r in rows for p in r.get("evidence", [])],
                                     bool(cfg.backbone.use_chat_template))
    records = []
    for row in rows:
        doc = docs[row["id"]]
        links = (model_links if link == "model" else
                 lexical_links(row.get("evidence", []), row["codes"], tab) if link == "lexical" else {})
        rec = explain(doc["text"], row, tab, links, row.get("gold_codes", doc.get("codes")))
        records.append(dict(rec, id=row["id"], link=link))
    how = {"model": "tied to codes by the run's model (span prompt)",
           "lexical": "tied to codes by words shared with the code's description (no model)",
           "none": "not tied to codes"}[link]
    page = write_page(args.out / "review.html", records, title=f"CCL review: {run_dir.name}",
                      subtitle=f"{len(records)} notes of {run_dir}; evidence {how}")
    write_text_atomic(args.out / "review.json", json.dumps(records, ensure_ascii=False, indent=1))
    print(f"review page: {page} ({len(records)} notes; the same as JSON: {args.out / 'review.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
