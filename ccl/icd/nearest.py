"""Nearest codes in the ICD-10-CM hierarchy.

The tree is root -> chapter -> block -> category -> subcategory ... -> extended
code. Two distances are used:

*Up distance* (:func:`nearest_codes`, :func:`nearest_covered`): from a target
``t``, the number of steps from ``t`` up to the lowest node that holds the
candidate. With ``n`` = the number of code ancestors of ``t`` (``E11.9``: 1):

- 0: descendants of ``t``
- 1: everything else under ``t``'s parent (siblings and their descendants, and
  the parent itself); 2: under the grandparent; ... n: under the category
- n + 1: the other categories of ``t``'s block (and all their codes)
- n + 2: the other blocks of ``t``'s chapter
- n + 3: the other chapters

A category target has n = 0, so its block is at distance 1. Within one
distance, candidates come by position in code order (:meth:`TabularList.all_codes`,
a pre-order walk) closest to the target, the earlier code first on a tie.

*Tree distance* (:func:`hierarchy_distance`): the number of edges on the path
between two codes in that tree (chapters, blocks and the root are nodes), so
it is symmetric: siblings are 2 apart.

Codes are canonical (``E11.9``); ``covered`` and ``exclude`` sets hold canonical
codes. An unknown target raises KeyError.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList

Range = tuple[int, int]  # positions [start, end) in TabularList.all_codes() order

_ROOT = "root"
# How many positions nearest_covered may scan per covered code before it ranks
# the covered set directly instead (bounds the cost when nothing covered is near).
_SCAN_PER_COVERED = 4


def _chain(tab: TabularList, code: str) -> list[str]:
    """The path from ``code`` to the root: codes, then block, chapter and root nodes.

    Block and chapter nodes get a prefix so that the block ``B10`` and the
    category ``B10`` stay distinct.
    """
    code = tab.code_at(tab.position(code))
    return [
        code,
        *tab.ancestors(code),
        f"block {tab.block(code)}",
        f"chapter {tab.chapter(code)}",
        _ROOT,
    ]


def _span(tab: TabularList, code: str) -> Range:
    return tab.subtree_span(code)


def hierarchy_levels(tab: TabularList, code: str) -> Iterator[tuple[int, list[Range]]]:
    """Yield ``(distance, ranges)``: the positions first reached at each up distance."""
    start, end = _span(tab, code)
    yield 0, [(start + 1, end)]
    inner = (start, end)
    ancestors = tab.ancestors(code)
    dist = 0
    for ancestor in ancestors:
        dist += 1
        lo, hi = _span(tab, ancestor)
        yield dist, [(lo, inner[0]), (inner[1], hi)]
        inner = (lo, hi)
    category = ancestors[-1] if ancestors else code
    block, chapter = tab.block(code), tab.chapter(code)
    yield dist + 1, [_span(tab, c) for c in tab.categories_in(block) if c != category]
    yield (
        dist + 2,
        [_span(tab, c) for b in tab.blocks_in(chapter) if b != block for c in tab.categories_in(b)],
    )
    yield (
        dist + 3,
        [
            _span(tab, c)
            for ch in tab.chapters()
            if ch != chapter
            for b in tab.blocks_in(ch)
            for c in tab.categories_in(b)
        ],
    )


def _outward(ranges: list[Range], target: int) -> Iterator[int]:
    """Positions in ``ranges`` (none holds ``target``) by distance from ``target``, earlier first on ties."""
    left = sorted((r for r in ranges if r[0] < r[1] <= target), reverse=True)
    right = sorted(r for r in ranges if target < r[0] < r[1])
    lefts = ((target - i, i) for lo, hi in left for i in range(hi - 1, lo - 1, -1))
    rights = ((i - target, i) for lo, hi in right for i in range(lo, hi))
    for _, position in heapq.merge(lefts, rights):
        yield position


def nearest_codes(
    tab: TabularList,
    code: str,
    k: int = 10,
    billable_only: bool = True,
    exclude: set[str] | None = None,
) -> list[tuple[str, int]]:
    """The ``k`` codes nearest to ``code`` as ``(code, up distance)``, nearest first.

    The code itself is never returned. See the module docstring for the distance.
    """
    target = tab.position(code)
    skip = {canonical_code(c) for c in exclude} if exclude else set()
    out: list[tuple[str, int]] = []
    if k <= 0:
        return out
    for dist, ranges in hierarchy_levels(tab, tab.code_at(target)):
        for position in _outward(ranges, target):
            candidate = tab.code_at(position)
            if (billable_only and not tab.is_billable(candidate)) or candidate in skip:
                continue
            out.append((candidate, dist))
            if len(out) == k:
                return out
    return out


def nearest_covered(
    tab: TabularList, code: str, covered: set[str], k: int = 1
) -> list[tuple[str, int]]:
    """The ``k`` codes of ``covered`` nearest to ``code``, ordered as :func:`nearest_codes`.

    Walks up the hierarchy and stops at the first level that supplies ``k``
    codes; when a level is large compared with ``covered`` it ranks the covered
    codes directly instead, so one call costs at most about ``len(covered)`` steps.
    """
    target = tab.position(code)
    name = tab.code_at(target)
    out: list[tuple[str, int]] = []
    if k <= 0 or not covered:
        return out
    budget = _SCAN_PER_COVERED * len(covered)
    for dist, ranges in hierarchy_levels(tab, name):
        budget -= sum(hi - lo for lo, hi in ranges)
        if budget < 0:
            return out + _rank_covered(tab, name, covered, dist, k - len(out))
        for position in _outward(ranges, target):
            candidate = tab.code_at(position)
            if candidate in covered:
                out.append((candidate, dist))
                if len(out) == k:
                    return out
    return out


def _rank_covered(
    tab: TabularList, code: str, covered: set[str], min_dist: int, k: int
) -> list[tuple[str, int]]:
    """Rank covered codes at up distance >= ``min_dist`` from ``code`` directly."""
    levels = {node: i for i, node in enumerate(_chain(tab, code))}
    target = tab.position(code)
    ranked = []
    for candidate in covered:
        if candidate not in tab:
            continue
        dist = next(levels[n] for n in _chain(tab, candidate) if n in levels)
        position = tab.position(candidate)
        if dist >= min_dist and position != target:
            ranked.append((dist, abs(position - target), position))
    return [(tab.code_at(p), d) for d, _, p in heapq.nsmallest(k, ranked)]


def lowest_common_ancestor(tab: TabularList, a: str, b: str) -> str | None:
    """The lowest code that is ``a`` or ``b`` or an ancestor of both; None across categories."""
    ancestors_a = set(_chain(tab, a)[:-3])
    return next((n for n in _chain(tab, b)[:-3] if n in ancestors_a), None)


def hierarchy_distance(tab: TabularList, a: str, b: str) -> int:
    """Edges on the tree path between ``a`` and ``b`` (0 when equal, 2 for siblings)."""
    levels = {node: i for i, node in enumerate(_chain(tab, a))}
    return next(levels[n] + j for j, n in enumerate(_chain(tab, b)) if n in levels)
