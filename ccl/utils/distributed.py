"""Several processes, one run: ranks, world size and the launch checks of a multi-GPU (DDP) job.

Under ``torchrun`` every rank runs the whole pipeline: rank 0 alone writes the run folder
(:func:`is_main_process`), rank 0's decision to skip a cached train stage is broadcast
(:func:`rank0_decision`) so all ranks skip or all fit, and rank 0 builds shared caches
before the others read them (:func:`rank0_first`). The data plan and the LR schedule are
made for the world size the trainer will run with (:func:`planned_world_size`). A Hydra
multirun (``-m``) of multi-device jobs is refused unless the processes were started by
``torchrun`` (:func:`check_launch`): Lightning's own launcher re-runs the command line,
i.e. the whole sweep, in every child process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

SHARDED_STRATEGIES = ("fsdp", "deepspeed_stage_3")


def is_main_process() -> bool:
    """Rank 0 of a multi-process (DDP) job, or a single process (Lightning reads the rank from
    the launcher's environment)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def check_strategy(strategy: str) -> None:
    """Refuse, before any training, strategies whose trained weights the train stage cannot save."""
    if any(str(strategy).startswith(s) for s in SHARDED_STRATEGIES):
        raise ValueError(
            f"train.strategy={strategy}: the model is sharded across GPUs and its trained weights "
            "cannot be gathered and saved by CCL yet; use train.strategy=ddp or deepspeed_stage_2 "
            "(a LoRA run of a 4-8B backbone fits on each GPU)")


def externally_launched() -> bool:
    """Every rank of the job was started by torchrun (or an equivalent that sets ``RANK`` and
    ``WORLD_SIZE``), not by Lightning's own launcher (which sets neither ``RANK`` nor starts
    the other ranks before ``fit``)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank0_decision(value: bool) -> bool:
    """Rank 0's ``value`` on every rank of a torchrun job (``value`` itself otherwise).

    Initialises the default process group from torchrun's environment when it is not
    up yet (gloo for CPU tensors, plus NCCL for CUDA ones when GPUs are visible);
    Lightning then uses that group. A collective: every rank must call it at the same
    point. Ranks > 0 pass anything.
    """
    if not externally_launched():
        return bool(value)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    flag = torch.tensor([int(bool(value))], dtype=torch.int64)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


@contextmanager
def rank0_first() -> Iterator[None]:
    """Under torchrun, rank 0 runs the block first (it builds shared caches: the data, a tiny
    backbone's directory), the other ranks after it; elsewhere a plain block."""
    if not is_main_process():
        rank0_decision(True)
    yield
    if is_main_process():
        rank0_decision(True)


def _device_count(devices: Any) -> int:
    """Processes per node that ``train.devices`` asks for (``auto``/-1: the visible GPUs)."""
    if isinstance(devices, list | tuple) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return max(1, torch.cuda.device_count())
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return int(text)


def _hydra_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under @hydra.main
        return False


def check_launch(train_cfg: Any) -> None:
    """Refuse a Hydra multirun of multi-device jobs that Lightning itself would launch.

    Lightning's launcher starts ranks > 0 by re-running ``sys.argv``: under ``-m`` that is
    the whole sweep, in every child. Run each sweep point under torchrun instead (a shell
    loop of ``torchrun --nproc_per_node N -m ccl.run ...``; README "Paper-scale runs on
    GPUs"). Raises ``ValueError`` naming ``train.devices``.
    """
    processes = _device_count(train_cfg.devices) * int(train_cfg.num_nodes)
    if processes > 1 and _hydra_multirun() and not externally_launched():
        raise ValueError(
            f"train.devices={train_cfg.devices} (x{train_cfg.num_nodes} nodes) under a Hydra multirun: "
            "Lightning would re-run the whole sweep in every child process. Run each job under "
            "torchrun, one job at a time (for b in ...; do torchrun --nproc_per_node N -m ccl.run ...; "
            "done; README 'Paper-scale runs on GPUs')")


def planned_world_size(trainer_cfg: Any) -> int:
    """The number of processes the trainer will train with (Lightning's own resolution of
    ``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` of ``trainer_cfg``, the
    ``trainer`` group or ``train``, torchrun's environment included)."""
    probe = pl.Trainer(
        accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices, num_nodes=trainer_cfg.num_nodes,
        strategy=trainer_cfg.strategy, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    return int(probe.world_size)
