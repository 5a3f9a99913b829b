"""The gold span tier: :func:`ccl.data.pairs.gold_pairs` for the run's codes, cached.

``spans.gold`` (:class:`ccl.config.GoldSpansConfig`): ``sources`` (see
:mod:`ccl.data.pairs`), ``restrict`` (``docs``: the codes of every document split, plus
``neighbours`` nearest codes each; ``all``: every billable code) and
``max_pairs_per_code``. The tier is cached under ``cache_dir/gold/<hash>``
(:mod:`ccl.spans.tier_cache`: ``pairs.jsonl`` + ``report.json``); the hash, which the
data manifest reports as the tier's ``content_hash``, covers the Tabular List, the index
files (or entries), the sources, the code subset, the maximum and :data:`GOLD_VERSION`.
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

from omegaconf import OmegaConf

from ccl.config import GoldSpansConfig
from ccl.data.pairs import canonical_codes, expand_sources, gold_pairs
from ccl.icd.index import IndexEntry, IndexParse, validate_entries
from ccl.icd.nearest import nearest_codes
from ccl.icd.tabular import TabularList
from ccl.records import SpanPair
from ccl.spans.tier_cache import PAIRS, open_entry, save_tier
from ccl.spans.tiers import TierContext, TierResult
from ccl.utils.gc_pause import gc_paused

# Bump when pair building changes, so cached tiers are rebuilt.
GOLD_VERSION = "2"


@dataclass
class GoldTier:
    """The gold pairs, where they are stored, and what they cover."""

    pairs: list[SpanPair]
    pairs_path: Path  # the cache entry's pairs.jsonl
    report: dict[str, Any]
    content_hash: str
    from_cache: bool = field(default=False, compare=False)


def build(ctx: TierContext) -> TierResult:
    """The registered gold tier (``spans.gold._target_``): pairs for the codes of every
    document split (``restrict: docs``, plus ``neighbours`` nearest codes of each) or for
    every billable code (``restrict: all``); the report carries the cache hash as
    ``content_hash``. Raises ``ValueError`` for an unknown gold source."""
    g = OmegaConf.merge(OmegaConf.structured(GoldSpansConfig), ctx.cfg.spans.gold)
    codes = None
    if g.restrict != "all":
        codes = {c for split in ctx.docs.values() for d in split for c in d.codes}
        for c in sorted(codes) if g.neighbours else ():
            codes.update(n for n, _ in nearest_codes(ctx.tab, c, k=g.neighbours))
    tier = build_gold_tier(ctx.tab, list(ctx.entries), list(g.sources), codes, ctx.cache_dir,
                           max_pairs_per_code=g.max_pairs_per_code)
    return TierResult(tier.pairs, {**tier.report, "content_hash": tier.content_hash})


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


def build_gold_tier(
    tab: TabularList,
    index_parse_or_entries: IndexParse | Sequence[IndexParse] | Sequence[IndexEntry] | None,
    sources: Sequence[str] = ("index", "description", "inclusion", "short"),
    codes: set[str] | None = None,
    cache_dir: str | Path = ".cache/ccl",
    max_pairs_per_code: int | None = None,
    seventh: str | None = "A",
) -> GoldTier:
    """Build the gold tier, or load it from ``cache_dir/gold/<hash>`` when built before
    (``pairs.jsonl`` + ``report.json``, :mod:`ccl.spans.tier_cache`).

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
    wanted = canonical_codes(codes)
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
    folder, cached = open_entry(cache_dir, "gold", content_hash)  # an old Arrow entry: rebuilt
    if cached is not None:
        return GoldTier(cached.pairs, folder / PAIRS, cached.report, content_hash, from_cache=True)

    with gc_paused():
        pairs, report = _build(tab, parses, entries, _Request(chosen, wanted, max_pairs_per_code, seventh))
    report["seconds"] = round(time.perf_counter() - start, 2)
    save_tier(folder, pairs, report)
    return GoldTier(pairs, folder / PAIRS, report, content_hash)


@dataclass(frozen=True)
class _Request:
    """What a gold tier is built from besides the books: sources, code subset, cap, 7th character."""

    sources: tuple[str, ...]
    wanted: set[str] | None
    max_pairs_per_code: int | None
    seventh: str | None


def _build(
    tab: TabularList, parses: list[IndexParse], entries: list[IndexEntry], req: _Request
) -> tuple[list[SpanPair], dict[str, Any]]:
    validation = None
    if parses:
        entries = []
        validation = {}
        for p in parses:
            kept, validation[p.source] = validate_entries(p, tab, seventh=req.seventh)
            entries.extend(kept)
    pairs = gold_pairs(tab, entries, req.sources, req.wanted, req.max_pairs_per_code)
    report = _report(tab, pairs, entries, req, validation)
    if parses:
        report["seventh_character"] = req.seventh  # appended where the Tabular List requires one
    return pairs, report


def _codes_per_source(pairs: Sequence[SpanPair]) -> dict[str, int]:
    codes: dict[str, set[str]] = {}
    for p in pairs:
        codes.setdefault(p.source, set()).add(p.code)
    return {source: len(c) for source, c in sorted(codes.items())}


def _report(
    tab: TabularList, pairs: list[SpanPair], entries: Sequence[IndexEntry], req: _Request,
    validation: dict[str, Any] | None,
) -> dict[str, Any]:
    sources, wanted, max_pairs_per_code = req.sources, req.wanted, req.max_pairs_per_code
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
