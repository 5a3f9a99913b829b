"""The train stage: records -> SFT examples -> mixed datamodule -> Lightning fit -> ``model/``.

``model/`` holds the adapter (LoRA) or the full model, the tokenizer (with code
tokens when used) and ``ccl_model.json`` saying how to rebuild it for inference.
Checkpoints go to ``checkpoints/``; an interrupted run resumes from ``last.ckpt``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl.data.prompts import PROMPT_VERSION, Example, document_example, span_example
from ccl.data.sft import tokenize_examples
from ccl.stages.data import DataBundle
from ccl.utils.hashing import hash_obj
from ccl.utils.loggers import finish_logger, make_logger

MODEL_META = "ccl_model.json"


# Settings that change how a run is executed or reported, not the weights it ends with.
_NOT_IN_TRAIN_KEY = {
    "backbone": ("family", "n_params"),
    "train": ("log_every_n_steps", "save_every_n_steps", "val_docs", "devices", "num_nodes",
              "strategy", "accelerator"),
}


def train_key(cfg: DictConfig, bundle: DataBundle) -> str:
    """Content key of the training stage: data key + everything that shapes the model."""
    parts = {}
    for group in ("backbone", "mix", "train"):
        values = OmegaConf.to_container(cfg[group], resolve=True)
        parts[group] = {k: v for k, v in values.items() if k not in _NOT_IN_TRAIN_KEY.get(group, ())}
    return hash_obj({"data": bundle.key, "task": str(cfg.task), "seed": cfg.seed,
                     "prompts": PROMPT_VERSION, **parts})


def tiny_corpus(bundle: DataBundle) -> list[str]:
    """Texts the tiny backbone's tokenizer is trained on: notes, span evidence, label descriptions."""
    texts = [d.text for split in ("train", "val") for d in bundle.docs.get(split, [])]
    texts += [p.evidence for p in bundle.span_pairs()]
    texts += [f"{c} - {bundle.describe(c)}" for c in sorted(bundle.tab.billable_codes())[::25]]
    texts += [f"{c} - {bundle.describe(c)}" for c in model_codes(bundle)]
    return texts


def model_codes(bundle: DataBundle) -> list[str]:
    """Codes that get their own token: every code the model may need to write."""
    codes = {c for split in bundle.docs.values() for d in split for c in d.codes}
    codes |= {p.code for p in bundle.span_pairs()}
    return sorted(codes)


def build_examples(cfg: DictConfig, bundle: DataBundle) -> tuple[list[Example], list[Example], list[Example]]:
    """Document examples (train, val) for ``cfg.task`` and span examples from all tiers."""
    task = str(cfg.task)
    describe = bundle.describe

    def docs(split: str) -> list[Example]:
        return [document_example(task, d.text, [s.text for s in d.spans], d.codes, describe)
                for d in bundle.docs.get(split, [])]

    return docs("train"), span_examples(cfg, bundle), docs("val")


def span_examples(cfg: DictConfig, bundle: DataBundle) -> list[Example]:
    """Span pairs as training examples, in the format(s) ``mix.span_template`` names."""
    fmt = str(cfg.mix.span_template)
    if fmt not in ("span", "document", "both"):
        raise ValueError(f"mix.span_template={fmt!r}: expected span, document or both")
    task, describe = str(cfg.task), bundle.describe
    out: list[Example] = []
    for p in bundle.span_pairs():
        if fmt in ("span", "both"):
            out.append(span_example(p.evidence, p.code, describe))
        if fmt in ("document", "both"):
            note = f"Assessment: {p.evidence}."
            out.append(replace(document_example(task, note, [p.evidence], [p.code], describe), kind="span"))
    return out


def load_model(cfg: DictConfig, bundle: DataBundle, cache_dir: Path) -> tuple[Any, Any]:
    """Backbone (+ code tokens when configured), before any training wrapper."""
    from ccl.model.backbone import load_backbone
    from ccl.model.code_tokens import add_code_tokens

    model, tokenizer = load_backbone(cfg.backbone, cache_dir, tiny_corpus(bundle))
    if cfg.backbone.code_tokens:
        add_code_tokens(model, tokenizer, model_codes(bundle), bundle.describe)
    return model, tokenizer


SHARDED_STRATEGIES = ("fsdp", "deepspeed_stage_3")


def check_strategy(strategy: str) -> None:
    """Refuse, before any training, strategies whose trained weights this stage cannot save."""
    if any(str(strategy).startswith(s) for s in SHARDED_STRATEGIES):
        raise ValueError(
            f"train.strategy={strategy}: the model is sharded across GPUs and its trained weights "
            "cannot be gathered and saved by CCL yet; use train.strategy=ddp or deepspeed_stage_2 "
            "(a LoRA run of a 4-8B backbone fits on each GPU)")


def train_stage(cfg: DictConfig, bundle: DataBundle, run_dir: Path, console: Console) -> Path:
    """Fit the model; save it to ``run_dir/model``; return that path."""
    from ccl.data.datamodule import MixDataModule
    from ccl.data.packing import PackingCollator, use_packed_attention
    from ccl.model.backbone import apply_training_mode, count_parameters
    from ccl.model.module import SFTModule, save_trained

    check_trainable(bundle)
    pl.seed_everything(cfg.seed, workers=True)
    cache_dir = Path(cfg.paths.cache_dir)
    model, tokenizer = load_model(cfg, bundle, cache_dir)
    packing = bool(cfg.train.packing)
    if packing and model.config._attn_implementation == "sdpa":
        use_packed_attention(model)  # per-example causal SDPA inside a packed row
    model = apply_training_mode(model, cfg.train, str(cfg.backbone.code_token_side))
    trainable, total = count_parameters(model)

    use_chat = bool(cfg.backbone.use_chat_template)
    max_len = int(cfg.backbone.max_length)
    doc_ex, span_ex, val_ex = build_examples(cfg, bundle)
    doc_tok, doc_stats = tokenize_examples(tokenizer, doc_ex, use_chat, max_len)
    span_tok, span_stats = tokenize_examples(tokenizer, span_ex, use_chat, max_len) if span_ex else ([], None)
    n_val = int(cfg.train.val_docs)
    val_tok, _ = tokenize_examples(tokenizer, val_ex[:n_val], use_chat, max_len) if n_val and val_ex else ([], None)

    collator = (
        PackingCollator(max_len, tokenizer.pad_token_id, attn_implementation=model.config._attn_implementation)
        if packing else None
    )
    dm = MixDataModule(doc_tok, span_tok, cfg.mix, cfg.train, seed=cfg.seed,
                       pad_token_id=tokenizer.pad_token_id, collator=collator, val_examples=val_tok)
    dm.build_plan()
    # The LR schedule spans the planned steps (train.max_epochs may end the plan early).
    schedule_cfg = OmegaConf.merge(cfg.train, {"max_steps": dm.planned_steps})
    module = SFTModule(model, schedule_cfg, tokenizer=tokenizer, seed=cfg.seed)
    logger = make_logger(cfg, run_dir)
    # Checkpoints live under the stage key: a changed config never resumes a stale run.
    ckpt_dir = run_dir / "checkpoints" / train_key(cfg, bundle)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=0,
        every_n_train_steps=max(1, int(cfg.train.save_every_n_steps)),
    )
    steps = dm.planned_steps
    trainer = pl.Trainer(
        max_steps=steps, max_epochs=1, accelerator=cfg.train.accelerator, devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes, strategy=cfg.train.strategy, precision=cfg.train.precision,
        accumulate_grad_batches=int(cfg.train.grad_accum), logger=logger, callbacks=[checkpoint],
        log_every_n_steps=int(cfg.train.log_every_n_steps), enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0 if not val_tok else None,
        val_check_interval=max(1, steps) if val_tok else None, deterministic=True,
        default_root_dir=str(run_dir), use_distributed_sampler=False,
    )
    ckpt_path = cfg.get("ckpt_path") or (str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").exists() else None)
    if ckpt_path:
        console.print(f"[cyan]train[/]: resuming from {ckpt_path}")
    console.print(
        f"[cyan]train[/]: {cfg.backbone.name} ({str(cfg.train.mode)}, {trainable:,}/{total:,} trainable), "
        f"{len(doc_tok)} document + {len(span_tok)} span examples, {steps} steps"
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - t0
    if not trainer.is_global_zero:  # DDP: every rank holds the same weights; rank 0 saves them
        return run_dir / "model"
    # A fresh folder: files of an earlier mode (an adapter beside a full model) must not linger.
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    out = save_trained(module, run_dir / "model")
    report = {
        "mode": str(cfg.train.mode), "backbone": cfg.backbone.name,
        "base_dir": _absolute(str(getattr(module.model.config, "_name_or_path", ""))),
        "code_tokens": bool(cfg.backbone.code_tokens),
        "codes": model_codes(bundle) if cfg.backbone.code_tokens else [],
        "trainable_params": trainable, "total_params": total, "steps": steps, "fit_seconds": round(seconds, 1),
        "final_loss": float(trainer.callback_metrics.get("train/loss", torch.tensor(float("nan")))),
        "tokenize": {"docs": doc_stats.as_dict(), "spans": span_stats.as_dict() if span_stats else None},
        "plan": dm.report(),
    }
    (out / MODEL_META).write_text(json.dumps(report, indent=2, default=str))
    finish_logger(logger)
    console.print(f"[cyan]train[/]: done in {seconds:.0f} s, final loss {report['final_loss']:.3f}")
    return out


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


def load_trained(cfg: DictConfig, bundle: DataBundle | None, run_dir: Path) -> tuple[Any, Any]:
    """The model to predict with: the trained one in ``run_dir/model``, or the bare backbone."""
    from ccl.model.backbone import load_backbone

    cache_dir = Path(cfg.paths.cache_dir)
    model_dir = Path(run_dir) / "model"
    if str(cfg.train.mode) == "none" or not model_dir.exists():
        if str(cfg.train.mode) != "none":
            raise FileNotFoundError(f"{model_dir}: no trained model; run stage=train first")
        if bundle is None:
            if str(cfg.backbone.kind) == "tiny":
                raise ValueError("a zero-shot tiny model is rebuilt from the run's data; use ccl.run stage=predict")
            model, tokenizer = load_backbone(cfg.backbone, cache_dir)
            return model.eval(), tokenizer
        model, tokenizer = load_model(cfg, bundle, cache_dir)
        return model.eval(), tokenizer
    meta = json.loads((model_dir / MODEL_META).read_text())
    if meta["mode"] == "full":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    from peft import PeftModel

    from ccl.model.code_tokens import add_code_tokens

    # The exact base the adapter was trained on (a tiny model's dir depends on its corpus).
    base = OmegaConf.merge(cfg.backbone, {"kind": "hub", "pretrained": meta["base_dir"]})
    model, tokenizer = load_backbone(base, cache_dir)
    if meta.get("code_tokens"):
        from ccl.icd.tabular import load_tabular

        tab = bundle.tab if bundle is not None else load_tabular(cfg.icd.tabular_xml, cache_dir)
        add_code_tokens(model, tokenizer, meta["codes"], tab.description)
    model = PeftModel.from_pretrained(model, model_dir)
    return model.eval(), tokenizer
