"""What a document source holds, as a table (``python -m ccl.cli.stats docs=NAME [overrides]``).

:func:`collect` loads the documents of a run config as a run would (any override works:
``docs.path=...``, ``docs.notes_path=...``), and :func:`render` prints per
split: documents, documents with evidence, evidence spans, distinct codes,
codes per document, and mean note length in words (whitespace-separated) and
in tokens. Tokens are counted by :data:`TOKEN_PATTERN`, a model-free
tokenizer: each run of letters/digits is a token and so is each other
non-space character (``"HbA1c 7.2%"`` -> ``HbA1c 7 . 2 %``, 5 tokens), so the
numbers compare across backbones. For real sources it also prints every label
that was remapped to a billable code (label, mapped code, rule, occurrences;
:func:`render_remaps`), with the Alphabetic Index of ``icd.*_xml`` when there is
one, as a run maps them. MDACE without ``docs.notes_path`` gets what
its annotation files alone give (no text: no lengths). Every source, the demo world
included, loads through :func:`ccl.data.sources.load_source`, as in a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.data.sources import load_source
from ccl.data.sources.common import IndexHints
from ccl.data.sources.mdace import annotation_summary
from ccl.icd.index import load_valid_entries
from ccl.icd.tabular import load_tabular
from ccl.records import Document

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
SPLITS = ("train", "val", "test")


def count_tokens(text: str) -> int:
    return len(TOKEN_PATTERN.findall(text))


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def describe(docs: Sequence[Document]) -> dict[str, float]:
    """Counts and means for one group of documents."""
    return {
        "documents": len(docs),
        "with_evidence": sum(d.has_evidence for d in docs),
        "evidence_spans": sum(len(d.spans) for d in docs),
        "distinct_codes": len({c for d in docs for c in d.codes}),
        "codes_per_doc": _mean([len(d.codes) for d in docs]),
        "words_per_doc": _mean([len(d.text.split()) for d in docs]),
        "tokens_per_doc": _mean([count_tokens(d.text) for d in docs]),
    }


def summarize(
    docs: dict[str, list[Document]], corpus: Sequence[Document]
) -> dict[str, dict[str, float]]:
    """Rows for each split, all splits together, and the corpus (when not empty)."""
    splits = [*SPLITS, *(s for s in docs if s not in SPLITS)]  # e.g. CodiEsp's official "dev"
    rows = {split: describe(docs.get(split, [])) for split in splits}
    rows["all"] = describe([d for split in splits for d in docs.get(split, [])])
    if corpus:
        rows["corpus"] = describe(corpus)
    return rows


def _mdace_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for split, s in summary["splits"].items():
        rows[split] = {
            "documents": s["documents"],
            "notes": s["notes"],
            "evidence_spans": s["evidence_spans"],
            "distinct_codes": s["distinct_codes"],
            "codes_per_doc": round(s["code_assignments"] / s["documents"], 1)
            if s["documents"]
            else 0.0,
        }
    rows["all"] = {
        "documents": sum(r["documents"] for r in rows.values()),
        "notes": sum(r["notes"] for r in rows.values()),
        "evidence_spans": sum(r["evidence_spans"] for r in rows.values()),
        "distinct_codes": summary["distinct_codes"],
        "codes_per_doc": round(
            sum(s["code_assignments"] for s in summary["splits"].values())
            / max(1, sum(s["documents"] for s in summary["splits"].values())),
            1,
        ),
    }
    return rows


def collect(cfg: Any) -> dict[str, Any]:
    """Load ``cfg.docs`` and return ``{"rows": {group: stats}, "source": ..., "notes": [...]}``."""
    cache_dir = Path(cfg.paths.cache_dir)
    tab = load_tabular(cfg.icd.tabular_xml, cache_dir)
    source = str(cfg.docs.source)
    # As in a run: the Alphabetic Index chooses billable codes for labels, and the demo
    # source draws its phrases from the same gold pairs (so these are the run's documents).
    entries, _ = load_valid_entries(cfg.icd, tab, cache_dir)
    if source == "mdace" and not cfg.docs.notes_path:
        summary = annotation_summary(cfg.docs, tab, cache_dir, IndexHints(entries) if entries else None)
        note = "annotations only (docs.notes_path not set): no text, so no lengths"
        return {"source": source, "rows": _mdace_rows(summary), "details": summary, "note": note}
    data = load_source(cfg.docs, tab, cache_dir, entries or None)
    return {"source": source, "rows": summarize(data.docs, data.corpus), "details": data.stats}


COLUMNS = {
    "documents": "documents",
    "notes": "notes",
    "with_evidence": "with evidence",
    "evidence_spans": "evidence spans",
    "distinct_codes": "codes",
    "codes_per_doc": "codes/doc",
    "words_per_doc": "words/doc",
    "tokens_per_doc": "tokens/doc",
}


def render(result: dict[str, Any], console: Console) -> None:
    """Print the split table and one line on code mapping (and the mode, when there is one)."""
    rows = result["rows"]
    keys = [k for k in COLUMNS if any(k in r for r in rows.values())]
    table = Table(title=f"docs={result['source']}")
    table.add_column("split")
    for k in keys:
        table.add_column(COLUMNS[k], justify="right")
    for group, row in rows.items():
        table.add_row(group, *(str(row.get(k, "")) for k in keys))
    console.print(table)
    details = result.get("details") or {}
    codes = details.get("codes")
    if isinstance(codes, dict) and "valid" in codes:  # a CodeMapper report (demo stats differ)
        mapped = sum(codes.get("mapped", {}).values())
        dropped = codes.get("dropped", {})
        console.print(
            f"codes (Tabular List {codes.get('tabular_year')}): {codes.get('valid', 0)} valid, "
            f"{mapped} mapped to a billable code, {sum(dropped.values())} dropped {dropped or ''}"
        )
    if isinstance(codes, dict) and codes.get("remaps"):
        render_remaps(codes, console)
    for key in ("mode", "counts"):
        if details.get(key):
            console.print(f"{key}: {details[key]}")
    if result.get("note"):
        console.print(f"[yellow]{result['note']}[/]")


def render_remaps(codes: dict[str, Any], console: Console) -> None:
    """The remap table: every label that was not billable, its code, the rule and occurrences.

    ``codes`` is a :meth:`ccl.data.sources.common.CodeMapper.report`; rows by count, then label.
    """
    remaps = sorted(codes["remaps"], key=lambda r: (-r["count"], r["label"]))
    index = f", Alphabetic Index: {codes['index_terms']:,} terms" if codes.get("index_terms") else \
        ", no Alphabetic Index (set icd.index_xml)"
    table = Table(title=f"labels remapped to billable codes (Tabular List {codes.get('tabular_year')}{index})")
    for col, justify in (("label", "left"), ("label description", "left"), ("mapped code", "left"),
                         ("description", "left"), ("rule", "left"), ("count", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in remaps:
        table.add_row(r["label"], r["label_description"], str(r["code"]), r["description"], r["rule"],
                      str(r["count"]))
    console.print(table)
    by_rule: dict[str, int] = {}
    for r in remaps:
        by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + r["count"]
    console.print("remaps by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())))
