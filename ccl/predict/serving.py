"""The model a run predicts with, in one place: built for the run's data, trained, or served.

- :func:`load_model`: the run's backbone (+ code tokens) before training; a tiny backbone's
  tokenizer is trained on the run's texts (:func:`tiny_corpus`).
- :func:`load_trained`: the model in ``model/`` of a run folder (an adapter on its exact base,
  or the full model), or the bare backbone of a zero-shot run.
- :func:`vllm_serving`: the directories vLLM serves for a run; an adapter vLLM's LoRA loader
  cannot read (code-token rows) is merged into a full model first (:func:`merge_adapter`,
  ``model/merged/``); a LoRA-only adapter is served on its base with the run's tokenizer
  beside it (:func:`served_base`, ``model/served_base/``).

``bundle`` below is the run's :class:`ccl.stages.data.DataBundle` (its documents, span pairs,
code vocabulary and Tabular List), or None where a saved run is used without its data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl.generation.loading import release_accelerator_memory
from ccl.generation.vllm_engine import unsupported_lora_keys
from ccl.icd.tabular import load_tabular
from ccl.model.backbone import load_backbone
from ccl.model.code_rows import load_adapter
from ccl.model.code_tokens import add_code_tokens, merge_code_rows
from ccl.utils.atomic import atomic_dir
from ccl.utils.base_model import resolve_base
from ccl.utils.run_folder import RunFolder, trained_model_meta


def tiny_corpus(bundle: Any) -> list[str]:
    """Texts the tiny backbone's tokenizer is trained on: notes, span evidence, label descriptions."""
    texts = [d.text for split in ("train", "val") for d in bundle.docs.get(split, [])]
    texts += [p.evidence for p in bundle.span_pairs()]
    texts += [f"{c} - {bundle.describe(c)}" for c in sorted(bundle.tab.billable_codes())[::25]]
    texts += [f"{c} - {bundle.describe(c)}" for c in bundle.code_vocabulary()]
    return texts


def load_model(cfg: DictConfig, bundle: Any, cache_dir: Path) -> tuple[Any, Any]:
    """Backbone (+ code tokens when configured), before any training wrapper."""
    model, tokenizer = load_backbone(cfg.backbone, cache_dir, tiny_corpus(bundle))
    if cfg.backbone.code_tokens:
        add_code_tokens(model, tokenizer, bundle.code_vocabulary(), bundle.describe)
    return model, tokenizer


def load_trained(cfg: DictConfig, bundle: Any, run_dir: Path) -> tuple[Any, Any]:
    """The model to predict with: the trained one in ``run_dir/model``, or the bare backbone."""
    cache_dir = Path(cfg.paths.cache_dir)
    model_dir = RunFolder(run_dir).model
    if str(cfg.train.mode) == "none" or not model_dir.exists():
        if str(cfg.train.mode) != "none":
            raise FileNotFoundError(f"{model_dir}: no trained model; run stage=train first")
        if bundle is None:
            if str(cfg.backbone.kind) == "tiny":
                raise ValueError("a zero-shot tiny model is rebuilt from the run's data; use ccl.run stage=predict")
            model, tokenizer = load_backbone(cfg.backbone, cache_dir)
            return model.eval(), tokenizer
        model, tokenizer = load_model(cfg, bundle, cache_dir)
        return model.eval(), tokenizer
    meta = trained_model_meta(run_dir)  # each file checked against its record
    if meta["mode"] == "full":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    # The exact base the adapter was trained on (a tiny model's dir depends on its corpus).
    base_dir = resolve_base(meta, run_dir, configured_cache=cache_dir)  # the run folder may have moved
    base = OmegaConf.merge(cfg.backbone, {"kind": "hub", "pretrained": base_dir})
    model, tokenizer = load_backbone(base, cache_dir)
    if meta.get("code_tokens"):
        tab = bundle.tab if bundle is not None else load_tabular(cfg.icd.tabular_xml, cache_dir)
        add_code_tokens(model, tokenizer, meta["codes"], tab.description)
    model = load_adapter(model, model_dir)  # each code row stored once, as trained
    return model.eval(), tokenizer


MERGE_RTOL = 1e-3  # merged vs adapter logits on the probe, relative to their largest magnitude


def _merge_probe(model: Any, tokenizer: Any) -> torch.Tensor:
    """A short input for the merge check: some text and the last (newest: code) token ids."""
    ids = tokenizer("Assessment: essential hypertension.", add_special_tokens=False)["input_ids"]
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = [*ids, *range(max(0, vocab - 8), vocab)]
    device = next(model.parameters()).device
    return torch.tensor([ids], dtype=torch.long, device=device)


@dataclass
class Serving:
    """What vLLM serves: a model directory, an optional LoRA adapter, the tokenizer directory."""

    model_dir: Path | str
    adapter_dir: Path | None
    tokenizer_dir: Path | str
    merged: bool = False


def merge_adapter(cfg: DictConfig, bundle: Any, run_dir: Path, out_dir: Path) -> Path:
    """Merge the run's trained adapter into a full model saved with its tokenizer in ``out_dir``.

    ``load_trained`` -> :func:`ccl.model.code_tokens.merge_code_rows` (which unties a
    tied head first, so output-side code rows do not overwrite the input rows) ->
    ``save_pretrained``; the saved tokenizer has the code tokens.
    Written to a temporary folder first: an interrupted merge leaves no half model.
    """
    model, tokenizer = load_trained(cfg, bundle, run_dir)
    probe = _merge_probe(model, tokenizer)
    with torch.inference_mode():
        before = model(input_ids=probe).logits.float()
    if hasattr(model, "merge_and_unload"):
        model = merge_code_rows(model)
    with torch.inference_mode():
        after = model(input_ids=probe).logits.float()
    err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-6))
    if err > MERGE_RTOL:
        raise ValueError(
            f"{RunFolder(run_dir).model}: the merged model does not reproduce the adapter's logits (relative "
            f"difference {err:.2g} > {MERGE_RTOL}); vLLM cannot serve this run: use infer=hf")
    with atomic_dir(out_dir, replace=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    del model
    release_accelerator_memory()
    return out_dir


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def served_base(base_dir: Path | str, tokenizer_dir: Path, out_dir: Path) -> Path | str:
    """A folder vLLM reads as one model: the base model's files (symbolic links, no copy) with the
    run's tokenizer files beside them, in ``out_dir`` (rebuilt each call).

    vLLM parses a model config in its ``tokenizer`` folder too, and an adapter folder has none
    (it logs ``Error parsing config for RUN/model`` and retries); handing it this folder as
    model and tokenizer serves the base with the run's tokenizer and no error. ``base_dir``
    that is not a local folder (a hub id) is returned as is.
    """
    base = Path(base_dir)
    if not (base / "config.json").is_file():
        return base_dir
    with atomic_dir(out_dir, replace=True) as tmp:
        for item in base.iterdir():
            if item.name not in TOKENIZER_FILES and not item.name.startswith("."):
                (tmp / item.name).symlink_to(item.resolve())
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, tmp / name)
    return out_dir


def vllm_serving(cfg: DictConfig, bundle: Any, run_dir: Path, console: Console | None = None) -> Serving:
    """The directories vLLM serves for this run.

    A full fine-tune: ``model/`` itself. A LoRA adapter with LoRA matrices only: the base
    the adapter was trained on (``base_dir`` in ``ccl_model.json``) with the run's tokenizer
    beside it (:func:`served_base`, ``model/served_base/``) and ``model/`` as the LoRA request.
    An adapter with other tensors (code tokens: vLLM rejects ``trainable_tokens_delta`` and
    serves the base tokenizer, which has no code tokens): merged into ``model/merged/`` once
    (:func:`merge_adapter`), served without LoRA. Zero-shot: the backbone's directory (or hub id).
    """
    model_dir = RunFolder(run_dir).model
    if str(cfg.train.mode) == "none":
        model, _ = load_trained(cfg, bundle, run_dir)
        base = str(model.config._name_or_path)
        del model
        return Serving(base, None, base)
    meta = trained_model_meta(run_dir)
    if meta["mode"] == "full":
        return Serving(model_dir, None, model_dir)
    unsupported = unsupported_lora_keys(model_dir)
    if not unsupported and not meta.get("code_tokens"):
        meta["base_dir"] = resolve_base(  # the run folder may have moved
            meta, run_dir, configured_cache=Path(cfg.paths.cache_dir))
        base = served_base(meta["base_dir"], model_dir, model_dir / RunFolder.SERVED_BASE)
        return Serving(base, model_dir, base if base != meta["base_dir"] else model_dir)
    merged = model_dir / RunFolder.MERGED
    if not (merged / "config.json").is_file():
        if console:
            console.print(f"[cyan]predict[/]: vLLM cannot load this adapter as LoRA ({len(unsupported)} "
                          f"non-LoRA tensors, e.g. code-token rows); merging it into {merged}")
        merge_adapter(cfg, bundle, run_dir, merged)
    return Serving(merged, None, merged, merged=True)
