"""The training LightningModule: supervised fine-tuning of a (peft) causal LM."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ccl.config import TrainConfig
from ccl.data.datamodule import NUM_ITEMS
from ccl.data.packing import LOSS_KEYS, MODEL_INPUTS
from ccl.data.sft import IGNORE_INDEX
from ccl.model.code_tokens import code_head_parameters, code_token_ids
from ccl.model.frozen_prefix import forward as prefix_forward


def warmup_cosine(warmup_steps: int, max_steps: int):
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine to 0 at ``max_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


LOSS_POSITIONS = ("answer", "all")
# The training objective's rule, in the train stage's content key: a model trained under an
# earlier rule (a step's loss = the mean of its micro-batch means, before issue 23) is never
# taken for one trained under this one (a rerun of its run folder trains again).
OBJECTIVE_VERSION = "step-token-mean"


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, targets)`` for a ``(rows, width)`` label tensor (``-100`` = no loss).

    ``keep`` is a boolean ``(rows, width)`` mask of the positions whose NEXT token is a
    target (the causal-LM shift), ``targets`` the ``(keep.sum(),)`` token ids they
    predict, in row-major order. The mean cross-entropy of the logits at ``keep``
    against ``targets`` equals the full-logits causal-LM loss on ``labels``.
    """
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = targets != IGNORE_INDEX
    return keep, targets[keep]


def model_inputs(batch: dict[str, torch.Tensor], loss_positions: str = "answer") -> dict[str, torch.Tensor]:
    """The keys of ``batch`` for :func:`causal_lm_forward`, the loss at ``loss_positions``.

    ``answer`` (every run's): the model inputs without ``labels`` plus ``loss_mask`` /
    ``loss_targets`` (:func:`answer_positions`; a packed batch may already carry them).
    ``all``: the model inputs with ``labels`` (logits at every position: the old path, no
    longer a config key, kept for ``ccl.bench``'s ``before`` arm to measure it).
    Raises ``ValueError`` for another value.
    """
    if loss_positions not in LOSS_POSITIONS:
        raise ValueError(f"loss_positions: unknown value {loss_positions!r}; expected one of {LOSS_POSITIONS}")
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    if loss_positions == "answer" and "labels" in inputs:
        labels = inputs.pop("labels")
        if all(k in batch for k in LOSS_KEYS):
            inputs.update({k: batch[k] for k in LOSS_KEYS})
        else:
            inputs["loss_mask"], inputs["loss_targets"] = answer_positions(labels)
    return inputs


def output_head(model: nn.Module) -> nn.Module:
    """The module a (peft-wrapped) causal LM calls to project hidden states onto the
    vocabulary (``lm_head``, or peft's wrapper around it when code rows train there).
    Raises ``ValueError`` when the model has none."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (lm_head): "
                         "the answer-position loss needs a causal LM")
    return head


@contextlib.contextmanager
def head_only_at(model: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Within this context the model's ``lm_head`` sees only the hidden states at ``keep``.

    ``keep`` is a boolean ``(rows, width)`` mask; the head's input ``(rows, width, hidden)``
    becomes ``(1, keep.sum(), hidden)``, so the logits are ``(1, keep.sum(), vocab)``.
    This works the same on every transformers version and architecture: it relies only
    on a causal LM's forward calling its ``lm_head`` once on all positions' hidden states
    (the default ``logits_to_keep=0``). Transformers' own tensor ``logits_to_keep`` does
    not: before 5.2x it indexes ``hidden_states[:, logits_to_keep, :]`` (a 2D mask there
    raises ``IndexError: too many indices``), from 5.2x it also takes a boolean mask.
    Raises ``RuntimeError`` if the head is called on a tensor of another shape.
    """

    def select(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if tuple(hidden.shape[:2]) != tuple(keep.shape):
            raise RuntimeError(f"lm_head got hidden states of shape {tuple(hidden.shape)}; "
                               f"expected (rows, width) = {tuple(keep.shape)} for the answer positions")
        return (hidden[keep.to(hidden.device)][None], *args[1:])

    handle = output_head(model).register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def causal_lm_forward(model: nn.Module, inputs: dict[str, torch.Tensor], prefix: Any = None) -> Any:
    """The model's output with ``.loss`` (mean next-token cross-entropy) for :func:`model_inputs`.

    With ``loss_mask`` / ``loss_targets`` in ``inputs`` (the answer-position loss, every run's),
    only the hidden states at ``loss_mask`` meet ``lm_head`` (:func:`head_only_at`): no
    full-vocabulary logits for prompt tokens; ``.logits`` is ``(loss_mask.sum(), vocab)``
    and the loss equals the full-logits loss on the labels. Otherwise the model computes
    the loss from ``labels`` and ``.logits`` is ``(rows, width, vocab)``. ``prefix`` is a
    :class:`ccl.model.frozen_prefix.FrozenPrefix` (or None).
    """
    if "loss_mask" not in inputs:
        return prefix_forward(model, inputs, prefix)
    keep, targets = inputs["loss_mask"], inputs["loss_targets"]
    body = {k: v for k, v in inputs.items() if k not in LOSS_KEYS}
    with head_only_at(model, keep):
        out = prefix_forward(model, body, prefix)
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    out.logits = logits
    out.loss = nn.functional.cross_entropy(logits.float(), targets.to(logits.device))
    return out


def batch_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Target tokens of a batch as the causal-LM loss counts them (0-dim long tensor): labels
    other than ``-100`` after the one-token shift, i.e. ``labels[:, 1:]``. The same count
    whether the batch is padded or packed (a packed row's example starts are ``-100``)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def _step_seed(seed: int, rank: int, step: int, batch_idx: int) -> int:
    return (((seed * 1_000_003 + rank) * 1_000_003 + step) * 10_007 + batch_idx) % (2**63)


class SFTModule(pl.LightningModule):
    """Causal-LM loss on answer tokens (labels are -100 on prompt and padding).

    Batches are dicts with ``input_ids``, ``labels`` and ``attention_mask`` and/or
    ``position_ids``. Packed rows (several examples in one row) come without an
    ``attention_mask`` and with ``position_ids`` restarting at 0 per example; the
    model then keeps the examples apart (sdpa and flash-attention alike).

    The objective of one optimiser step is the mean cross-entropy over ALL answer
    tokens of the step: sum of token losses over its micro-batches (``train.grad_accum``)
    and ranks, divided by the step's target-token count. A training batch carries that
    count as :data:`ccl.data.datamodule.NUM_ITEMS` (the data plan knows which micro-batches
    form a step); a micro-batch's mean loss times its own target count is its summed
    token loss. Lightning divides the returned loss by ``accumulate_grad_batches`` and DDP
    averages the gradients over ranks, so the returned loss is multiplied back by both
    (as transformers' Trainer multiplies by the number of processes when it divides by
    ``num_items_in_batch``). The step's gradient then equals that of one batch of the
    same examples on one device (tested), so the CPU default (micro-batches of 4, 2 per
    step) and the GPU preset (one packed batch per step) optimise the same objective.
    Under DeepSpeed, whose ``DeepSpeedEngine.backward`` also divides by the accumulation
    steps, the gradient carries that constant factor on top (not tested here). A batch
    without :data:`NUM_ITEMS` (a plain DataLoader) counts as equal to its step's other
    micro-batches: the step's loss is then the mean of the micro-batch means, as before.

    ``step_loss`` (0-dim tensor, summed over ranks) is the per-token mean loss of the last
    completed optimiser step; it is also logged as ``train/loss``, once per step.
    """

    def __init__(
        self,
        model: nn.Module,
        train_cfg: TrainConfig,
        tokenizer: PreTrainedTokenizerBase | None = None,
        seed: int = 0,
        loss_positions: str = "answer",
    ) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.loss_positions = loss_positions  # "all": the old path, measured by tests and the bench only
        self.tokenizer = tokenizer
        self.seed = seed
        self._last_step_end: float | None = None
        # Set by the train stage (train.frozen_prefix_cache): training steps run only the
        # trainable top layers on cached lower-layer states (ccl.model.frozen_prefix).
        self.prefix: Any = None
        self.step_loss: torch.Tensor | None = None  # per-token mean of the last finished step
        self._step_sum: torch.Tensor | None = None  # this rank's part of the running step

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        # use_cache=False: with a KV cache present transformers skips the packed-sequence
        # detection from position_ids, and packed rows would attend across examples.
        inputs = model_inputs(batch, self.loss_positions)
        return causal_lm_forward(self.model, inputs, self.prefix if self.training else None)

    def _scales(self) -> tuple[int, int]:
        """(micro-batches Lightning divides the loss by, ranks DDP averages gradients over)."""
        trainer = self._trainer
        if trainer is None:
            return 1, 1
        return int(trainer.accumulate_grad_batches), int(trainer.world_size)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        mean = self(batch).loss  # mean over this micro-batch's target tokens
        accumulate, world = self._scales()
        n = batch_targets(batch).to(mean.device)
        step_items = batch.get(NUM_ITEMS)
        step_items = (n * accumulate * world if step_items is None else step_items.to(mean.device))
        # This micro-batch's share of the step's per-token mean: its summed token loss / the
        # step's target tokens (class docstring).
        share = mean * (n.to(mean.dtype) / step_items.to(mean.dtype))
        part = share.detach().to(torch.promote_types(share.dtype, torch.float32))
        self._step_sum = part if self._step_sum is None else self._step_sum + part
        return share * (accumulate * world)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Runs once per optimiser step, after the step's last micro-batch: the step's loss is
        # the sum of its micro-batches' shares over all ranks.
        if self._step_sum is None:
            return
        total = self._step_sum
        if self._scales()[1] > 1:
            total = self.trainer.strategy.reduce(total.clone(), reduce_op="sum")
        self.step_loss, self._step_sum = total.detach(), None
        self.log("train/loss", self.step_loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)

    def on_train_start(self) -> None:
        self._last_step_end = time.perf_counter()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout masks drawn from a seed fixed by (seed, rank, step, batch) rather than
        # from whatever the global RNG went through before: a run resumed from a
        # checkpoint then draws exactly the masks the uninterrupted run drew, even
        # though data loading consumed the global RNG differently in the two runs.
        torch.manual_seed(
            _step_seed(self.seed, self.global_rank, self.trainer.global_step, batch_idx)
        )

    def on_train_batch_end(
        self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_step_end is not None:
            elapsed = max(now - self._last_step_end, 1e-9)
            tokens = int(batch["num_tokens"]) if "num_tokens" in batch else batch["attention_mask"].sum().item()
            answer = (batch["labels"] != IGNORE_INDEX).sum().item()
            self.log("train/tokens_per_s", tokens / elapsed, on_step=True, on_epoch=False)
            self.log("train/answer_tokens_per_s", answer / elapsed, on_step=True, on_epoch=False)
        self._last_step_end = now
        if self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", lr, on_step=True, on_epoch=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        # Weighted by target tokens: the epoch value is the mean over all answer tokens.
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=int(batch_targets(batch)))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.train_cfg
        head_ids = {id(p) for p in code_head_parameters(self.model)}
        decay, no_decay, head = [], [], []
        for param in {id(p): p for p in self.model.parameters() if p.requires_grad}.values():
            if id(param) in head_ids:
                head.append(param)
            elif param.ndim >= 2:
                decay.append(param)
            else:
                no_decay.append(param)
        groups = [
            {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
            {"params": head, "lr": cfg.code_head_lr, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("SFTModule: the model has no trainable parameters (train.mode=none?)")
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # Not trainer.estimated_stepping_batches when max_steps is unset: it sets up the
        # train dataloader before a checkpoint's dataloader state is restored, so a resumed
        # run would replay batches. The run passes max_steps = the data plan's length.
        trainer = self._trainer
        total = cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else trainer.max_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(cfg.warmup_steps, int(total))
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def save_trained(module: SFTModule, out_dir: Path) -> Path:
    """Save the adapter (LoRA) or the whole model (full), plus the tokenizer, to ``out_dir``.

    To reload an adapter trained with code tokens: load the backbone, call
    ``add_code_tokens`` with the same codes, then ``PeftModel.from_pretrained``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = module.model
    if hasattr(model, "peft_config"):
        # Code-token rows are saved as peft's trainable-token values; the rest of the
        # resized matrix is rebuilt by add_code_tokens, so skip a full embedding copy.
        model.save_pretrained(
            out_dir, save_embedding_layers=False if code_token_ids(model) else "auto"
        )
    else:
        model.save_pretrained(out_dir)
    if module.tokenizer is not None:
        module.tokenizer.save_pretrained(out_dir)
    return out_dir
