"""Document sources: one interface, chosen by ``docs._target_``.

A source is a function ``load(cfg, tab, cache_dir, index) -> SourceData`` named by the
``_target_`` of its ``conf/docs/<name>.yaml`` and resolved with
:func:`hydra.utils.get_method` (as the lightning-hydra-template instantiates its
objects), here and nowhere else: :func:`load_source`. The built-in ones: ``demo``
(:mod:`ccl.data.sources.demo`, synthetic notes), MDACE, MIMIC-IV ICD-10, CodiEsp and
ACI-Bench. A source of your own is a module on ``sys.path`` and a YAML with ``_target_``
(``+docs=my_source`` from a config dir of yours): no ccl code to edit.

Codes come out canonical and billable in the loaded Tabular List (see
:mod:`ccl.data.sources.common` for the mapping rule); ``SourceData.stats`` counts what
was kept, mapped and dropped, and why. ``docs.code_pool`` / ``docs.max_train_docs`` then
cut a CPU-sized slice of any source (:mod:`ccl.data.sources.subset`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccl.data.sources.subset import restrict_source
from ccl.icd.tabular import TabularList
from ccl.records import Document
from ccl.utils.targets import resolve_target


@dataclass
class SourceData:
    """Documents by split, a code-only corpus, and what loading counted."""

    docs: dict[str, list[Document]]  # "train" / "val" / "test" (val may be empty)
    corpus: list[Document]  # code-only documents (silver mining, document-level SFT)
    stats: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[Any, TabularList, Path, Any], SourceData]
LOADER = "load(cfg, tab, cache_dir, index) -> SourceData, e.g. ccl.data.sources.mdace.load_mdace"
# docs.source -> its built-in loader: for a DocsConfig without ``_target_`` (one built in
# code, or a run folder's config written before sources were registered).
SOURCES = {
    "demo": "ccl.data.sources.demo.load_demo",
    "mdace": "ccl.data.sources.mdace.load_mdace",
    "mimic4": "ccl.data.sources.mimic4.load_mimic4",
    "codiesp": "ccl.data.sources.codiesp.load_codiesp",
    "aci_bench": "ccl.data.sources.aci_bench.load_aci_bench",
}


def source_loader(cfg: Any) -> Loader:
    """The loader ``docs._target_`` names (or, without one, the built-in loader of
    ``docs.source``). Raises ``ValueError`` in one line naming the key when there is none
    or it cannot be imported."""
    target, source = getattr(cfg, "_target_", None), str(getattr(cfg, "source", None))
    if not target:
        if source not in SOURCES:
            raise ValueError(
                f"docs.source={source!r} is not a known document source and docs._target_ is not set; "
                f"known: {', '.join(SOURCES)} (or set docs._target_ to a loader of your own)"
            )
        target = SOURCES[source]
    return resolve_target(target, "docs._target_", LOADER)


def load_source(cfg: Any, tab: TabularList, cache_dir: Path, index: Any = None) -> SourceData:
    """Load the documents of ``cfg`` (a :class:`ccl.config.DocsConfig` or its DictConfig) with
    the loader :func:`source_loader` finds, then cut ``docs.code_pool`` /
    ``docs.max_train_docs`` (:func:`ccl.data.sources.subset.restrict_source`).

    ``index``: the validated Alphabetic Index entries (or an
    :class:`ccl.data.sources.common.IndexHints` built from them): real sources let the Index
    choose billable codes for non-billable labels, the demo source adds its phrases.
    Raises ``ValueError`` for an unknown source; loaders raise their own errors naming
    the ``docs.*`` key and file.
    """
    data = source_loader(cfg)(cfg, tab, Path(cache_dir), index)
    if not isinstance(data, SourceData):
        raise TypeError(f"docs._target_ of source {cfg.source!r} returned {type(data).__name__}, not SourceData")
    docs, corpus, subset = restrict_source(data.docs, data.corpus, cfg, tab)
    if subset is None:
        return data
    return SourceData(docs=docs, corpus=corpus, stats={**data.stats, "subset": subset})
