"""Score a silver tier mined from the demo corpus against the demo world's own evidence.

    python benchmarks/silver_yield_demo.py CACHE_DIR/silver/<key> [overrides...] > out.json

The demo world writes each code of a note with one of its known surface forms (its phrase,
a case variant, or its clinician shorthand), so a mined pair can be checked: ``exact`` when
its evidence is one of the code's forms (``phrase_key`` equal), ``overlapping`` when one
contains the other as whole words (e.g. "ulcer of sacral region" inside "pressure ulcer of
sacral region"). Every pair's code is one of the note's gold codes by construction (the
extraction grammar's keys are the note's codes), so that share is 1.0 whenever the
grammar is on. Overrides are those of the mining command (``docs.*``) so the same world is
rebuilt. Prints one JSON object.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ccl.config import compose_config
from ccl.data.demo import ABBREVIATIONS, DEFAULT_CODE_POOL, build_demo_world
from ccl.data.pairs import gold_pairs
from ccl.icd.tabular import load_tabular
from ccl.records import phrase_key, read_span_pairs


def _words(key: str) -> str:
    return " " + " ".join(re.findall(r"\w+", key)) + " "


def main(argv: list[str]) -> dict:
    entry, overrides = Path(argv[0]), argv[1:]
    cfg = compose_config(["docs=demo", "icd.download=false", *overrides])
    tab = load_tabular(cfg.icd.tabular_xml, Path(cfg.paths.cache_dir))
    pool = set(cfg.docs.code_pool or DEFAULT_CODE_POOL)
    bank: dict[str, list[str]] = {}
    for pair in gold_pairs(tab, [], codes=pool):
        bank.setdefault(pair.code, []).append(pair.evidence)
    world = build_demo_world(cfg.docs, tab, bank)
    forms = {c: {phrase_key(p) for p in ps} for c, ps in world.phrases.items()}
    for code in world.shorthand:
        forms.setdefault(code, set()).add(phrase_key(ABBREVIATIONS[code]))
    pairs = read_span_pairs(entry / "pairs.jsonl")
    report = json.loads((entry / "report.json").read_text())
    rows = []
    for p in pairs:
        key = phrase_key(p.evidence)
        exact = key in forms.get(p.code, set())
        overlap = any(_words(key) in _words(f) or _words(f) in _words(key) for f in forms.get(p.code, ()))
        rows.append({"code": p.code, "evidence": p.evidence, "exact": exact, "overlapping": overlap})
    n = len(rows)
    return {
        "pairs": n,
        "exact": sum(r["exact"] for r in rows),
        "overlapping": sum(r["overlapping"] for r in rows),
        "share_exact": round(sum(r["exact"] for r in rows) / n, 3) if n else None,
        "share_overlapping": round(sum(r["overlapping"] for r in rows) / n, 3) if n else None,
        "share_code_in_note": 1.0 if report.get("structured") else None,
        "yield": report.get("yield"),
        "llm_calls": report.get("llm_calls"),
        "documents": report.get("documents"),
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
