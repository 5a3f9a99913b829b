"""The generation engine interface and the choice between HF generate and vLLM.

``infer.engine=vllm`` on a machine without vLLM or without a CUDA GPU does not
fail: it warns once and falls back to :class:`~ccl.inference.hf_engine.HFEngine`
(with a CPU-sized batch), so one experiment config runs on a laptop and a GPU
node alike. An unknown engine name is an error.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ccl.config import InferConfig
from ccl.inference.hf_engine import HFEngine
from ccl.inference.vllm_engine import VLLMEngine

HF_FALLBACK_BATCH = 16  # vLLM batch sizes (hundreds) are far too large for HF generate


@runtime_checkable
class GenerationEngine(Protocol):
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order."""
        ...


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here, or ``None`` when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def make_engine(
    infer_cfg: InferConfig,
    model: Any,
    tokenizer: Any,
    adapter_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
) -> GenerationEngine:
    """The engine ``infer_cfg.engine`` names, or HF generate when vLLM cannot run here."""
    engine = str(infer_cfg.engine)
    temperature = float(infer_cfg.temperature)
    if engine == "vllm":
        reason = vllm_unavailable_reason()
        if reason is None:
            if model_dir is None:
                raise ValueError("infer.engine=vllm needs model_dir: a saved base (or merged) model directory")
            return VLLMEngine(model_dir, adapter_dir, batch_size=int(infer_cfg.batch_size), temperature=temperature)
        warnings.warn(
            f"infer.engine=vllm: {reason}. vLLM needs a CUDA GPU and `pip install ccl[gpu]`; "
            "falling back to HF generate",
            RuntimeWarning,
            stacklevel=2,
        )
        batch_size = min(int(infer_cfg.batch_size), HF_FALLBACK_BATCH)
    elif engine == "hf":
        batch_size = int(infer_cfg.batch_size)
    else:
        raise ValueError(f"unknown infer.engine {engine!r}: expected 'hf' or 'vllm'")
    if model is None or tokenizer is None:
        raise ValueError("HF generation needs the loaded model and tokenizer")
    return HFEngine(
        model, tokenizer, batch_size=batch_size, temperature=temperature,
        repeat_guard=bool(infer_cfg.stop_repeated_lines), progress=True,
    )
