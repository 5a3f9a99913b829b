"""Mixing documents and span pairs into length-grouped batches for the whole run.

One *data epoch* is every document example ``mix.doc_repeats`` times plus span
examples drawn so that they make up ``mix.span_share`` of the epoch (capped by
``mix.max_span_examples_per_epoch``). Spans are drawn without replacement while
the pool lasts (whole permutations, then the next one), freshly per epoch from
``seed + epoch`` when ``mix.resample_each_epoch``, else once. With
``mix.tier_alpha`` below 1 the draws are split between the span tiers in
proportion to ``size ** alpha`` (each tier drawn as its own pool), so that a
tier of a few pairs (silver on the demo world) is not drowned by a large one. The first
``mix.span_warmup_steps`` optimiser steps see span examples only.

Batches are grouped by length: a shuffled epoch is cut into chunks, each chunk
sorted longest first and cut greedily into batches of at most
``train.batch_size`` examples and at most ``train.max_batch_tokens`` tokens as
the collator counts them (padded: examples x longest), and the batch order is
shuffled. Everything is seeded, so a seed gives the same plan.

Exact resume. The whole run is planned up front (warm-up, then data epochs,
trimmed to ``train.max_steps x train.grad_accum`` batches) and served as ONE
Lightning epoch by a :class:`ResumableDataLoader`. Lightning stores that
loader's ``state_dict`` (batches consumed in the epoch) in every checkpoint and
hands it back before iterating on ``fit(ckpt_path=...)``, so a resumed run
continues at the next unseen batch instead of replaying the epoch from its
start. The trainer must therefore run with ``max_epochs=1`` (or
``max_steps=dm.planned_steps``) and, on several devices,
``use_distributed_sampler=False``: each rank takes every ``world_size``-th
batch of the plan itself.

One objective per optimiser step. Optimiser step ``s`` is made of the plan's
batches ``s x G x W .. (s+1) x G x W - 1`` (``G = train.grad_accum``, ``W`` the
world size; rank ``r`` takes those at ``r, r + W, ...``). Every training batch
carries :data:`NUM_ITEMS`, the loss-bearing tokens of its whole step (all its
micro-batches, all ranks), known from the plan without any communication, so
:class:`ccl.model.module.SFTModule` can divide each micro-batch's summed token
loss by it: the step's loss is the mean over all its answer tokens, whatever the
micro-batching, packing or number of ranks (transformers' ``num_items_in_batch``,
the Trainer's gradient-accumulation fix of October 2024).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ccl.config import MixConfig, TrainConfig
from ccl.data.sft import IGNORE_INDEX

log = logging.getLogger(__name__)

# Batch key: the loss-bearing (target) tokens of the batch's whole optimiser step, over all
# its micro-batches and ranks (transformers' Trainer passes the same count to the loss under
# this name); the module divides the step's summed token losses by it.
NUM_ITEMS = "num_items_in_batch"
CHUNK_BATCHES = 50  # length sorting happens within chunks of this many batches' worth of examples
WARMUP = -1  # epoch label of span warm-up batches
_SPAN_STREAM, _BATCH_STREAM, _WARMUP_STREAM, _VAL_STREAM = 1, 2, 3, 4


class Collator(Protocol):
    """Turns tokenised examples into a model batch; also prices a batch in tokens."""

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]: ...

    def batch_tokens(self, lengths: Sequence[int]) -> int:
        """Tokens the batch of these example lengths occupies (the budget's unit)."""
        ...


class PaddingCollator:
    """Pads to the longest example: ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``."""

    def __init__(self, pad_token_id: int, padding_side: str = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def batch_tokens(self, lengths: Sequence[int]) -> int:
        return len(lengths) * max(lengths, default=0)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(ex["input_ids"]) for ex in examples)
        shape = (len(examples), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex["input_ids"])
            cols = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            input_ids[row, cols] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
            labels[row, cols] = torch.as_tensor(ex["labels"], dtype=torch.long)
            attention_mask[row, cols] = 1
        position_ids = (attention_mask.cumsum(-1) - 1) * attention_mask  # 0 on padding
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "position_ids": position_ids,
        }


def group_by_length(
    indices: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int,
    rng: np.random.Generator,
    batch_tokens: Callable[[Sequence[int]], int],
) -> list[list[int]]:
    """Length-grouped batches of ``indices`` (see the module docstring), in shuffled order.

    An example longer than the budget on its own gets a batch of its own.
    """
    order = [int(i) for i in rng.permutation(np.asarray(indices, dtype=np.int64))]
    chunk = batch_size * CHUNK_BATCHES
    batches: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lambda i: -lengths[i])
        batch: list[int] = []
        batch_lengths: list[int] = []
        for i in part:
            if batch and (len(batch) >= batch_size or batch_tokens([*batch_lengths, lengths[i]]) > max_tokens):
                batches.append(batch)
                batch, batch_lengths = [], []
            batch.append(i)
            batch_lengths.append(lengths[i])
        if batch:
            batches.append(batch)
    return [batches[k] for k in rng.permutation(len(batches))]


def padding_share(
    batches: Sequence[Sequence[int]], lengths: Sequence[int], batch_tokens: Callable[[Sequence[int]], int]
) -> float:
    """Share of the batches' token slots that are padding."""
    slots = sum(batch_tokens([lengths[i] for i in b]) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / slots if slots else 0.0


def span_count(n_doc_examples: int, n_spans: int, mix: MixConfig) -> int:
    """Span examples in one epoch that holds ``n_doc_examples`` document examples."""
    share = float(mix.span_share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"mix.span_share must be in [0, 1], got {share}")
    if n_spans == 0 or share == 0.0:
        return 0
    n = n_spans if share == 1.0 or n_doc_examples == 0 else round(n_doc_examples * share / (1.0 - share))
    cap = mix.max_span_examples_per_epoch
    return n if cap is None else min(n, int(cap))


def draw(pool: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices below ``pool``: without replacement while possible, then another permutation."""
    if k == 0 or pool == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.permutation(pool) for _ in range(math.ceil(k / pool))])[:k]


def tier_counts(sizes: Mapping[str, int], k: int, alpha: float) -> dict[str, int]:
    """Split ``k`` span draws between tiers of ``sizes`` (examples per tier).

    Tier ``t`` gets a share proportional to ``sizes[t] ** alpha`` -- exponent-smoothed
    sampling as multilingual LMs mix languages (XLM-R, Conneau et al. 2020, sec. 3.1; mT5):
    ``alpha=1`` keeps the tiers' own proportions, ``alpha=0`` gives every non-empty tier
    the same share. Largest-remainder rounding, so the counts sum to ``k``.

    Raises:
        ValueError: ``alpha`` outside [0, 1] (``mix.tier_alpha``).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"mix.tier_alpha={alpha} must be in [0, 1] (1: tiers in proportion to their "
                         "sizes, 0: every tier the same share)")
    w = {t: float(n) ** float(alpha) for t, n in sizes.items() if n > 0}
    counts = dict.fromkeys(sizes, 0)
    if not w or k == 0:
        return counts
    exact = {t: k * v / sum(w.values()) for t, v in w.items()}
    counts.update({t: math.floor(x) for t, x in exact.items()})
    for t in sorted(w, key=lambda t: counts[t] - exact[t])[: k - sum(counts.values())]:
        counts[t] += 1
    return counts


def draw_spans(tiers: Sequence[str], k: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices into a span pool whose example ``i`` is of tier ``tiers[i]``.

    With ``alpha=1`` (or one tier) this is :func:`draw` over the whole pool, so tiers come
    in proportion to their sizes. Otherwise each tier gets the count :func:`tier_counts`
    gives it, drawn from its own pool by :func:`draw`, and the draws are shuffled.
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tiers):
        groups.setdefault(t, []).append(i)
    if float(alpha) == 1.0 or len(groups) <= 1:
        return draw(len(tiers), k, rng)
    counts = tier_counts({t: len(g) for t, g in groups.items()}, k, alpha)
    picked = [np.asarray(g, dtype=np.int64)[draw(len(g), counts[t], rng)] for t, g in groups.items()]
    return rng.permutation(np.concatenate(picked))


@dataclass(frozen=True)
class PlannedBatch:
    indices: tuple[int, ...]
    epoch: int  # data epoch, or WARMUP


class PlanSampler(Sampler[list[int]]):
    """Yields the planned batches of one rank; ``start`` skips consumed ones for one pass.

    With ``step_items`` (one count per batch: the target tokens of the batch's optimiser
    step, :meth:`MixDataModule.step_items`) each batch is yielded as ``(index, count)``
    pairs, which :class:`StepDataset` and :class:`StepCollator` turn into a batch carrying
    :data:`NUM_ITEMS`.
    """

    def __init__(self, batches: Sequence[Sequence[int]], lengths: Sequence[int],
                 step_items: Sequence[int] | None = None) -> None:
        self.batches = [list(b) for b in batches]
        self.lengths = lengths
        if step_items is not None and len(step_items) != len(self.batches):
            raise ValueError(f"{len(step_items)} step counts for {len(self.batches)} batches")
        self.step_items = None if step_items is None else [int(n) for n in step_items]
        self.start = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        start, self.start = self.start, 0
        if self.step_items is None:
            yield from self.batches[start:]
            return
        for b, n in zip(self.batches[start:], self.step_items[start:], strict=True):
            yield [(i, n) for i in b]

    def fingerprint(self, n: int) -> str:
        """Hash of the first ``n`` batches (indices and lengths), to check a resume."""
        digest = hashlib.sha256()
        for b in self.batches[:n]:
            digest.update(repr([(i, self.lengths[i]) for i in b]).encode())
        return digest.hexdigest()[:16]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`PlanSampler` that Lightning checkpoints and restores.

    ``progress`` reports the batches of the current pass the training loop has
    finished (not those fetched ahead of it); without one, the state says 0.
    """

    def __init__(self, dataset: Dataset, plan: PlanSampler, collate_fn: Callable,
                 progress: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=plan, collate_fn=collate_fn, **kwargs)
        self.plan = plan
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        done = int(self.progress()) if self.progress is not None else 0
        return {"batches_done": done, "plan_batches": len(self.plan), "fingerprint": self.plan.fingerprint(done)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        done = int(state["batches_done"])
        if done > len(self.plan) or self.plan.fingerprint(done) != state["fingerprint"]:
            raise ValueError(
                f"cannot resume: the checkpoint consumed {done} batches of a different data plan "
                f"(examples, mix, batch or seed settings changed since it was written)"
            )
        self.plan.start = done


class ListDataset(Dataset):
    def __init__(self, items: Sequence[Mapping[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Mapping[str, Any]:
        return self.items[i]


class JoinedExamples(Sequence):
    """Two example sequences read as one (documents first, then spans), without a copy."""

    def __init__(self, first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]]) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i: int) -> Mapping[str, Any]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]  # type: ignore[return-value]
        if i < 0:
            i += len(self)
        n = len(self.first)
        return self.first[i] if i < n else self.second[i - n]


def _column(examples: Sequence[Mapping[str, Any]], key: str, attribute: str) -> Sequence[Any]:
    """One field of every example: the store's own column when it keeps one (no dict built)."""
    column = getattr(examples, attribute, None)
    return column if column is not None else [ex.get(key) for ex in examples]


class StepDataset(ListDataset):
    """A :class:`ListDataset` indexed by ``(index, step_items)`` pairs (:class:`PlanSampler`
    with ``step_items``): yields ``(example, step_items)``."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            i, n = key
            return self.items[i], int(n)
        return self.items[key]


class StepCollator:
    """Wraps a :class:`Collator`: collates the examples of ``(example, step_items)`` pairs and
    adds :data:`NUM_ITEMS` (a 0-dim long tensor) to the batch; plain examples pass through."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def batch_tokens(self, lengths: Sequence[int]) -> int:
        return self.collator.batch_tokens(lengths)

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        if not items or not isinstance(items[0], tuple):
            return self.collator(items)
        batch = self.collator([ex for ex, _ in items])
        batch[NUM_ITEMS] = torch.tensor(int(items[0][1]), dtype=torch.long)
        return batch


def answer_targets(ex: Mapping[str, Any]) -> int:
    """Target tokens of one tokenised example as the causal-LM loss counts them: the labels
    other than ``-100`` after the one-token shift (``labels[1:]``; the first token is never a
    target, and a packed row sets it to ``-100`` for that reason)."""
    return sum(1 for t in list(ex["labels"])[1:] if t != IGNORE_INDEX)


class ExampleTargets:
    """``targets[i]``: :func:`answer_targets` of example ``i`` of a :class:`JoinedExamples`,
    from a store's own ``targets`` column when it keeps one, else from the example itself,
    read only when asked (a plan draws a fraction of a full-code-space tier; issue 24)."""

    def __init__(self, examples: JoinedExamples) -> None:
        self.examples = examples
        self.columns = [getattr(part, "targets", None) for part in (examples.first, examples.second)]
        self.cache: dict[int, int] = {}

    def __getitem__(self, i: int) -> int:
        n = len(self.examples.first)
        part, j = (0, i) if i < n else (1, i - n)
        column = self.columns[part]
        if column is not None:
            return int(column[j])
        if i not in self.cache:
            self.cache[i] = answer_targets(self.examples[i])
        return self.cache[i]


def _loss_tokens(ex: Mapping[str, Any]) -> int:
    if "prompt_length" in ex:
        return int(ex["length"]) - int(ex["prompt_length"])
    return sum(1 for t in ex["labels"] if t != IGNORE_INDEX)


class MixDataModule(pl.LightningDataModule):
    """Documents + span pairs, mixed per data epoch and batched by length (module docstring).

    ``doc_examples``/``span_examples``/``val_examples`` are results of
    :func:`ccl.data.sft.tokenize_examples`. Give ``collator`` or ``pad_token_id``.
    """

    def __init__(
        self,
        doc_examples: Sequence[Mapping[str, Any]],
        span_examples: Sequence[Mapping[str, Any]],
        mix: MixConfig,
        train: TrainConfig,
        seed: int,
        pad_token_id: int | None = None,
        collator: Collator | None = None,
        val_examples: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if collator is None:
            if pad_token_id is None:
                raise ValueError("MixDataModule needs a collator or a pad_token_id")
            collator = PaddingCollator(pad_token_id)
        # Indexed, never copied: a span tier's examples may be stored compactly
        # (ccl.data.sft.TokenizedExamples) and are turned into dicts only when drawn.
        self.examples = JoinedExamples(doc_examples, span_examples)
        self.n_docs, self.n_spans = len(doc_examples), len(span_examples)
        self.span_tiers = [str(t or "") for t in _column(span_examples, "tier", "tiers")]
        self.lengths = [int(n) for part in (doc_examples, span_examples) for n in _column(part, "length", "lengths")]
        self.targets = ExampleTargets(self.examples)
        self.mix, self.train_cfg, self.seed = mix, train, int(seed)
        self.collator = collator
        self.val_examples = list(val_examples or [])
        self._plan: list[PlannedBatch] | None = None
        self.rank, self.world_size = 0, 1

    # ---------------------------------------------------------------- planning
    def _group(self, indices: Sequence[int], rng: np.random.Generator) -> list[list[int]]:
        return group_by_length(indices, self.lengths, int(self.train_cfg.batch_size),
                               int(self.train_cfg.max_batch_tokens), rng, self.collator.batch_tokens)

    def epoch_indices(self, epoch: int) -> list[int]:
        """Example indices of data epoch ``epoch`` (documents first, then spans)."""
        docs = list(range(self.n_docs)) * int(self.mix.doc_repeats)
        if float(self.mix.span_share) == 1.0:
            docs = []
        k = span_count(len(docs), self.n_spans, self.mix)
        draw_epoch = epoch if self.mix.resample_each_epoch else 0
        spans = self._draw_spans(k, np.random.default_rng([self.seed, draw_epoch, _SPAN_STREAM]))
        return docs + [self.n_docs + int(i) for i in spans]

    def _draw_spans(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return draw_spans(self.span_tiers, k, float(self.mix.tier_alpha), rng)

    def _warmup(self, n_batches: int) -> list[PlannedBatch]:
        if n_batches == 0:
            return []
        if self.n_spans == 0:
            log.warning("mix.span_warmup_steps is set but there are no span examples: no warm-up")
            return []
        rng = np.random.default_rng([self.seed, _WARMUP_STREAM])
        pool = [self.n_docs + int(i) for i in self._draw_spans(n_batches * int(self.train_cfg.batch_size), rng)]
        return [PlannedBatch(tuple(b), WARMUP) for b in self._group(pool, rng)[:n_batches]]

    def build_plan(self, world_size: int = 1) -> list[PlannedBatch]:
        """All batches of the run for all ranks, in order (rank r takes every world_size-th)."""
        cfg = self.train_cfg
        per_step = int(cfg.grad_accum) * world_size
        max_steps = int(cfg.max_steps) if cfg.max_steps is not None and int(cfg.max_steps) > 0 else None
        max_epochs = int(cfg.max_epochs) if cfg.max_epochs is not None and int(cfg.max_epochs) > 0 else None
        if max_steps is None and max_epochs is None:
            raise ValueError("train.max_steps or train.max_epochs must be positive to plan the run")
        needed = max_steps * per_step if max_steps is not None else None
        plan = self._warmup(int(self.mix.span_warmup_steps) * per_step)
        if needed is not None:
            plan = plan[:needed]
        epoch = 0
        while (needed is None or len(plan) < needed) and (max_epochs is None or epoch < max_epochs):
            indices = self.epoch_indices(epoch)
            if not indices:
                raise ValueError("no training examples: no document examples and no span examples")
            rng = np.random.default_rng([self.seed, epoch, _BATCH_STREAM])
            plan += [PlannedBatch(tuple(b), epoch) for b in self._group(indices, rng)]
            epoch += 1
        if needed is not None:
            plan = plan[:needed]
        return plan[: len(plan) - len(plan) % world_size]  # every rank gets as many batches

    @property
    def plan(self) -> list[PlannedBatch]:
        if self._plan is None:
            self._plan = self.build_plan(self.world_size)
        return self._plan

    @property
    def planned_steps(self) -> int:
        """Optimiser steps the plan feeds (per rank)."""
        return math.ceil(len(self.plan) / self.world_size / int(self.train_cfg.grad_accum))

    def step_items(self) -> list[int]:
        """Per batch of :attr:`plan`: the target tokens (:func:`answer_targets`) of the whole
        optimiser step it belongs to, summed over the step's ``train.grad_accum x world_size``
        batches (every rank's micro-batches; a short last step over the batches it has)."""
        per_step = int(self.train_cfg.grad_accum) * self.world_size
        counts: list[int] = []
        for s in range(0, len(self.plan), per_step):
            step = self.plan[s : s + per_step]
            counts += [sum(self.targets[i] for b in step for i in b.indices)] * len(step)
        return counts

    # --------------------------------------------------------------- lightning
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        if trainer is not None and (trainer.world_size, trainer.global_rank) != (self.world_size, self.rank):
            self.world_size, self.rank = int(trainer.world_size), int(trainer.global_rank)
            self._plan = None
        if stage in (None, "fit"):
            longest = max(self.lengths, default=0)
            if self.collator.batch_tokens([longest]) > int(self.train_cfg.max_batch_tokens):
                log.warning("an example of %d tokens exceeds train.max_batch_tokens=%d; it gets a batch "
                            "of its own", longest, self.train_cfg.max_batch_tokens)
            log.info("data plan: %s", self.report()["total"])

    def _batches_done(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> ResumableDataLoader:
        mine = [list(b.indices) for b in self.plan[self.rank :: self.world_size]]
        items = self.step_items()[self.rank :: self.world_size]
        return ResumableDataLoader(StepDataset(self.examples), PlanSampler(mine, self.lengths, items),
                                   StepCollator(self.collator), progress=self._batches_done)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_examples:
            return []
        lengths = [int(ex["length"]) for ex in self.val_examples]
        rng = np.random.default_rng([self.seed, _VAL_STREAM])
        batches = group_by_length(range(len(lengths)), lengths, int(self.train_cfg.batch_size),
                                  int(self.train_cfg.max_batch_tokens), rng, self.collator.batch_tokens)
        return DataLoader(ListDataset(self.val_examples), batch_sampler=batches, collate_fn=self.collator)

    # ------------------------------------------------------------------ report
    def _summary(self, batches: Sequence[PlannedBatch]) -> dict[str, Any]:
        kinds = Counter(self.examples[i]["kind"] for b in batches for i in b.indices)
        tiers = Counter(self.examples[i].get("tier") for b in batches for i in b.indices
                        if self.examples[i]["kind"] == "span")
        tokens = sum(self.lengths[i] for b in batches for i in b.indices)
        slots = sum(self.collator.batch_tokens([self.lengths[i] for i in b.indices]) for b in batches)
        return {
            "batches": len(batches),
            "examples": dict(sorted(kinds.items())),
            "span_tiers": dict(sorted((str(t or "?"), n) for t, n in tiers.items())),
            "tokens": tokens,
            "loss_tokens": sum(_loss_tokens(self.examples[i]) for b in batches for i in b.indices),
            "batch_tokens": slots,
            "padding_share": round(1.0 - tokens / slots, 4) if slots else 0.0,
        }

    def report(self) -> dict[str, Any]:
        """Per data epoch (``warmup`` first): batches, examples by kind, tokens, padding share."""
        by_epoch: dict[int, list[PlannedBatch]] = {}
        for b in self.plan:
            by_epoch.setdefault(b.epoch, []).append(b)
        epochs = {("warmup" if e == WARMUP else str(e)): self._summary(bs) for e, bs in sorted(by_epoch.items())}
        total = self._summary(self.plan) | {"optimizer_steps": self.planned_steps, "data_epochs": sum(
            1 for e in by_epoch if e != WARMUP)}
        return {"epochs": epochs, "total": total}
