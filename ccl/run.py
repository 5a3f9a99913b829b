"""``python -m ccl.run``: compose the config, check and lock the run folder, run the stages.

The stages themselves (data -> train -> predict -> eval, each keyed by content and
skipped when finished) are :mod:`ccl.pipeline`'s; ``stage=data`` (or a comma list)
runs a subset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl import pipeline
from ccl.cli.errors import cli_errors, hydra_debug_flag, one_line_job_errors, watch
from ccl.config import check_closed, check_retired, check_values, check_yaml_files, register_configs
from ccl.utils.atomic import write_text_atomic
from ccl.utils.run_folder import (
    RunFolder,
    RunLock,
    check_config,
    merged_stage,
    save_hydra_snapshot,
)
from ccl.utils.stages import parse_stages

register_configs()


def _run_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main (tests call run() directly)
        return Path.cwd()


def check_not_sharded(cfg: DictConfig) -> None:
    """Refuse ``spans.silver.shard.*`` in a run: sharding is the mining command's.

    A run with ``spans.silver.shard.index`` set would extract one shard and train on no
    silver pairs; ``shard.count > 1`` is the mining merge's setting. Raises ``ValueError``
    (one line naming the key and pointing at ``python -m ccl.cli.mine``, README
    "Over workers"); the merged tier is cached under a key without the shard, so the
    run without ``spans.silver.shard.*`` reads it."""
    silver = cfg.get("spans", {}).get("silver") if cfg.get("spans") is not None else None
    shard = silver.get("shard") if silver is not None else None
    if shard is None:
        return
    index, count = shard.get("index"), int(shard.get("count") or 1)
    key, value = (("spans.silver.shard.index", index) if index is not None
                  else ("spans.silver.shard.count", count))
    if index is not None or count > 1:
        raise ValueError(
            f"{key}={value}: ccl.run does not shard the silver tier (a shard's run would train on "
            "no or part of the silver pairs); run the shards and their merge with "
            "`python -m ccl.cli.mine` (README \"Over workers\"), then ccl.run without "
            "spans.silver.shard.* reads the merged tier from paths.cache_dir")


def run(cfg: DictConfig, run_dir: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the configured stages in ``run_dir``; return the metrics (empty if eval did not run).

    The folder is locked for the whole run (:class:`ccl.utils.run_folder.RunLock`; a
    second run into it raises ``RunFolderBusy``), and a folder holding another config's
    results raises ``RunFolderConflict`` unless ``overwrite=true``. Keys the schema
    does not declare raise ``UnknownConfigKey``; a value out of its range (``train.lr=-1``)
    raises ``ValueError`` naming the key, before any work (:func:`ccl.config.check_values`),
    as does a silver shard setting (:func:`check_not_sharded`).
    """
    console = console or Console()
    run_dir = Path(run_dir or _run_dir())
    check_closed(cfg)
    check_values(cfg)
    check_not_sharded(cfg)
    stages = parse_stages(cfg.stage)
    watch("run folder", run_dir)  # named by a full-disk error that names no file
    watch("paths.cache_dir", cfg.paths.cache_dir)
    if not pipeline.is_main_process():  # a DDP rank > 0 joins rank 0's training; rank 0 holds the folder
        return pipeline.run_stages(cfg, run_dir, console, stages)
    with RunLock(run_dir) as lock:
        if lock.took_over:
            console.print(f"[yellow]run folder[/]: took over the lock of process {lock.took_over}, "
                          "which is no longer running")
        old = check_config(run_dir, cfg)
        save_hydra_snapshot(run_dir, cfg)  # under the lock: a refused run never writes .hydra/
        record = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        record["stage"] = merged_stage(old, str(cfg.stage))
        write_text_atomic(RunFolder(run_dir).config, OmegaConf.to_yaml(record))
        return pipeline.run_stages(cfg, run_dir, console, stages)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # Hydra records each failed job; the others still run
        with one_line_job_errors("ccl.run"):
            metrics = run(cfg)
    else:
        with cli_errors("ccl.run"):
            metrics = run(cfg)
    # Returned for Hydra sweepers that optimise a value.
    return metrics.get("codes", {}).get("overall", {}).get("micro_f1") if metrics else None


if __name__ == "__main__":
    hydra_debug_flag()  # --debug: the full traceback (as HYDRA_FULL_ERROR=1)
    with cli_errors("ccl.run"):
        check_yaml_files(sys.argv[1:])  # a YAML syntax error: one line, not Hydra's parser traceback
        check_retired(sys.argv[1:])  # a key that moved or was removed: one line naming its replacement
    main()
