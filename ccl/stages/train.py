"""The train stage: records -> SFT examples -> mixed datamodule -> Lightning fit -> ``model/``.

``model/`` holds the adapter (LoRA) or the full model, the tokenizer (with code
tokens when used) and ``ccl_model.json`` saying how to rebuild it for inference.
Checkpoints go to ``checkpoints/``; an interrupted run resumes from ``last.ckpt``.
``ccl_model.json`` also records the training answers' token lengths and the answer
bound derived from them (``answer_tokens``), which the predict stage decodes to.

Several devices: the ranks, the world size the data plan is made for and the launch checks
are :mod:`ccl.utils.distributed`'s.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl.data.datamodule import MixDataModule
from ccl.data.packing import PackingCollator, use_packed_attention
from ccl.data.sft import build_examples, tokenize_examples
from ccl.generation.record import answer_length_stats
from ccl.model.backbone import apply_training_mode, count_parameters
from ccl.model.frozen_prefix import FrozenPrefix, first_trainable_layer
from ccl.model.module import SFTModule, save_trained
from ccl.model.train_progress import TrainProgress
from ccl.predict.serving import load_model
from ccl.stages.data import DataBundle
from ccl.stages.keys import train_key
from ccl.utils.atomic import write_json_atomic
from ccl.utils.base_model import base_reference
from ccl.utils.checkpoints import AtomicCheckpointIO, check_given_checkpoint, usable_checkpoint
from ccl.utils.distributed import is_main_process, planned_world_size, rank0_first
from ccl.utils.loggers import finish_logger, make_logger
from ccl.utils.run_folder import MODEL_META, RunFolder
from ccl.utils.verify import write_record

log = logging.getLogger(__name__)


def frozen_prefix(cfg: DictConfig, model: Any, packing: bool) -> Any:
    """A :class:`ccl.model.frozen_prefix.FrozenPrefix` when ``train.frozen_prefix_cache`` is on
    and the lower decoder layers are frozen; None otherwise (with a log line saying why)."""
    if not cfg.train.get("frozen_prefix_cache"):
        return None
    k = first_trainable_layer(model)
    if packing or not k:
        log.info("train.frozen_prefix_cache: off (%s)", "packed batches" if packing else
                 "no frozen lower layers: LoRA on every layer, input-side code tokens or attention dropout")
        return None
    log.info("train.frozen_prefix_cache: layers 0-%d run once per distinct example", k - 1)
    return FrozenPrefix(model, k)


def fit_trainer(cfg: DictConfig, *, steps: int, validate: bool, logger: Any, callbacks: list[Any],
                progress_bar: bool, run_dir: Path) -> pl.Trainer:
    """The Lightning trainer of the fit: the ``trainer`` group (``conf/trainer/default.yaml``:
    devices, precision, accumulation, all from ``train.*``) plus what this stage fixes.

    Fixed here, not configurable: the data plan is one Lightning epoch of ``steps`` optimiser
    steps that the datamodule shards by rank itself (``use_distributed_sampler=False``); the
    validation loss, when ``validate``, is computed once, at the end; the fit is deterministic;
    checkpoints are written atomically inside the run folder (:class:`AtomicCheckpointIO`).
    A ``trainer.*`` value that differs from its ``train.*`` key was refused before any work
    (:func:`ccl.config.check_trainer`, called by :class:`ccl.pipeline.Pipeline`).
    """
    from hydra.utils import instantiate

    return instantiate(
        cfg.trainer, max_steps=steps, max_epochs=1, logger=logger, callbacks=callbacks,
        enable_progress_bar=progress_bar,
        num_sanity_val_steps=0, limit_val_batches=None if validate else 0,
        val_check_interval=max(1, steps) if validate else None, deterministic=True,
        default_root_dir=str(run_dir), use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
    )


def train_stage(cfg: DictConfig, bundle: DataBundle, run_dir: Path, console: Console) -> Path:
    """Fit the model; save it to ``run_dir/model``; return that path."""
    check_trainable(bundle)
    pl.seed_everything(cfg.seed, workers=True)
    cache_dir = Path(cfg.paths.cache_dir)
    with rank0_first():  # ranks > 0 load the backbone rank 0 built
        model, tokenizer = load_model(cfg, bundle, cache_dir)
    packing = bool(cfg.train.packing)
    if packing and model.config._attn_implementation == "sdpa":
        use_packed_attention(model)  # per-example causal SDPA inside a packed row
    model = apply_training_mode(model, cfg.train)
    trainable, total = count_parameters(model)

    use_chat = bool(cfg.backbone.use_chat_template)
    max_len = int(cfg.backbone.max_length)
    doc_ex, span_ex, val_ex = build_examples(cfg, bundle)
    doc_tok, doc_stats = tokenize_examples(tokenizer, doc_ex, use_chat, max_len)
    span_tok, span_stats = tokenize_examples(tokenizer, span_ex, use_chat, max_len) if span_ex else ([], None)
    n_val = int(cfg.train.val_docs)
    val_tok, _ = tokenize_examples(tokenizer, val_ex[:n_val], use_chat, max_len) if n_val and val_ex else ([], None)
    del doc_ex, span_ex, val_ex  # the prompts' text: the tokenised store is all training reads

    collator = (
        PackingCollator(max_len, tokenizer.pad_token_id, attn_implementation=model.config._attn_implementation)
        if packing else None
    )
    dm = MixDataModule(doc_tok, span_tok, cfg.mix, cfg.train, seed=cfg.seed,
                       pad_token_id=tokenizer.pad_token_id, collator=collator, val_examples=val_tok)
    # Planned for the world size the trainer will have: each rank takes every world_size-th
    # batch, so with train.max_epochs the steps (and the LR schedule over them) shrink N-fold.
    dm.world_size = planned_world_size(cfg.trainer)
    # The LR schedule spans the planned steps (train.max_epochs may end the plan early).
    warmup = (math.ceil(float(cfg.train.warmup_ratio) * dm.planned_steps) if cfg.train.get("warmup_ratio")
              else int(cfg.train.warmup_steps))
    schedule_cfg = OmegaConf.merge(cfg.train, {"max_steps": dm.planned_steps, "warmup_steps": warmup})
    module = SFTModule(model, schedule_cfg, tokenizer=tokenizer, seed=cfg.seed)
    module.prefix = frozen_prefix(cfg, model, packing)
    logger = make_logger(cfg, run_dir)
    # Checkpoints live under the stage key: a changed config never resumes a stale run.
    ckpt_dir = run_dir / RunFolder.checkpoints / train_key(cfg, bundle)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=0,
        every_n_train_steps=max(1, int(cfg.train.save_every_n_steps)),
    )
    steps = dm.planned_steps
    # Log lines when stdout is not a terminal (rich bar when it is); the fit's true cost is
    # kept in the checkpoints, so a resumed or restored training reports all of it.
    progress = TrainProgress()
    bar = [pl.callbacks.RichProgressBar()] if not progress.log_lines else []
    trainer = fit_trainer(cfg, steps=steps, validate=bool(val_tok), logger=logger,
                          callbacks=[checkpoint, progress, *bar], progress_bar=bool(bar), run_dir=run_dir)
    ckpt_path = resume_from(cfg, ckpt_dir, console)
    if ckpt_path:
        console.print(f"[cyan]train[/]: resuming from {ckpt_path}")
    console.print(
        f"[cyan]train[/]: {cfg.backbone.name} ({str(cfg.train.mode)}, {trainable:,}/{total:,} trainable), "
        f"{len(doc_tok)} document + {len(span_tok)} span examples, {steps} steps"
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if module.prefix is not None:
        log.info("train.frozen_prefix_cache: lower layers ran for %d examples, %d served from the cache",
                 module.prefix.computed, module.prefix.served)
    seconds = progress.fit_seconds if progress.fit_seconds > 0 else time.perf_counter() - t0
    if not trainer.is_global_zero:  # DDP: every rank holds the same weights; rank 0 saves them
        return RunFolder(run_dir).model
    # A fresh folder: files of an earlier mode (an adapter beside a full model) must not linger.
    shutil.rmtree(RunFolder(run_dir).model, ignore_errors=True)
    out = save_trained(module, RunFolder(run_dir).model)
    report = {
        "mode": str(cfg.train.mode), "backbone": cfg.backbone.name,
        "base_dir": _absolute(str(getattr(module.model.config, "_name_or_path", ""))),
        # Where the base lies relative to the cache and the run, and its fingerprint: the run
        # folder can move (ccl.utils.base_model.resolve_base).
        "base": base_reference(_absolute(str(getattr(module.model.config, "_name_or_path", ""))),
                               cfg.backbone.name, Path(cfg.paths.cache_dir), run_dir),
        "code_tokens": bool(cfg.backbone.code_tokens),
        "codes": bundle.code_vocabulary() if cfg.backbone.code_tokens else [],
        "trainable_params": trainable, "total_params": total, "steps": steps, "fit_seconds": round(seconds, 1),
        "final_loss": float(trainer.callback_metrics.get("train/loss", torch.tensor(progress.loss))),
        "tokenize": {"docs": doc_stats.as_dict(), "spans": span_stats.as_dict() if span_stats else None},
        # Training answers' lengths in tokens and the answer bound the predict stage decodes to.
        "answer_tokens": answer_length_stats([len(ex["input_ids"]) - ex["prompt_length"] for ex in doc_tok]),
        "world_size": int(trainer.world_size), "warmup_steps": warmup,
        "plan": dm.report(),
    }
    write_json_atomic(out / MODEL_META, report)
    write_record(out)  # sizes and sha256 of model/'s files, checked whenever it is read
    finish_logger(logger)
    console.print(f"[cyan]train[/]: done in {seconds:.0f} s, final loss {report['final_loss']:.3f}")
    return out


def resume_from(cfg: DictConfig, ckpt_dir: Path, console: Console) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` when given (refused when unreadable), else
    the newest checkpoint of ``ckpt_dir`` that reads whole; a damaged one is set aside
    (:func:`ccl.utils.checkpoints.usable_checkpoint`). ``None``: start over."""
    if cfg.get("ckpt_path"):
        check_given_checkpoint(cfg.ckpt_path)
        return str(cfg.ckpt_path)
    found = usable_checkpoint(ckpt_dir, lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
                              rename=is_main_process())
    return str(found) if found else None


def _absolute(name: str) -> str:
    """A local model folder as an absolute path (the run may be used from anywhere); hub ids as they are."""
    return str(Path(name).resolve()) if name and Path(name).is_dir() else name


def check_trainable(bundle: DataBundle) -> None:
    """Refuse to fine-tune on documents that carry no codes (e.g. ACI-Bench without labels)."""
    if not any(d.codes for d in bundle.docs.get("train", [])):
        raise ValueError(
            "the training documents have no codes (a predict-only source such as ACI-Bench without "
            "docs.labels_path?): give labels, or run zero-shot with train=none"
        )
