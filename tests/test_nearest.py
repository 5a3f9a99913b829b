"""Nearest codes and hierarchy distances on the real April 2026 Tabular List."""

from __future__ import annotations

import random

import pytest

from ccl.icd.nearest import (
    hierarchy_distance,
    lowest_common_ancestor,
    nearest_codes,
    nearest_covered,
)
from ccl.icd.tabular import TabularList


def test_siblings_first(tab: TabularList) -> None:
    # Code order around E11.9: ... E11.65, E11.69, E11.8, [E11.9], E11.A, E13, E13.0 ...
    assert nearest_codes(tab, "E11.9", k=3) == [("E11.8", 1), ("E11.A", 1), ("E11.69", 1)]
    ranked = nearest_codes(tab, "e119", k=120)
    first_level = [c for c, d in ranked if d == 1]
    expected = {c for c in tab.billable_codes() if c.startswith("E11.")} - {"E11.9"}
    assert set(first_level) == expected and len(first_level) == 86
    assert ranked[: len(first_level)] == [(c, 1) for c in first_level]
    # Then the block E08-E13: E13.0 (not billable) sits closer than anything in E10.
    assert ranked[len(first_level)] == ("E13.00", 2)
    assert all(tab.block(c) == "E08-E13" for c, d in ranked if d == 2)


def test_distances_grow_with_levels(tab: TabularList) -> None:
    ranked = nearest_codes(tab, "S72.001A", k=17)
    assert ranked[:15] == [(f"S72.001{ch}", 1) for ch in "BCDEFGHJKMNPQRS"]
    assert ranked[15:] == [("S72.002A", 2), ("S72.002B", 2)]
    # A category: its block is distance 1.
    assert nearest_codes(tab, "I10", k=2) == [("I11.0", 1), ("I11.9", 1)]
    # Descendants come first, at distance 0 (E11.61 itself is not billable).
    assert nearest_codes(tab, "E11.6", k=1) == [("E11.610", 0)]


def test_options(tab: TabularList) -> None:
    with_parents = nearest_codes(tab, "E11.9", k=200, billable_only=False)
    assert ("E11", 1) in with_parents and ("E11.6", 1) in with_parents
    assert all(c != "E11.9" for c, _ in with_parents)
    skipped = nearest_codes(tab, "E11.9", k=2, exclude={"E11.8", "e11a"})
    assert skipped == [("E11.69", 1), ("E11.65", 1)]
    assert nearest_codes(tab, "E11.9", k=0) == []
    with pytest.raises(KeyError, match="E11.99"):
        nearest_codes(tab, "E11.99")


def test_whole_chapter_and_beyond(tab: TabularList) -> None:
    # The only category of its block, chapter 1: every other code is reachable.
    ranked = nearest_codes(tab, "B20", k=len(tab), billable_only=False)
    assert len(ranked) == len(tab) - 1
    assert ranked[0] == ("B19.9", 2)  # the last code of the block above (B15-B19)
    assert {d for _, d in ranked} == {2, 3}
    assert all(tab.chapter(c) == "1" for c, d in ranked if d == 2)


def test_lowest_common_ancestor(tab: TabularList) -> None:
    assert lowest_common_ancestor(tab, "E11.65", "E11.641") == "E11.6"
    assert lowest_common_ancestor(tab, "E11.6", "E11.65") == "E11.6"
    assert lowest_common_ancestor(tab, "E11.9", "E11.9") == "E11.9"
    assert lowest_common_ancestor(tab, "S72.001A", "S72.002A") == "S72.00"
    assert lowest_common_ancestor(tab, "E11.9", "E10.9") is None


def test_hierarchy_distance(tab: TabularList) -> None:
    assert hierarchy_distance(tab, "E11.9", "E11.9") == 0
    assert hierarchy_distance(tab, "E11.9", "E11.8") == 2
    assert hierarchy_distance(tab, "E11.9", "E11.65") == 3
    assert hierarchy_distance(tab, "E11.65", "E11.9") == 3
    assert hierarchy_distance(tab, "E11.9", "E10.9") == 4  # via the block E08-E13
    assert hierarchy_distance(tab, "E11.9", "E00.0") == 6  # up to chapter 4, down via E00-E07
    assert hierarchy_distance(tab, "E11.9", "I10") == 7  # via the root
    # Block B10 and category B10 are distinct nodes: B10 -> block -> chapter -> block -> B15.
    assert hierarchy_distance(tab, "B10", "B15") == 4


def test_nearest_covered_by_hand(tab: TabularList) -> None:
    covered = {"E11.8", "E10.9", "I10"}
    assert nearest_covered(tab, "E11.9", covered, k=2) == [("E11.8", 1), ("E10.9", 2)]
    assert nearest_covered(tab, "E11.9", {"I10", "E13.9"}, k=3) == [("E13.9", 2), ("I10", 4)]
    assert nearest_covered(tab, "E11.9", {"E11.9"}) == []
    assert nearest_covered(tab, "E11.9", set()) == []


@pytest.mark.parametrize("n_covered", [40, 20_000])
def test_nearest_covered_matches_full_ranking(tab: TabularList, n_covered: int) -> None:
    # 40 covered codes take the direct ranking path, 20,000 the hierarchy walk.
    rng = random.Random(n_covered)
    codes = tab.all_codes()
    covered = set(rng.sample(codes, n_covered))
    for target in ["E11.9", "S72.001A", "B20", *rng.sample(codes, 3)]:
        full = nearest_codes(tab, target, k=len(tab), billable_only=False)
        expected = [(c, d) for c, d in full if c in covered][:5]
        assert nearest_covered(tab, target, covered, k=5) == expected, target
