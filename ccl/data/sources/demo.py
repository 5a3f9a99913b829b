"""The ``demo`` source: synthetic notes from ICD-10-CM knowledge (:mod:`ccl.data.demo`).

A regular source: ``conf/docs/demo.yaml`` names :func:`load_demo` as its ``_target_``.
The evidence phrases of the notes come from the gold pairs of the chosen code pool
(:func:`ccl.data.pairs.gold_pairs`: Alphabetic Index entries, Tabular descriptions and
inclusion terms), so a note's wording is what the gold tier can teach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ccl.data.demo import DEFAULT_CODE_POOL, build_demo_world
from ccl.data.pairs import gold_pairs
from ccl.data.sources import SourceData
from ccl.icd.tabular import TabularList


def load_demo(cfg: Any, tab: TabularList, cache_dir: Path, index: Any = None) -> SourceData:
    """The demo world of ``cfg`` (a :class:`ccl.config.DocsConfig`) as train/val/test + corpus.

    ``index``: the validated Alphabetic Index entries (a list of
    :class:`ccl.icd.index.IndexEntry`) whose phrases join the phrase bank; ``None``, empty
    or an :class:`~ccl.data.sources.common.IndexHints` (which keeps no phrases): Tabular
    terms only. ``cache_dir`` is unused (the world is generated, deterministic in
    ``docs.seed``). Raises ``ValueError`` naming the ``docs.*`` field a request cannot meet.
    """
    del cache_dir
    entries = [] if index is None or hasattr(index, "codes_for") else list(index)
    pool = set(cfg.code_pool or DEFAULT_CODE_POOL)
    bank: dict[str, list[str]] = {}
    for pair in gold_pairs(tab, entries, codes=pool):
        bank.setdefault(pair.code, []).append(pair.evidence)
    world = build_demo_world(cfg, tab, bank)
    return SourceData({"train": world.train, "val": world.val, "test": world.test}, world.corpus, world.stats)
