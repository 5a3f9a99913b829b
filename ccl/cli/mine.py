"""``python -m ccl.cli.mine``: silver mining as a Hydra app, so it spreads over workers.

Stage 1 (extraction) of the silver tier splits the corpus into ``spans.silver.shard.count``
shards by a hash of the note id (:func:`ccl.spans.silver.shard_of`); each Hydra job of a
multirun extracts one shard into the shared cache, and the merge (``shard.index`` null)
refines once over every shard's candidates and caches the tier that ``ccl.run`` and
``ccl.cli.spans`` read. Any Hydra launcher runs the shards: ``hydra/launcher=local_parallel``
(joblib, worker processes on this machine) or ``hydra/launcher=slurm`` (submitit, one SLURM
array task per shard; ``paths.cache_dir`` must be on a filesystem every node shares)::

    python -m ccl.cli.mine -m llm=hf spans.silver.shard.count=4 \\
        'spans.silver.shard.index=range(4)' hydra/launcher=local_parallel
    python -m ccl.cli.mine llm=hf spans.silver.shard.count=4        # the merge

The config is ``conf/mine.yaml`` (the run config with ``spans: [gold, silver]``); as in
``ccl.cli.spans``, a generating ``llm`` switches ``spans.silver.method`` to ``llm`` unless the
command line sets it. The LLM call cache is shared safely by concurrent shards
(:class:`ccl.spans.llm.cache.CallCache`: a call is claimed before it is generated).
Each job prints one JSON line: the shard's (or the merge's) silver report without
``per_code``.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from rich.console import Console

from ccl.config import llm_config, register_configs

register_configs()


def prepare(cfg: DictConfig, task_overrides: list[str]) -> DictConfig:
    """``cfg`` as the mining job runs it: data stage only, no tier after silver, and the
    ``llm`` method under a generating backend unless ``spans.silver.method`` was given.
    Raises ``ValueError`` when ``spans`` has no silver tier."""
    if cfg.spans.get("silver") is None:
        raise ValueError("ccl.cli.mine: spans has no silver tier; keep spans=[gold,silver]")
    given = any(o.lstrip("+~").split("=", 1)[0] == "spans.silver.method" for o in task_overrides)
    with open_dict(cfg):
        if llm_config(cfg).backend != "lexical" and not given:
            cfg.spans.silver.method = "llm"
        cfg.spans.synthetic = None  # stage 1 shards stop at silver; synthetic runs after the merge
        cfg.stage = "data"
    return cfg


def mine(cfg: DictConfig, console: Console | None = None) -> dict:
    """Run the configured silver shard (or the merge) and return the tier's report."""
    # local import: the data stage imports torch + transformers; --help and config errors stay fast
    from ccl.stages.data import build_data

    console = console or Console()
    bundle = build_data(cfg, Path(cfg.paths.output_dir), console, write=False)
    report = {k: v for k, v in bundle.manifest["span_tiers"].get("silver", {}).items() if k != "per_code"}
    console.print(json.dumps(report, sort_keys=True), soft_wrap=True, highlight=False)
    return report


@hydra.main(config_path="../../conf", config_name="mine", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point (one job per shard under ``-m``)."""
    mine(prepare(cfg, list(HydraConfig.get().overrides.task)))


if __name__ == "__main__":
    main()
