"""``python -m ccl.cli.spans tier=silver|synthetic [llm=NAME] [docs=NAME] [overrides]``.

Builds one span tier into the cache that ``python -m ccl.run`` reads (the data
stage finds it under ``paths.cache_dir/<tier>/<hash>`` and does not rebuild
it), then writes and prints a coverage report: billable ICD-10-CM codes
covered by gold, + silver, + synthetic, overall and over the run's label space.

The config is composed exactly as ``ccl.run`` composes it, so any ``ccl.run``
override works here. Without a ``spans=`` override the tiers are
``[gold, silver]`` for ``tier=silver`` and ``[gold, silver, synthetic]`` for
``tier=synthetic``. A generating ``llm`` (``hf``, ``openai``, ``vllm``) switches
the tier's method to ``llm`` unless ``spans.<tier>.method`` is given; with
``llm=lexical`` (the default) silver is mined lexically and synthetic pairs
come from templates. Output: ``paths.output_dir/expand/<name>-<tier>/coverage.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from ccl.cli.errors import cli_main
from ccl.config import check_closed, compose_config, llm_config, register_configs
from ccl.spans.coverage import coverage_report, print_coverage
from ccl.stages.data import build_data
from ccl.utils.run_folder import RunFolder

TIER_CHOICES = ("silver", "synthetic")
DEFAULT_SPANS = {"silver": "[gold,silver]", "synthetic": "[gold,silver,synthetic]"}


class UsageError(ValueError):
    """The command line cannot be understood."""


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    """``(tier, hydra overrides)`` from the command line."""
    tiers = [a.split("=", 1)[1] for a in argv if a.startswith("tier=")]
    overrides = [a for a in argv if not a.startswith("tier=")]
    if len(tiers) != 1 or tiers[0] not in TIER_CHOICES:
        raise UsageError(f"give exactly one tier=silver or tier=synthetic (got {tiers or 'none'})")
    return tiers[0], overrides


def _compose_with_llm(rest: list[str], group: list[str], values: list[str]) -> DictConfig:
    """Compose with an ``llm`` group whether or not the root defaults list names one."""
    if not group:
        if compose_config(rest).get("llm") is not None:
            return compose_config(rest + values)
        group = ["llm=lexical"]
    try:
        return compose_config(rest + group + values)
    except ConfigCompositionException:  # no llm entry in the defaults list: append one
        return compose_config(rest + ["+" + g for g in group] + values)


def tier_config(tier: str, overrides: list[str]) -> DictConfig:
    """The run config for building ``tier``: :func:`ccl.config.compose_config` of ``overrides`` with
    the tier's default ``spans`` and ``llm`` (see the module docstring)."""
    register_configs()

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    group = [o.lstrip("+") for o in overrides if key(o) == "llm"]
    values = [o for o in overrides if key(o).startswith("llm.")]
    rest = [o for o in overrides if key(o) != "llm" and o not in values]
    if not any(key(o) == "spans" for o in rest):
        rest.append(f"spans={DEFAULT_SPANS[tier]}")
    cfg = _compose_with_llm(rest, group, values)
    if cfg.spans.get(tier) is None:
        raise UsageError(
            f"tier={tier} but spans={list(k for k, v in cfg.spans.items() if v)} lacks it"
        )
    check_closed(cfg)
    backend = llm_config(cfg).backend
    method_given = any(o.split("=", 1)[0] == f"spans.{tier}.method" for o in rest)
    with open_dict(cfg):
        if backend != "lexical" and not method_given:
            cfg.spans[tier].method = "llm"
        cfg.stage = "data"
    return cfg


def expand(cfg: DictConfig, tier: str, console: Console | None = None) -> dict[str, Any]:
    """Build the configured tiers (``tier`` last) and return the coverage report."""
    console = console or Console()
    run_dir = Path(cfg.paths.output_dir) / "expand" / f"{cfg.name}-{tier}"
    run_dir.mkdir(parents=True, exist_ok=True)
    RunFolder(run_dir).config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    bundle = build_data(cfg, run_dir, console)
    doc_codes = {c for split in bundle.docs.values() for d in split for c in d.codes}
    coverage = coverage_report(bundle.tab, bundle.spans, codes=doc_codes)
    tier_info = {
        k: v for k, v in bundle.manifest["span_tiers"].get(tier, {}).items() if k != "per_code"
    }
    report = {"tier": tier, "run_dir": str(run_dir), "coverage": coverage, "tier_report": tier_info}
    (run_dir / "coverage.json").write_text(json.dumps(report, indent=2))
    print_coverage(coverage, console, title=f"Span coverage after {tier}")
    console.print_json(json.dumps(report))
    return report


@cli_main("ccl.cli.spans")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    if not argv or argv[0] in ("-h", "--help"):
        console.print(__doc__)
        return 0 if argv else 2
    try:
        tier, overrides = parse_args(argv)
        cfg = tier_config(tier, overrides)
    except UsageError as err:
        console.print(f"[red]ccl.cli.spans:[/] {err}")
        return 2
    expand(cfg, tier, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
