"""The training's progress callback: log lines when stdout is no terminal, and the fit's true cost.

:class:`TrainProgress` prints a plain line every :func:`ccl.utils.progress.interval_s`
seconds when no terminal shows Lightning's rich bar, e.g.

    train: step 120/400 (30%), loss 1.234, 2,310 tokens/s, elapsed 4m02s, ETA 9m25s

and keeps the training's true cost -- fit seconds summed over every session that trained
this model, and the last loss -- in the Lightning checkpoint (callback state, keyed by the
class name), so a training resumed from (or restored by) a checkpoint reports what the
whole training cost, not the seconds of the last session.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

import pytorch_lightning as pl

from ccl.utils.progress import LogLines, duration, is_terminal, time_left


def _batch_tokens(batch: Any) -> int:
    """Real (non-padding) tokens of a training batch."""
    if not isinstance(batch, dict):
        return 0
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    mask = batch.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return int(mask.sum().item())
    ids = batch.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


class TrainProgress(pl.Callback):
    """Log lines of the training when stdout is no terminal, and the fit's true cost.

    ``fit_seconds``: seconds spent in ``trainer.fit`` over all sessions (restored from
    the checkpoint's callback state on resume). ``loss``: the per-token mean loss of the
    last finished optimiser step (restored likewise), so a fit that resumes at its last
    step still reports it.
    """

    def __init__(self, log_lines: bool | None = None, stream: TextIO | None = None) -> None:
        self.log_lines = (not is_terminal(stream)) if log_lines is None else log_lines
        self.stream = stream
        self.prior_seconds = 0.0  # from earlier sessions (checkpoint)
        self.loss = float("nan")
        self._seen_step_loss: Any = None
        self._t0: float | None = None
        self._lines: LogLines | None = None
        self._tokens = 0
        self._first_step = 0

    @property
    def fit_seconds(self) -> float:
        """Training seconds so far, earlier sessions included."""
        return self.prior_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._first_step = trainer.global_step
        self._tokens = 0
        self._lines = LogLines("train", trainer.max_steps, self.stream) if self.log_lines else None
        self._logged_step = trainer.global_step  # a line once an optimiser step has completed

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._read_loss(trainer, pl_module, outputs)
        self._tokens += _batch_tokens(batch)
        step, total = trainer.global_step, trainer.max_steps
        # One line per completed optimiser step: with grad_accum > 1 several batches make one step.
        if (self._lines is None or not trainer.is_global_zero or step == self._logged_step
                or not self._lines.due(step)):
            return
        self._logged_step = step
        elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
        done = step - self._first_step  # steps of this session (a resumed fit starts later)
        rate = self._tokens / elapsed if elapsed > 0 else 0.0
        eta = time_left(done, total - self._first_step, elapsed)
        self._lines.emit(f"step {step}/{total} ({step / max(total, 1):.0%}), loss {self.loss:.3f}, "
                         f"{rate:,.0f} tokens/s, elapsed {duration(self.fit_seconds)}, ETA {eta}")

    def _read_loss(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        """The step's loss: the module's ``step_loss`` (the per-token mean of the last finished
        optimiser step, :class:`ccl.model.module.SFTModule`) when it has one; else the batch's
        own loss (Lightning hands it over divided by ``accumulate_grad_batches``: undone)."""
        step_loss = getattr(pl_module, "step_loss", None)
        if step_loss is not None:
            if step_loss is not self._seen_step_loss:
                self._seen_step_loss = step_loss
                self.loss = float(step_loss.float().item())
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "item"):
            self.loss = float(loss.detach().float().item()) * int(trainer.accumulate_grad_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"fit_seconds": self.fit_seconds, "loss": self.loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.prior_seconds = float(state_dict.get("fit_seconds", 0.0))
        self.loss = float(state_dict.get("loss", float("nan")))
