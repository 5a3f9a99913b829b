"""Experiment loggers: W&B (offline unless told), CSV, or none.

Privacy: only the resolved config, scalar metrics and code-level results are
logged. Note text never leaves the machine unless ``logger.log_note_text`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def make_logger(cfg: DictConfig, run_dir: Path) -> Any:
    """A Lightning logger for ``cfg.logger.kind``, or ``False`` for none."""
    kind = str(cfg.logger.kind)
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    from pytorch_lightning.loggers import WandbLogger

    mode = str(cfg.logger.mode)
    os.environ.setdefault("WANDB_MODE", mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    group = os.environ.get("CCL_SWEEP_GROUP")
    return WandbLogger(
        project=cfg.logger.project,
        name=f"{cfg.name}-{cfg.backbone.name}",
        save_dir=str(run_dir),
        offline=mode == "offline",
        group=group,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def finish_logger(logger: Any) -> None:
    """Close a W&B run so that runs of a multirun do not mix."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()
