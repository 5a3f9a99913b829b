"""Span tiers as registered objects: one interface, one dispatcher, built in order.

A tier is a callable ``build(ctx: TierContext) -> TierResult`` named by the ``_target_``
of its config node (``conf/spans/<tier>.yaml``, e.g. ``spans.gold._target_:
ccl.spans.gold.build``) and resolved with :func:`hydra.utils.get_method`, as the
lightning-hydra-template instantiates its objects. :func:`build_tiers` runs the
configured tiers in :data:`ccl.records.TIERS` order (gold, silver, synthetic):
each sees the pairs of the tiers before it in ``ctx.spans``. Every tier caches its
entry with :mod:`ccl.spans.tier_cache` (``pairs.jsonl`` + ``report.json``).

A new tier is a module with a ``build`` function, a ``conf/spans/<name>.yaml`` naming
it, its name in ``TIERS`` and a dataclass in :mod:`ccl.config` (the closed schema).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf
from rich.console import Console

from ccl.config import GoldSpansConfig, SilverSpansConfig, SyntheticSpansConfig
from ccl.icd.tabular import TabularList
from ccl.records import TIERS, Document, SpanPair
from ccl.utils.targets import resolve_target


class TierResult(NamedTuple):
    """What a tier built: its pairs and its report (written to ``data_manifest.json``
    under ``span_tiers.<tier>``). A tuple, so ``pairs, report = build(ctx)`` reads it."""

    pairs: list[SpanPair]
    report: dict[str, Any]


@dataclass(frozen=True)
class TierContext:
    """Everything a tier may read. ``cfg``: the composed run config (the tier reads its own
    node ``cfg.spans.<tier>``, and ``cfg.llm`` / ``cfg.docs.source`` where it needs them);
    ``entries``: validated Alphabetic Index entries (empty: Tabular List terms only);
    ``docs``: documents by split; ``corpus``: code-only documents; ``spans``: the pairs of
    the tiers built before this one, by tier name; ``cache_dir``: ``paths.cache_dir``."""

    cfg: Any
    tab: TabularList
    docs: Mapping[str, Sequence[Document]]
    corpus: Sequence[Document] = ()
    spans: Mapping[str, Sequence[SpanPair]] = field(default_factory=dict)
    cache_dir: Path = Path(".cache/ccl")
    entries: Sequence[Any] = ()
    console: Console | None = None


Tier = Callable[[TierContext], TierResult]
# The schema of each tier's node: its ``_target_`` default names the built-in builder.
SCHEMAS = {"gold": GoldSpansConfig, "silver": SilverSpansConfig, "synthetic": SyntheticSpansConfig}


def tier_target(name: str, node: Any) -> str:
    """The ``_target_`` of tier ``name``'s config node; a node without one (a config
    written in code, or by a run before tiers were registered) takes the schema's default
    (:data:`SCHEMAS`). Raises ``ValueError`` for a tier the schema lacks."""
    target = OmegaConf.select(node, "_target_") if OmegaConf.is_config(node) else getattr(node, "_target_", None)
    if target:
        return str(target)
    if name not in SCHEMAS:
        raise ValueError(f"spans.{name}: not a span tier; known: {', '.join(TIERS)}")
    return SCHEMAS[name]._target_


def resolve_tier(name: str, node: Any) -> Tier:
    """The callable ``spans.<name>._target_`` names. Raises ``ValueError`` (one line, naming
    the key) when it cannot be imported or is not callable."""
    return resolve_target(tier_target(name, node), f"spans.{name}._target_",
                          "build(ctx: TierContext) -> TierResult, e.g. ccl.spans.gold.build")


def build_tiers(ctx: TierContext) -> tuple[dict[str, list[SpanPair]], dict[str, dict[str, Any]]]:
    """Build every tier ``ctx.cfg.spans`` configures, in :data:`TIERS` order; return pairs and
    reports by tier. A tier's ``build`` sees the earlier tiers' pairs in ``ctx.spans``."""
    spans: dict[str, list[SpanPair]] = {}
    reports: dict[str, dict[str, Any]] = {}
    configured = ctx.cfg.get("spans") or {}
    for name in TIERS:
        node = configured.get(name)
        if node is None:
            continue
        result = resolve_tier(name, node)(replace(ctx, spans=dict(spans)))
        spans[name], reports[name] = list(result.pairs), dict(result.report)
    return spans, reports
