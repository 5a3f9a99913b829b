"""Backbone factory: load a causal LM + tokenizer, then set its training mode."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ccl.config import BackboneConfig, TrainConfig
from ccl.generation.chat import has_chat_template
from ccl.model.code_tokens import code_token_ids
from ccl.model.smollm2 import smollm2_dir
from ccl.model.tiny import build_tiny

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TRAIN_MODES = ("lora", "full", "none")


def resolve_dtype(name: str) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, else float32."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(
            f"backbone.dtype: unknown dtype {name!r}; expected auto or one of {sorted(DTYPES)}"
        )
    return DTYPES[name]


def resolve_attn_implementation(name: str) -> str:
    """``auto``: flash_attention_2 when flash-attn is installed and CUDA is up, else sdpa."""
    if name != "auto":
        return name
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def _backbone_dir(cfg: BackboneConfig, cache_dir: Path, tiny_corpus: Iterable[str]) -> str:
    if cfg.kind == "tiny":
        return str(build_tiny(cfg, tiny_corpus, cache_dir))
    if cfg.kind == "smollm2":
        return str(smollm2_dir(cache_dir))
    if cfg.kind == "hub":
        if not cfg.pretrained:
            raise ValueError(
                f"backbone {cfg.name!r}: kind=hub needs backbone.pretrained (a hub id or local dir)"
            )
        if _looks_like_path(cfg.pretrained) and not Path(cfg.pretrained).expanduser().is_dir():
            raise FileNotFoundError(
                f"backbone {cfg.name!r}: local directory {cfg.pretrained!r} does not exist"
            )
        return (
            str(Path(cfg.pretrained).expanduser())
            if _looks_like_path(cfg.pretrained)
            else cfg.pretrained
        )
    raise ValueError(
        f"backbone {cfg.name!r}: unknown kind {cfg.kind!r}; expected tiny, smollm2 or hub"
    )


def load_backbone(
    cfg: BackboneConfig, cache_dir: Path, tiny_corpus: Iterable[str] = ()
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model and tokenizer that ``cfg`` names (tiny and smollm2 are built/cached first)."""
    source = _backbone_dir(cfg, Path(cache_dir), tiny_corpus)
    dtype = resolve_dtype(cfg.dtype)
    attn = resolve_attn_implementation(cfg.attn_implementation)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attn)
    except OSError as err:
        raise OSError(
            f"backbone {cfg.name!r}: could not load {source!r} ({err}). No model hub is reachable "
            "on CPU machines: download the weights elsewhere and set backbone.pretrained to the local directory."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.model_max_length = cfg.max_length
    chat = has_chat_template(tokenizer)
    if cfg.use_chat_template and not chat:
        log.warning(
            "backbone %s: use_chat_template is set but the tokenizer has no chat template", cfg.name
        )
    log.info(
        "backbone %s from %s: dtype=%s attn=%s chat_template=%s",
        cfg.name,
        source,
        dtype,
        attn,
        chat,
    )
    return model, tokenizer


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _lora_targets(model: nn.Module, wanted: list[str]) -> list[str]:
    present = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"
    }
    targets = [name for name in wanted if name in present]
    if not targets:
        raise ValueError(
            f"train.lora.target_modules {wanted} match no linear layer of the model; it has {sorted(present)}"
        )
    return targets


def _lora_model(model: PreTrainedModel, train_cfg: TrainConfig, code_token_side: str = "output") -> nn.Module:
    from peft import get_peft_model

    from ccl.model.code_rows import store_code_rows_once  # local import: peft, LoRA only

    wrapped = get_peft_model(model, lora_config(model, train_cfg, code_token_side))
    store_code_rows_once(wrapped)  # each code row once (no copy of the original rows)
    return wrapped


def lora_config(model: PreTrainedModel, train_cfg: TrainConfig, code_token_side: str = "output") -> Any:
    """The peft ``LoraConfig`` CCL trains ``model`` with: ``train.lora`` (rank, alpha, dropout,
    target modules, the top ``top_layers`` decoder layers) plus the code-token rows of
    :func:`code_token_targets`. Also what ``python -m ccl.bench train``'s TRL arms get.

    Raises ``ValueError`` for ``top_layers < 1`` or target modules the model lacks.
    """
    from peft import LoraConfig

    lora = train_cfg.lora
    n_layers = model.config.num_hidden_layers
    layers = None
    if lora.top_layers is not None and lora.top_layers < n_layers:
        if lora.top_layers < 1:
            raise ValueError(f"train.lora.top_layers must be >= 1, got {lora.top_layers}")
        layers = list(range(n_layers - lora.top_layers, n_layers))
    trainable_tokens = code_token_targets(model, code_token_side)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=_lora_targets(model, list(lora.target_modules)),
        layers_to_transform=layers,
        layers_pattern="layers" if layers is not None else None,
        trainable_token_indices=trainable_tokens,
        task_type="CAUSAL_LM",
    )


CODE_TOKEN_SIDES = ("output", "both")


def code_token_targets(model: nn.Module, side: str) -> dict[str, list[int]] | None:
    """peft ``trainable_token_indices`` for the code tokens of ``model`` (None when it has none).

    ``side="output"``: only the output head (``lm_head``) rows train. The input rows keep
    their description-mean start, so no embedding output requires grad and backward
    stops at the lowest LoRA layer (issue 12: with trainable input rows and tied
    embeddings it ran through all 30 SmolLM2 layers while only the top 8 train). With
    tied embeddings peft then gives ``lm_head`` its own delta, so the head rows differ
    from the (shared) input rows; merging must untie the head first (see
    :func:`ccl.model.code_tokens.merge_code_rows`).
    ``side="both"``: input and output rows (one shared delta when tied): the old path, no
    longer a config key, kept for ``ccl.bench``'s ``before`` arm to measure it.
    """
    if side not in CODE_TOKEN_SIDES:
        raise ValueError(f"code_token_side: unknown side {side!r}; expected one of {CODE_TOKEN_SIDES}")
    token_ids = code_token_ids(model)
    if not token_ids:
        return None
    head = model.get_output_embeddings()
    if side == "output" and head is not None:
        return {_module_name(model, head): token_ids}
    targets = {_module_name(model, model.get_input_embeddings()): token_ids}
    if not model.config.tie_word_embeddings and head is not None:
        targets[_module_name(model, head)] = token_ids
    return targets


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ValueError("module not found in model")


def apply_training_mode(
    model: PreTrainedModel, train_cfg: TrainConfig, code_token_side: str = "output"
) -> nn.Module:
    """Wrap/freeze ``model`` for ``train_cfg.mode`` (lora | full | none) and return it.

    ``code_token_side``: which code-token rows train under LoRA, see :func:`code_token_targets`
    (every run: ``output``; ``both`` only in ``ccl.bench``'s ``before`` arm).
    """
    if train_cfg.mode not in TRAIN_MODES:
        raise ValueError(
            f"train.mode: unknown mode {train_cfg.mode!r}; expected one of {TRAIN_MODES}"
        )
    if train_cfg.mode == "none":
        model.requires_grad_(False)
        return model.eval()
    if train_cfg.gradient_checkpointing:
        _enable_checkpointing(model)
    if train_cfg.mode == "full":
        model.requires_grad_(True)
    else:
        model = _lora_model(model, train_cfg, code_token_side)
        if train_cfg.gradient_checkpointing:
            # Frozen embeddings give checkpointed blocks inputs without grad; this re-enables it.
            model.enable_input_require_grads()
    return model.train()


def _enable_checkpointing(model: PreTrainedModel) -> None:
    model.config.use_cache = False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
