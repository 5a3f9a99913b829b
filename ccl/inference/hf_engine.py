"""Batched greedy decoding with Hugging Face ``generate``, on CPU or GPU.

Prompts are encoded exactly as in training (:func:`ccl.data.sft.encode_prompts`),
sorted longest first (so a batch that does not fit in memory fails at once and
batches waste little padding), LEFT-padded into batches of ``batch_size``, and
decoded back into the caller's order. Only the new tokens are decoded, up to
the first stop token (the tokenizer's EOS, the model's generation EOS ids and
any ``stop_token_ids``), with special tokens skipped.

Batches of several prompts decode with a preallocated (static) KV cache: the
default dynamic cache concatenates every layer's keys and values at each step,
which for a batch of 8-16 rows on a CPU costs as much as the model itself
(``python -m ccl.bench predict``). A single prompt keeps the dynamic cache,
which is faster for one row. ``static_cache=False`` turns this off.

``repeat_guard=True`` ends a section whose line repeats
(:class:`~ccl.inference.guards.RepeatedLineGuard`), so a looping model still
reaches its codes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from transformers import LogitsProcessorList

from ccl.data.sft import encode_prompts
from ccl.inference.guards import RepeatedLineGuard, starts_in_codes


def _as_set(ids: Any) -> set[int]:
    if ids is None:
        return set()
    return {int(i) for i in ids} if isinstance(ids, list | tuple | set) else {int(ids)}


class HFEngine:
    """Greedy (``temperature == 0``) or sampled generation with ``model.generate``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        temperature: float = 0.0,
        stop_token_ids: Sequence[int] = (),
        progress: bool = False,
        static_cache: bool = True,
        repeat_guard: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.temperature, self.progress = int(batch_size), float(temperature), progress
        self.static_cache = bool(static_cache)
        self.repeat_guard = bool(repeat_guard)
        self.guard_cuts = 0  # rows' sections ended by the guard in the last call
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.stop_ids = sorted(_as_set(tokenizer.eos_token_id) | _as_set(gen_eos) | _as_set(list(stop_token_ids)))
        if not self.stop_ids:
            raise ValueError("the tokenizer has no eos_token_id and no stop_token_ids were given")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.stop_ids[0]

    def _batches(self, order: list[int]) -> Iterator[list[int]]:
        for s in range(0, len(order), self.batch_size):
            yield order[s : s + self.batch_size]

    def _sampling(self) -> dict[str, Any]:
        if self.temperature > 0:
            return {"do_sample": True, "temperature": self.temperature}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def _cache(self, rows: int) -> dict[str, Any]:
        return {"cache_implementation": "static"} if self.static_cache and rows > 1 else {}

    def _guard(self, width: int, in_codes: list[bool]) -> RepeatedLineGuard | None:
        if not self.repeat_guard:
            return None
        return RepeatedLineGuard(
            self.tokenizer, width, in_codes, stop_id=self.stop_ids[0], finished_ids=[*self.stop_ids, self.pad_id]
        )

    def generate_ids(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """New token ids per prompt, in input order, cut before the first stop token."""
        ids = encode_prompts(self.tokenizer, prompts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[int]] = [[] for _ in ids]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        stop = set(self.stop_ids)
        self.guard_cuts = 0
        try:
            with torch.inference_mode(), self._bar(len(ids)) as advance:
                for batch in self._batches(order):
                    width = max(len(ids[i]) for i in batch)
                    input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    for row, i in enumerate(batch):
                        input_ids[row, width - len(ids[i]) :] = torch.as_tensor(ids[i], dtype=torch.long)
                        mask[row, width - len(ids[i]) :] = 1
                    guard = self._guard(width, [starts_in_codes(prompts[i]) for i in batch])
                    generated = self.model.generate(
                        input_ids=input_ids.to(device),
                        attention_mask=mask.to(device),
                        max_new_tokens=int(max_new_tokens),
                        num_beams=1,
                        eos_token_id=self.stop_ids,
                        pad_token_id=self.pad_id,
                        **self._cache(len(batch)),
                        **self._sampling(),
                        **({"logits_processor": LogitsProcessorList([guard])} if guard else {}),
                    )[:, width:].tolist()
                    self.guard_cuts += sum(guard.fired) if guard else 0
                    for i, new in zip(batch, generated, strict=True):
                        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
                        out[i] = new[:cut]
                    advance(len(batch))
        finally:
            self.model.train(was_training)
        return out

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order (new tokens only, special tokens skipped)."""
        new_ids = self.generate_ids(prompts, max_new_tokens)
        return self.tokenizer.batch_decode(new_ids, skip_special_tokens=True)

    def _bar(self, total: int):
        if not self.progress:
            return nullcontext(lambda n: None)
        return _RichBar(total)


class _RichBar:
    """A rich progress bar as a context manager yielding ``advance(n)``."""

    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.task = self.progress.add_task("generating", total=total)

    def __enter__(self):
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
