"""Real document sources: MDACE, MIMIC-IV ICD-10, CodiEsp and ACI-Bench.

Each source has one loader, ``load_<source>(cfg, tab, cache_dir) -> SourceData``,
chosen by ``docs.source``. Codes come out canonical and billable in the loaded
Tabular List (see :mod:`ccl.data.sources.common` for the mapping rule);
``SourceData.stats`` counts what was kept, mapped and dropped, and why.
The synthetic ``demo`` source is built by :mod:`ccl.data.demo`, not here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccl.data.records import Document
from ccl.icd.tabular import TabularList

# docs.source -> module holding load_<source>; imported on demand (mimic4 pulls in pandas).
SOURCES = {
    "mdace": "ccl.data.sources.mdace",
    "mimic4": "ccl.data.sources.mimic4",
    "codiesp": "ccl.data.sources.codiesp",
    "aci_bench": "ccl.data.sources.aci_bench",
}


@dataclass
class SourceData:
    """Documents by split, a code-only corpus, and what loading counted."""

    docs: dict[str, list[Document]]  # "train" / "val" / "test" (val may be empty)
    corpus: list[Document]  # code-only documents (silver mining, document-level SFT)
    stats: dict[str, Any] = field(default_factory=dict)


def load_source(cfg: Any, tab: TabularList, cache_dir: Path, index: Any = None) -> SourceData:
    """Load the documents of ``cfg.source`` (a :class:`ccl.config.DocsConfig`).

    ``index``: an :class:`ccl.data.sources.common.IndexHints` (or the Index entries it is
    built from) that lets the Alphabetic Index choose billable codes for non-billable labels.
    """
    source = str(cfg.source)
    if source not in SOURCES:
        known = ", ".join(["demo (ccl.data.demo)", *SOURCES])
        raise ValueError(f"docs.source={source!r} is not a known document source; known: {known}")
    module = importlib.import_module(SOURCES[source])
    loader = getattr(module, f"load_{source}")
    if index is not None and not hasattr(index, "codes_for"):
        from ccl.data.sources.common import IndexHints

        index = IndexHints(index)
    data = loader(cfg, tab, Path(cache_dir), index)
    # docs.code_pool / docs.max_train_docs: a CPU-sized slice (ccl/data/sources/subset.py)
    from ccl.data.sources.subset import restrict_source

    docs, corpus, subset = restrict_source(data.docs, data.corpus, cfg, tab)
    if subset is None:
        return data
    return SourceData(docs=docs, corpus=corpus, stats={**data.stats, "subset": subset})
