"""Experiment loggers: W&B (offline unless told), CSV, or none; and the one W&B run of a run.

One ``ccl.run`` makes at most one W&B run (:func:`wandb_run`): the training logger
(:func:`make_logger`) and the results logger (:mod:`ccl.report.wandb_log`) write into
the same run, and the pipeline closes it (:func:`finish_wandb_run`). Every
``wandb.init`` gets its mode (``logger.mode``: offline unless the config says online)
as an argument, never through the environment: ``wandb.setup`` reads ``WANDB_MODE``
once per process, so a mode set in the environment after a first run of the same
process (job 2 of a multirun) is not seen.

Everything W&B writes for a run stays in its run folder, ``RUN/wandb/``: the run
itself (``offline-run-*``), and, while the run is open, W&B's artifact staging area
(``WANDB_DATA_DIR``, default ``~/.local/share/wandb``) and artifact cache
(``WANDB_CACHE_DIR``, default ``~/.cache/wandb``); W&B reads both from the environment
only, so they are set for the run's lifetime and restored after.

The runs of one Hydra multirun share a W&B group (:func:`sweep_group`).

Privacy: only the resolved config, scalar metrics and code-level results are
logged. Note text never leaves the machine unless ``logger.log_note_text`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ccl.utils.run_folder import RunFolder

GROUP_ENV = "CCL_SWEEP_GROUP"  # set by ccl.report.callback.ReportCallback for a multirun
WANDB_SUBDIR = "wandb"  # RUN/wandb: the W&B runs, staging area and cache of a run folder
# W&B reads these only from the environment (wandb.env.get_data_dir / get_cache_dir).
STAGING_ENV = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache"}


def config_value(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for a dict, DictConfig or dataclass; ``default`` when absent or None."""
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if callable(getter) else getattr(cfg, key, default)
    return default if value is None else value


def sweep_group(run_dir: Path, logger_cfg: Any = None) -> str | None:
    """The W&B group of a run: ``logger.group``, then ``$CCL_SWEEP_GROUP``, then the name of
    the Hydra multirun folder the run folder sits in (``multirun.yaml`` beside it); ``None``
    for a single run."""
    group = config_value(logger_cfg, "group") or os.environ.get(GROUP_ENV)
    if group:
        return str(group)
    if RunFolder(run_dir).in_sweep():
        return Path(run_dir).resolve().parent.name
    return None


def wandb_mode(logger_cfg: Any) -> str:
    """``logger.mode`` as W&B's ``mode`` argument (offline when unset).

    Raises ValueError naming the key for anything but offline, online or disabled.
    """
    mode = str(config_value(logger_cfg, "mode", "offline"))
    if mode not in ("offline", "online", "disabled"):
        raise ValueError(f"logger.mode: {mode!r} is not a W&B mode; use offline, online or disabled")
    return mode


@dataclass
class _OpenRun:
    run: Any
    run_dir: Path
    saved_env: dict[str, str | None]


_OPEN: _OpenRun | None = None


def wandb_run(run_dir: str | Path, logger_cfg: Any, name: str, config: dict[str, Any] | None = None,
              job_type: str = "run", tags: list[str] | None = None) -> Any:
    """The W&B run of ``run_dir``: opened by the first call of a ``ccl.run``, the same run after.

    A run still open for another folder (an earlier job of the same process) is finished
    first. ``logger_cfg`` gives ``project``, ``mode`` and ``group`` (see :func:`sweep_group`);
    the run's files go to ``run_dir/wandb``, and W&B's artifact staging area and cache to
    ``run_dir/wandb/data`` and ``run_dir/wandb/cache`` until :func:`finish_wandb_run`.
    """
    global _OPEN
    run_dir = Path(run_dir).resolve()
    if _OPEN is not None:
        if _OPEN.run_dir == run_dir:
            return _OPEN.run
        finish_wandb_run()
    import wandb

    mode = wandb_mode(logger_cfg)
    root = run_dir / WANDB_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    saved = {var: os.environ.get(var) for var in STAGING_ENV}
    for var, sub in STAGING_ENV.items():
        os.environ[var] = str(root / sub)
    try:
        run = wandb.init(
            project=str(config_value(logger_cfg, "project", "ccl")), name=name, group=sweep_group(run_dir, logger_cfg),
            job_type=job_type, config=config, tags=[t for t in tags or [] if t], dir=str(run_dir), mode=mode,
            # symlink=False: files saved into the run are copied (or hard-linked), so the
            # run folder can be moved to another machine and synced there.
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                    save_code=False, symlink=False),
        )
    except wandb.errors.UsageError as e:  # online without a login: say what to do, in one line
        _restore(saved)
        raise ValueError(f"logger.mode={mode}: W&B refused to start a run ({e}); log in with `wandb login` "
                         "(or set WANDB_API_KEY), or keep logger.mode=offline and `wandb sync RUN/wandb` "
                         "later") from None
    except BaseException:
        _restore(saved)
        raise
    _OPEN = _OpenRun(run, run_dir, saved)
    return run


def _restore(saved: dict[str, str | None]) -> None:
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def finish_wandb_run(exit_code: int = 0) -> None:
    """Close the run :func:`wandb_run` opened (a no-op when none is open) and give W&B its
    staging and cache folders back."""
    global _OPEN
    if _OPEN is None:
        return
    open_run, _OPEN = _OPEN, None
    try:
        open_run.run.finish(exit_code=exit_code)
    finally:
        _restore(open_run.saved_env)


def open_wandb_run() -> Any:
    """The run :func:`wandb_run` holds open, or ``None``."""
    return _OPEN.run if _OPEN is not None else None


def run_name(cfg: Any) -> str:
    """A run's W&B name: ``<name>-<backbone.name>`` (the training and results loggers agree)."""
    backbone = config_value(cfg, "backbone") or {}
    return f"{config_value(cfg, 'name', '')}-{config_value(backbone, 'name', '')}"


def make_logger(cfg: DictConfig, run_dir: Path) -> Any:
    """A Lightning logger for ``cfg.logger.kind``, or ``False`` for none.

    For W&B, rank 0 opens (or joins) the run's one W&B run (:func:`wandb_run`); other
    DDP ranks get a logger that never starts one.
    """
    kind = str(cfg.logger.kind)
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if int(getattr(rank_zero_only, "rank", 0) or 0) != 0:
        # Lightning hands ranks > 0 a dummy experiment: nothing is initialised there.
        return WandbLogger(project=str(cfg.logger.project), name=run_name(cfg), save_dir=str(run_dir),
                           mode=wandb_mode(cfg.logger))
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    run = wandb_run(run_dir, cfg.logger, run_name(cfg), config, job_type="train",
                    tags=[str(cfg.task), str(cfg.backbone.name)])
    # What WandbLogger does for a run it opens itself: metrics against the trainer's step.
    if hasattr(run, "define_metric"):
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return WandbLogger(experiment=run, save_dir=str(run_dir))


def finish_logger(logger: Any) -> None:
    """Flush a training logger; the W&B run stays open for the results and is closed by
    the pipeline (:func:`finish_wandb_run`), so one ``ccl.run`` makes one W&B run."""
    if logger and hasattr(logger, "save"):
        logger.save()
