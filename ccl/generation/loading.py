"""Models and tokenizers for generation: where they run, in which dtype, what stops them.

Prediction generates with the model the train stage saved (:func:`ccl.predict.serving.load_trained`
loads it in ``backbone.dtype``); :func:`inference_device` and :func:`place_model` put it on the
device HF generate runs on. vLLM serves a saved directory; :func:`load_tokenizer` and
:func:`stop_token_ids` read the tokenizer and the stop tokens of that directory, so vLLM stops
where HF generate would.

The span-tier LLM of ``llm=hf`` is any causal LM (:func:`load_causal_lm`), in the dtype
``llm.dtype`` names (:func:`generation_dtype`: ``auto`` is float32 on a CPU and the
checkpoint's own dtype on a GPU) on the device ``llm.device`` names (:func:`generation_device`).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import torch

# llm.dtype names (and their short forms) -> torch dtype names.
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


def inference_device(train_cfg: Any) -> torch.device:
    """Where HF generate runs: CUDA when a GPU is visible and ``train.accelerator`` is
    ``auto``, ``gpu`` or ``cuda``; else the CPU."""
    wanted = str(train_cfg.accelerator).lower()
    if wanted in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def place_model(model: Any, device: torch.device) -> Any:
    """``model`` moved to ``device``; flash-attention is switched to SDPA off CUDA (its
    kernels take CUDA tensors only)."""
    config = getattr(model, "config", None)
    if device.type != "cuda" and getattr(config, "_attn_implementation", None) == "flash_attention_2":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if hasattr(base, "set_attn_implementation"):
            base.set_attn_implementation("sdpa")
        else:
            config._attn_implementation = "sdpa"
    return model.to(device)


def release_accelerator_memory() -> None:
    """Free what earlier stages left (the trained model, its optimizer, cached CUDA blocks)
    so a vLLM engine started next can take ``infer.gpu_memory_utilization`` of the GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def load_tokenizer(path: Path | str) -> Any:
    """The tokenizer saved in ``path``, with EOS as its padding token when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(model_dir: Path | str, tokenizer: Any) -> list[int]:
    """The stop tokens HF generate uses: the tokenizer's EOS and the generation EOS ids of
    ``model_dir/generation_config.json`` (when present), sorted."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    path = Path(model_dir) / "generation_config.json"
    if path.is_file():
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        ids |= {int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None}
    return sorted(ids)


def generation_device(name: str) -> str:
    """``auto``: ``cuda`` when a GPU is visible, else ``cpu``; any other name as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def generation_dtype(name: str, device: str) -> Any:
    """The ``dtype`` to load an span-tier LLM with: the torch dtype ``name`` names
    (:data:`DTYPE_NAMES`), else float32 on a CPU, else ``"auto"`` (the checkpoint's dtype)."""
    if name in DTYPE_NAMES:
        return getattr(torch, DTYPE_NAMES[name])
    return torch.float32 if device == "cpu" else "auto"


def load_causal_lm(where: str, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """(model in eval mode on its device, LEFT-padding tokenizer) from a local directory or hub id.

    ``dtype`` and ``device`` are ``llm.dtype`` / ``llm.device`` names
    (:func:`generation_dtype`, :func:`generation_device`). A tokenizer without a padding token
    pads with EOS (or UNK). Raises ``OSError`` from transformers when ``where`` cannot be loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = generation_device(device)
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=generation_dtype(dtype, device))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model.to(device).eval(), tokenizer
