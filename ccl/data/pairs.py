"""Gold ``evidence -> code`` pairs read from the ICD-10-CM books themselves.

Sources (names accepted in ``sources``):

* ``index``: every Alphabetic Index entry phrase (main index, External Cause
  index, Drug and Neoplasm tables); ``index:main``, ``index:eindex``,
  ``index:drug``, ``index:neoplasm`` select one file;
* ``description``: the Tabular List description of each billable code;
* ``inclusion``: the billable code's own inclusion terms;
* ``short``: a description or inclusion term without its coding qualifiers
  (:func:`ccl.icd.terms.natural_phrase`: "gout" for "Gout, unspecified").

Only billable codes of the Tabular List year get pairs. Pairs are deduplicated
on (evidence lower-cased and whitespace-collapsed, code), keeping the source
that comes first in :data:`SOURCE_PRIORITY`. Order is deterministic: by code,
then source priority, then shorter evidence first (so ``max_pairs_per_code``
keeps the description and the most generic phrases).

On the bottom floor: it reads only the Tabular List and Index entries, so the
demo document source (:mod:`ccl.data.sources.demo`) and the gold span tier
(:mod:`ccl.spans.gold`, which caches these pairs) both use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ccl.icd.codes import canonical_code
from ccl.icd.index import IndexEntry
from ccl.icd.tabular import TabularList
from ccl.icd.terms import natural_phrase
from ccl.records import SpanPair

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


def canonical_codes(codes: set[str] | Sequence[str] | None) -> set[str] | None:
    """``codes`` in canonical form (``e1140`` -> ``E11.40``); ``None`` (every code) stays ``None``."""
    return None if codes is None else {canonical_code(c) for c in codes}


def gold_pairs(
    tab: TabularList,
    entries: Sequence[IndexEntry],
    sources: Sequence[str] = ("index", "description", "inclusion", "short"),
    codes: set[str] | None = None,
    max_pairs_per_code: int | None = None,
) -> list[SpanPair]:
    """Gold pairs from validated index ``entries`` and the Tabular List (see module doc).

    ``codes``: only these codes (any spelling; ``None``: every billable code). Returns
    :class:`SpanPair` records with tier ``gold`` and the pair's source as ``source``.
    Raises ``ValueError`` for an unknown source name.
    """
    chosen = expand_sources(sources)
    wanted = canonical_codes(codes)
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
