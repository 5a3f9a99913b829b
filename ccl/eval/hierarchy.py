"""Hierarchy-aware credit: codes mapped to their 3-character category or their chapter.

A coder who writes ``E11.65`` for a gold ``E11.9`` has the right category with the
wrong specificity; at the category level that is a hit. Metrics at a level score the
*units* (categories or chapters) of the codes: each document's gold units and
predicted units are sets, and the label space at a level is the set of units of the
full-code label space. A predicted code is kept at a level when its unit is in that
level's label space, even if the full code is outside the full-code label space, so a
wrong-specificity code earns its category credit.
"""

from __future__ import annotations

from collections.abc import Callable

from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList

UNKNOWN_CHAPTER = "?"


def category_of(code: str) -> str:
    """The 3-character category of a code (``E11.65`` -> ``E11``)."""
    return canonical_code(code)[:3]


def chapter_mapper(tab: TabularList) -> Callable[[str], str]:
    """``code -> chapter id`` ("4" for E11.9) from the Tabular List.

    A code the list does not know takes its category's chapter; a category it does not
    know either maps to ``?<category>`` (no label space holds it, so it is dropped).
    """

    def chapter(code: str) -> str:
        code = canonical_code(code)
        return tab.chapter(code) or tab.chapter(code[:3]) or f"{UNKNOWN_CHAPTER}{code[:3]}"

    return chapter
