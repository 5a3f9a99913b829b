"""The gold span tier: ``evidence -> code`` pairs from the ICD-10-CM books themselves.

Sources (names accepted in ``sources``):

* ``index``: every Alphabetic Index entry phrase (main index, External Cause
  index, Drug and Neoplasm tables); ``index:main``, ``index:eindex``,
  ``index:drug``, ``index:neoplasm`` select one file;
* ``description``: the Tabular List description of each billable code;
* ``inclusion``: the billable code's own inclusion terms.

Only billable codes of the Tabular List year get pairs. Pairs are deduplicated
on (evidence lower-cased and whitespace-collapsed, code), keeping the source
that comes first in :data:`SOURCE_PRIORITY`. Order is deterministic: by code,
then source priority, then shorter evidence first (so ``max_pairs_per_code``
keeps the description and the most generic phrases).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccl.data.records import SpanPair
from ccl.icd.codes import canonical_code
from ccl.icd.index import IndexEntry, IndexParse, gc_paused, validate_entries
from ccl.icd.tabular import TabularList
from ccl.icd.terms import natural_phrase
from ccl.utils.atomic import atomic_dir

# Bump when pair building changes, so cached tiers are rebuilt.
GOLD_VERSION = "2"
TIER = "gold"
SOURCE_PRIORITY = (
    "tabular:description",
    "tabular:inclusion",
    "tabular:short",  # description / inclusion term without coding qualifiers ("gout")
    "index:main",
    "index:eindex",
    "index:drug",
    "index:neoplasm",
)
_RANK = {name: i for i, name in enumerate(SOURCE_PRIORITY)}
_INDEX_SOURCE = {
    "index": "index:main",
    "eindex": "index:eindex",
    "drug": "index:drug",
    "neoplasm": "index:neoplasm",
}
_ALIASES = {
    "index": tuple(_INDEX_SOURCE.values()),
    "description": ("tabular:description",),
    "inclusion": ("tabular:inclusion",),
    "short": ("tabular:short",),
    **{name: (name,) for name in SOURCE_PRIORITY},
}


@dataclass
class GoldTier:
    """The gold pairs, where they are stored, and what they cover."""

    pairs: list[SpanPair]
    dataset_path: Path
    report: dict[str, Any]
    content_hash: str
    from_cache: bool = field(default=False, compare=False)


def expand_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """Pair sources named by ``sources`` (aliases expanded), in priority order."""
    if isinstance(sources, str):
        sources = [sources]
    chosen: set[str] = set()
    for name in sources:
        if name not in _ALIASES:
            raise ValueError(f"unknown gold source {name!r}; choose from {sorted(_ALIASES)}")
        chosen.update(_ALIASES[name])
    return tuple(s for s in SOURCE_PRIORITY if s in chosen)


def _canonical_codes(codes: set[str] | Sequence[str] | None) -> set[str] | None:
    return None if codes is None else {canonical_code(c) for c in codes}


def gold_pairs(
    tab: TabularList,
    entries: Sequence[IndexEntry],
    sources: Sequence[str] = ("index", "description", "inclusion", "short"),
    codes: set[str] | None = None,
    max_pairs_per_code: int | None = None,
) -> list[SpanPair]:
    """Gold pairs from validated index ``entries`` and the Tabular List (see module doc)."""
    chosen = expand_sources(sources)
    wanted = _canonical_codes(codes)
    billable = (
        tab.billable_codes() if wanted is None else sorted(c for c in wanted if tab.is_billable(c))
    )
    billable_set = set(billable)
    best: dict[tuple[str, str], tuple[int, str]] = {}

    def offer(evidence: str, code: str, rank: int) -> None:
        evidence = " ".join(evidence.split())
        key = (evidence.lower(), code)  # normalised: whitespace-collapsed, lower case
        if evidence and (key not in best or rank < best[key][0]):
            best[key] = (rank, evidence)

    if "tabular:description" in chosen:
        rank = _RANK["tabular:description"]
        for code in billable:
            offer(tab.description(code), code, rank)
    if "tabular:inclusion" in chosen:
        rank = _RANK["tabular:inclusion"]
        for code in billable:
            for term in tab.inclusion_terms(code):
                offer(term, code, rank)
    if "tabular:short" in chosen:
        rank = _RANK["tabular:short"]
        for code in billable:
            for term in (tab.description(code), *tab.inclusion_terms(code)):
                offer(natural_phrase(term), code, rank)
    ranks = {kind: _RANK[name] for kind, name in _INDEX_SOURCE.items() if name in chosen}
    for e in entries:
        if e.source in ranks and e.code in billable_set:
            offer(e.phrase, e.code, ranks[e.source])

    rows = sorted(
        ((code, rank, len(text), norm, text) for (norm, code), (rank, text) in best.items()),
    )
    pairs: list[SpanPair] = []
    per_code: Counter[str] = Counter()
    for code, rank, _, _, text in rows:
        if max_pairs_per_code is not None and per_code[code] >= max_pairs_per_code:
            continue
        per_code[code] += 1
        pairs.append(SpanPair(text, code, TIER, SOURCE_PRIORITY[rank]))
    return pairs


# ---------------------------------------------------------------- the cached tier


def _entries_hash(entries: Sequence[IndexEntry]) -> str:
    digest = hashlib.sha256()
    for e in entries:
        line = "\x1f".join((e.source, e.role, e.column or "", e.code, e.phrase))
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def _as_index(
    index: IndexParse | Sequence[IndexParse] | Sequence[IndexEntry] | None,
) -> tuple[list[IndexParse], list[IndexEntry]]:
    if index is None:
        return [], []
    if isinstance(index, IndexParse):
        return [index], []
    items = list(index)
    if all(isinstance(i, IndexParse) for i in items):
        return items, []  # type: ignore[return-value]
    if all(isinstance(i, IndexEntry) for i in items):
        return [], items  # type: ignore[return-value]
    raise TypeError("index must be an IndexParse, a list of IndexParse or a list of IndexEntry")


def _dataset_rows(pairs: Sequence[SpanPair]) -> dict[str, list[str]]:
    return {
        "evidence": [p.evidence for p in pairs],
        "code": [p.code for p in pairs],
        "tier": [p.tier for p in pairs],
        "source": [p.source for p in pairs],
    }


def _save(pairs: list[SpanPair], report: dict[str, Any], folder: Path) -> None:
    import pyarrow as pa
    from datasets import Dataset
    from datasets.utils import logging as ds_logging

    schema = pa.schema([(name, pa.string()) for name in ("evidence", "code", "tier", "source")])
    table = pa.Table.from_pydict(_dataset_rows(pairs), schema=schema)
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    with atomic_dir(folder) as tmp:  # another process may have stored the same tier first
        try:
            Dataset(table).save_to_disk(str(tmp / "dataset"))
        finally:
            if bars:
                ds_logging.enable_progress_bar()
        (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))


def _load(folder: Path) -> tuple[list[SpanPair], dict[str, Any]] | None:
    from datasets import load_from_disk

    report_path = folder / "report.json"
    if not report_path.is_file():
        return None
    try:
        data = load_from_disk(str(folder / "dataset")).to_dict()
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return None  # a damaged cache entry: rebuild
    pairs = [
        SpanPair(*row)
        for row in zip(data["evidence"], data["code"], data["tier"], data["source"], strict=True)
    ]
    return pairs, report


def build_gold_tier(
    tab: TabularList,
    index_parse_or_entries: IndexParse | Sequence[IndexParse] | Sequence[IndexEntry] | None,
    sources: Sequence[str] = ("index", "description", "inclusion", "short"),
    codes: set[str] | None = None,
    cache_dir: str | Path = ".cache/ccl",
    max_pairs_per_code: int | None = None,
    seventh: str | None = "A",
) -> GoldTier:
    """Build the gold tier, or load it from ``cache_dir/gold/<hash>`` when built before.

    ``index_parse_or_entries`` is raw :class:`IndexParse` objects (validated here
    with ``seventh``: ``"A"``, initial encounter, completes codes that need a
    7th character; see :func:`ccl.icd.index.validate_entries`), entries already
    validated, or ``None``/empty when no index is available (the fallback:
    Tabular List terms only). The hash covers the Tabular List, the index files
    (or entries), the sources, the code subset, the maximum and :data:`GOLD_VERSION`.
    """
    start = time.perf_counter()
    parses, entries = _as_index(index_parse_or_entries)
    chosen = expand_sources(sources)
    wanted = _canonical_codes(codes)
    if parses:
        index_key: Any = {
            "files": sorted((p.source, p.file_hash) for p in parses),
            "seventh": seventh,
        }
    else:
        index_key = {"entries": _entries_hash(entries)}
    content_hash = hashlib.sha256(
        json.dumps(
            {
                "version": GOLD_VERSION,
                "tabular": tab.content_hash(),
                "index": index_key,
                "sources": chosen,
                "codes": sorted(wanted) if wanted is not None else None,
                "max_pairs_per_code": max_pairs_per_code,
            },
            sort_keys=True,
        ).encode("utf-8")
    ).hexdigest()[:16]
    folder = Path(cache_dir) / "gold" / content_hash
    loaded = _load(folder)
    if loaded is not None:
        pairs, report = loaded
        return GoldTier(pairs, folder / "dataset", report, content_hash, from_cache=True)

    with gc_paused():
        pairs, report = _build(tab, parses, entries, chosen, wanted, max_pairs_per_code, seventh)
    report["seconds"] = round(time.perf_counter() - start, 2)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _save(pairs, report, folder)
    return GoldTier(pairs, folder / "dataset", report, content_hash)


def _build(
    tab: TabularList,
    parses: list[IndexParse],
    entries: list[IndexEntry],
    chosen: tuple[str, ...],
    wanted: set[str] | None,
    max_pairs_per_code: int | None,
    seventh: str | None,
) -> tuple[list[SpanPair], dict[str, Any]]:
    validation = None
    if parses:
        entries = []
        validation = {}
        for p in parses:
            kept, validation[p.source] = validate_entries(p, tab, seventh=seventh)
            entries.extend(kept)
    pairs = gold_pairs(tab, entries, chosen, wanted, max_pairs_per_code)
    report = _report(tab, pairs, entries, chosen, wanted, max_pairs_per_code, validation)
    if parses:
        report["seventh_character"] = seventh  # appended where the Tabular List requires one
    return pairs, report


def _codes_per_source(pairs: Sequence[SpanPair]) -> dict[str, int]:
    codes: dict[str, set[str]] = {}
    for p in pairs:
        codes.setdefault(p.source, set()).add(p.code)
    return {source: len(c) for source, c in sorted(codes.items())}


def _report(
    tab: TabularList,
    pairs: list[SpanPair],
    entries: Sequence[IndexEntry],
    sources: tuple[str, ...],
    wanted: set[str] | None,
    max_pairs_per_code: int | None,
    validation: dict[str, Any] | None,
) -> dict[str, Any]:
    covered = {p.code for p in pairs}
    billable_total = len(tab.billable_codes())
    index_sources = [s for s in sources if s.startswith("index:")]
    report: dict[str, Any] = {
        "gold_version": GOLD_VERSION,
        "tabular_year": tab.year,
        "sources": list(sources),
        "pairs": len(pairs),
        "pairs_per_source": dict(sorted(Counter(p.source for p in pairs).items())),
        "codes_per_source": _codes_per_source(pairs),
        "codes_covered": len(covered),
        "billable_codes_covered": sum(1 for c in covered if tab.is_billable(c)),
        "billable_codes_total": billable_total,
        "billable_share": round(len(covered) / billable_total, 4) if billable_total else 0.0,
        "index_codes_covered": len({p.code for p in pairs if p.source.startswith("index:")}),
        "index_entries": len(entries),
        "index_fallback": bool(index_sources) and not entries,
        "max_pairs_per_code": max_pairs_per_code,
    }
    if wanted is not None:
        usable = {c for c in wanted if tab.is_billable(c)}
        report["subset"] = {
            "codes": len(wanted),
            "billable": len(usable),
            "covered": len(covered & usable),
            "not_billable_examples": sorted(wanted - usable)[:5],
        }
    if validation is not None:
        report["index_validation"] = validation
    return report
