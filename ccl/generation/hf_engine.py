"""Batched greedy decoding with Hugging Face ``generate``, on CPU or GPU.

Prompts are encoded exactly as in training (:func:`ccl.generation.chat.encode_prompts`),
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

The prompt tokens a batch shares are computed once (``shared_prefix``): every CCL
prompt starts with the same chat template, system prompt and instruction (about a
quarter of its tokens). Their keys and values are computed for one row and copied
to every row of the batch's cache, and the batch is laid out as
``[shared prefix][padding][the row's own tokens]`` with the attention mask zero at the
padding; ``generate`` takes its positions from the mask, so each token keeps the
position it has in its prompt alone. With ``row_prefill`` (the default on a CPU)
each row's own tokens but its last are computed one row at a time, so no padding
is computed at all, and ``generate`` starts from the last column. Greedy outputs
equal one-at-a-time decoding (``tests/test_generation.py``); the logits differ
from it in the last float bits, as any batching does (other matrix shapes).

``repeat_guard=True`` ends a section whose line repeats
(:class:`~ccl.generation.guards.RepeatedLineGuard`), so a looping model still
reaches its codes.

Decoding settings are explicit, so HF and vLLM runs decode alike: the
``repetition_penalty`` given here (1.0: none) is passed to every ``generate`` call and
overrides the one a model ships in its ``generation_config`` (some instruct models
ship 1.05, which vLLM would not apply); ``None`` leaves the model's own in force.
:meth:`HFEngine.complete` also says per prompt whether decoding ended at a stop token or
at ``max_new_tokens`` (``finish_reason`` ``"length"``, as vLLM reports it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer

from ccl.generation.chat import encode_prompts
from ccl.generation.guards import RepeatedLineGuard, starts_in_codes
from ccl.generation.logprobs import TokenLogprobRecorder
from ccl.generation.progress import doc_progress
from ccl.generation.record import Generation, finish_reason

MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth an extra forward


def cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward (and ``generate``) take a KV cache object:
    ``cache`` from transformers 5.24, ``past_key_values`` before (pyproject admits both)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _as_set(ids: Any) -> set[int]:
    if ids is None:
        return set()
    return {int(i) for i in ids} if isinstance(ids, list | tuple | set) else {int(ids)}


def common_prefix_length(rows: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How many leading tokens all ``rows`` share (at most ``limit``)."""
    if not rows:
        return 0
    first, k = rows[0], 0
    n = min(len(r) for r in rows) if limit is None else limit
    while k < n and all(r[k] == first[k] for r in rows):
        k += 1
    return k


class HFEngine:
    """Greedy (``temperature == 0``) or sampled generation with ``model.generate``.

    ``model`` and ``tokenizer``: a loaded causal LM (any device) and its tokenizer; prompts are
    text, encoded by :func:`~ccl.generation.chat.encode_prompts`. ``batch_size``: rows per
    ``generate`` call. ``top_p``: nucleus sampling when sampling (None: the model's own
    setting). ``stop_token_ids`` join the tokenizer's and the model's EOS ids. ``progress``
    shows :func:`~ccl.generation.progress.doc_progress`. ``extra_processors(prompts,
    prompt_width)`` adds logits processors per batch (restricted decoding);
    ``record_logprobs`` keeps each new token's log-probability. Raises ``ValueError`` for
    ``batch_size < 1`` or when no stop token is known.
    """

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
        shared_prefix: bool = True,
        row_prefill: bool | None = None,
        repetition_penalty: float | None = 1.0,
        top_p: float | None = None,
        extra_processors: Callable[[list[str], int], list[LogitsProcessor]] | None = None,
        record_logprobs: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.temperature, self.progress = int(batch_size), float(temperature), progress
        self.static_cache = bool(static_cache)
        self.repeat_guard = bool(repeat_guard)
        self.shared_prefix = bool(shared_prefix)
        # None: the model's generation_config decides (the span-tier backends' behaviour).
        self.repetition_penalty = None if repetition_penalty is None else float(repetition_penalty)
        self.top_p = None if top_p is None else float(top_p)
        self.cache_kw = cache_keyword(model)
        device = next(model.parameters()).device
        self.row_prefill = device.type == "cpu" if row_prefill is None else bool(row_prefill)
        # Issue 16: per-batch logits processors (prompts of the batch, padded prompt width) run
        # before the guard, and the log-probability of every generated token (ccl.predict.scores).
        self.extra_processors = extra_processors
        self.record_logprobs = bool(record_logprobs)
        self.last_ids: list[list[int]] = []  # new token ids of the last call, input order
        self.last_logprobs: list[list[float]] = []  # one per new token (record_logprobs)
        self.guard_cuts = 0  # rows' sections ended by the guard in the last call
        self.shared_tokens = 0  # prompt tokens the last call computed once for several rows
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
        # Explicit, so the model's generation_config cannot add a penalty vLLM would not apply
        # (prediction); None leaves the generation_config's penalty in force (span tiers).
        penalty = {} if self.repetition_penalty is None else {"repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            top_p = {} if self.top_p is None else {"top_p": self.top_p}
            return {"do_sample": True, "temperature": self.temperature, **top_p, **penalty}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **penalty}

    def _static(self, rows: int) -> bool:
        return self.static_cache and rows > 1

    def _cache(self, rows: int) -> dict[str, Any]:
        return {"cache_implementation": "static"} if self._static(rows) else {}

    def _guard(self, width: int, in_codes: list[bool]) -> RepeatedLineGuard | None:
        if not self.repeat_guard:
            return None
        return RepeatedLineGuard(
            self.tokenizer, width, in_codes, stop_id=self.stop_ids[0], finished_ids=[*self.stop_ids, self.pad_id]
        )

    def _shared_prefix(self, rows: list[list[int]]) -> int:
        """Tokens every row of a batch starts with (0: not worth sharing), each row keeping one of its own."""
        if not self.shared_prefix or len(rows) < 2:
            return 0
        k = common_prefix_length(rows, min(len(r) for r in rows) - 1)
        return k if k >= MIN_SHARED_PREFIX else 0

    def _new_cache(self, rows: int, max_len: int) -> Any | None:
        """An empty cache for ``rows`` rows, None unless every layer is plain full attention."""
        config = self.model.config
        dst = StaticCache(config=config, max_cache_len=max_len) if self._static(rows) else DynamicCache(config=config)
        kind = StaticLayer if isinstance(dst, StaticCache) else DynamicLayer
        return dst if all(type(layer) is kind for layer in dst.layers) else None

    def _prefix_cache(self, rows: list[list[int]], shared: int, width: int, max_len: int, device: Any) -> Any | None:
        """The batch's KV cache holding the shared prefix (and, with ``row_prefill``, all but the last column).

        None if the model's cache has other layers than plain full attention.
        """
        dst = self._new_cache(len(rows), max_len)
        if dst is None:
            return None
        src = DynamicCache(config=self.model.config)
        if shared:
            prefix = torch.as_tensor(rows[0][:shared], dtype=torch.long, device=device)[None]
            self.model(input_ids=prefix, **{self.cache_kw: src}, use_cache=True, logits_to_keep=1)
        if not self.row_prefill:
            for s, d in zip(src.layers, dst.layers, strict=True):
                d.update(s.keys.expand(len(rows), -1, -1, -1), s.values.expand(len(rows), -1, -1, -1))
            return dst
        # Each row's own tokens but its last, one row at a time after the shared prefix: no
        # padding is computed; the batch's forward then starts at the last column.
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for row, r in enumerate(rows):  # longest first, so the first row has tokens to compute
            own = DynamicCache(config=self.model.config)
            if shared:
                for s, o in zip(src.layers, own.layers, strict=True):
                    o.update(s.keys, s.values)
            if len(r) - 1 > shared:
                tokens = torch.as_tensor(r[shared:-1], dtype=torch.long, device=device)[None]
                self.model(input_ids=tokens, **{self.cache_kw: own}, use_cache=True, logits_to_keep=1)
            if not keys:
                keys = [o.keys.new_zeros((len(rows), o.keys.shape[1], width - 1, o.keys.shape[-1])) for o in own.layers]
                values = [o.values.new_zeros((len(rows), o.values.shape[1], width - 1, o.values.shape[-1]))
                          for o in own.layers]
            start = width - len(r)
            for o, k, v in zip(own.layers, keys, values, strict=True):
                if len(r) > 1:
                    k[row, :, :shared], v[row, :, :shared] = o.keys[0, :, :shared], o.values[0, :, :shared]
                    k[row, :, start + shared :] = o.keys[0, :, shared:]
                    v[row, :, start + shared :] = o.values[0, :, shared:]
        for d, k, v in zip(dst.layers, keys, values, strict=True):
            d.update(k, v)
        return dst

    def generate_ids(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """New token ids per prompt, in input order, cut before the first stop token."""
        return [ids for ids, _, _ in self._generate(prompts, max_new_tokens)]

    def complete(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        """One :class:`~ccl.generation.record.Generation` per prompt, in input order:
        text (new tokens, special tokens skipped), ids, and ``"length"`` when no stop token
        came within ``max_new_tokens``. With ``record_logprobs`` each also carries
        ``logprobs``, one log-probability per token id (issue 16's code scores)."""
        done = self._generate(prompts, max_new_tokens)
        texts = self.tokenizer.batch_decode([ids for ids, _, _ in done], skip_special_tokens=True)
        return [
            Generation(text, ids, reason, lps if self.record_logprobs else None)
            for text, (ids, reason, lps) in zip(texts, done, strict=True)
        ]

    def _generate(
        self, prompts: Sequence[str], max_new_tokens: int
    ) -> list[tuple[list[int], Any, list[float]]]:
        """(new ids cut before the first stop token, finish reason, their log-probabilities
        (empty unless ``record_logprobs``)) per prompt, in input order."""
        ids = encode_prompts(self.tokenizer, prompts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[tuple[list[int], Any, list[float]]] = [([], "stop", []) for _ in ids]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        stop = set(self.stop_ids)
        self.guard_cuts = 0
        self.shared_tokens = 0
        new_tokens = int(max_new_tokens)
        try:
            with torch.inference_mode(), self._bar(len(ids)) as advance:
                for batch in self._batches(order):
                    rows = [ids[i] for i in batch]
                    width = max(len(r) for r in rows)
                    shared = self._shared_prefix(rows)
                    cache = None
                    if shared or (self.row_prefill and len(rows) > 1 and width > 1):
                        cache = self._prefix_cache(rows, shared, width, width + new_tokens, device)
                        shared = shared if cache is not None else 0
                    # [shared prefix][padding][the row's own tokens]: positions come from the mask,
                    # so every row's tokens keep the positions they have alone.
                    input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                    mask = torch.zeros((len(rows), width), dtype=torch.long)
                    for row, r in enumerate(rows):
                        input_ids[row, :shared] = torch.as_tensor(r[:shared], dtype=torch.long)
                        input_ids[row, width - len(r) + shared :] = torch.as_tensor(r[shared:], dtype=torch.long)
                        mask[row, :shared] = 1
                        mask[row, width - len(r) + shared :] = 1
                    guard = self._guard(width, [starts_in_codes(prompts[i]) for i in batch])
                    processors = (self.extra_processors([prompts[i] for i in batch], width)
                                  if self.extra_processors else [])
                    processors += [guard] if guard else []
                    recorder = TokenLogprobRecorder(len(batch), width) if self.record_logprobs else None
                    processors += [recorder] if recorder else []
                    generated = self.model.generate(
                        input_ids=input_ids.to(device),
                        attention_mask=mask.to(device),
                        max_new_tokens=new_tokens,
                        num_beams=1,
                        eos_token_id=self.stop_ids,
                        pad_token_id=self.pad_id,
                        **({self.cache_kw: cache} if cache is not None else self._cache(len(rows))),
                        **self._sampling(),
                        **({"logits_processor": LogitsProcessorList(processors)} if processors else {}),
                    )[:, width:]
                    lps = recorder.finish(generated[:, -1]) if recorder else [[] for _ in batch]
                    generated = generated.tolist()
                    self.guard_cuts += sum(guard.fired) if guard else 0
                    self.shared_tokens += shared * (len(rows) - 1)
                    for i, new, lp in zip(batch, generated, lps, strict=True):
                        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
                        out[i] = (new[:cut], finish_reason(new, stop, new_tokens), lp[:cut])
                    advance(len(batch))
        finally:
            self.model.train(was_training)
        self.last_ids = [i for i, _, _ in out]
        self.last_logprobs = [lp for _, _, lp in out] if self.record_logprobs else []
        return out

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order (new tokens only, special tokens skipped)."""
        return [g.text for g in self.complete(prompts, max_new_tokens)]

    def _bar(self, total: int):
        if not self.progress:
            return nullcontext(lambda n: None)

        # what the prompts are (documents, windows, evidence phrases): set by the caller
        return doc_progress(total, unit=getattr(self, "progress_unit", "documents"))
