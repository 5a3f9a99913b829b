"""``python -m ccl.bench cost``: training FLOPs per epoch of document SFT vs CCL from a recipe's token
lengths, beside the paper's 70 h vs 4 h per epoch."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ccl.bench.common import ratio, train_flops
from ccl.config import compose_config, tiny_settings
from ccl.data.datamodule import MixDataModule
from ccl.data.sft import build_examples, tokenize_examples
from ccl.model.smollm2 import smollm2_dir
from ccl.model.tiny import build_tiny
from ccl.predict.serving import tiny_corpus
from ccl.stages.data import build_data

PAPER_HOURS = {"document SFT": 70.0, "CCL": 4.0}  # per epoch, the paper's Table 2
# (layers, attention width n_heads * head_dim) of backbones whose config is not at hand.
ARCHITECTURES = {
    "qwen3_4b": (36, 4096),
    "smollm2_135m": (30, 576),
    "llama31_8b": (32, 4096),
    "llama32_1b": (16, 2048),
    "llama32_3b": (28, 3072),
    "qwen25_0_5b": (24, 896),
    "qwen25_1_5b": (28, 1536),
    "qwen25_7b": (28, 3584),
}


def recipe_lengths(cfg: DictConfig, work_dir: Path, all_spans: bool = False) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Token lengths of the training documents and of the first CCL data epoch (the mix's draw).

    With ``all_spans`` the CCL epoch is the documents (x ``mix.doc_repeats``) plus
    every span pair once, whatever ``mix.span_share`` says.

    Returns (document SFT lengths, CCL epoch lengths, span examples, tokenizer used).
    """

    bundle = build_data(cfg, work_dir, Console(quiet=True))
    tokenizer, which = cost_tokenizer(cfg, bundle)
    doc_ex, span_ex, _ = build_examples(cfg, bundle)
    use_chat, max_len = bool(cfg.backbone.use_chat_template), int(cfg.backbone.max_length)
    docs = tokenize_examples(tokenizer, doc_ex, use_chat, max_len)[0]
    spans = tokenize_examples(tokenizer, span_ex, use_chat, max_len)[0] if span_ex else []
    dm = MixDataModule(docs, spans, cfg.mix, cfg.train, seed=int(cfg.seed), pad_token_id=0)
    if all_spans:
        indices = list(range(len(docs))) * int(cfg.mix.doc_repeats) + list(range(len(docs), len(dm.examples)))
    else:
        indices = dm.epoch_indices(0)
    lengths = np.asarray(dm.lengths, dtype=np.int64)
    n_spans = sum(1 for i in indices if i >= len(docs))
    return lengths[: len(docs)], lengths[indices], n_spans, which


def cost_tokenizer(cfg: DictConfig, bundle: Any) -> tuple[Any, str]:
    """The backbone's tokenizer when it is on this machine, else SmolLM2's as a stand-in."""
    from transformers import AutoTokenizer

    cache = Path(cfg.paths.cache_dir)
    kind = str(cfg.backbone.kind)
    if kind == "tiny":
        return AutoTokenizer.from_pretrained(build_tiny(cfg.backbone, tiny_corpus(bundle), cache)), "tiny"
    source = smollm2_dir(cache) if kind == "smollm2" else cfg.backbone.pretrained
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True), str(cfg.backbone.name)
    except (OSError, ValueError, TypeError):
        return AutoTokenizer.from_pretrained(smollm2_dir(cache)), "smollm2_135m (stand-in: backbone not here)"


def architecture(cfg: DictConfig) -> tuple[int | None, int | None]:
    if str(cfg.backbone.kind) == "tiny":
        tiny = tiny_settings(cfg.backbone)
        return int(tiny.num_layers), int(tiny.hidden_size)
    return ARCHITECTURES.get(str(cfg.backbone.name), (None, None))


def bench_cost(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    cfg = compose_config(["logger=none", *overrides])
    n_params = cfg.backbone.n_params
    if not n_params:
        raise ValueError(f"backbone {cfg.backbone.name!r} has no backbone.n_params: set it to estimate FLOPs")
    with tempfile.TemporaryDirectory() as work:
        docs, ccl, n_spans, which = recipe_lengths(cfg, Path(work), args.ccl_all_spans)
    if args.sft_docs and len(docs):  # the document SFT corpus at its real size, same length distribution
        docs = np.resize(docs, int(args.sft_docs))
    if args.sft_doc_tokens and len(docs):  # its documents' mean length, same shape
        docs = np.maximum(1, np.round(docs * (float(args.sft_doc_tokens) / docs.mean()))).astype(np.int64)
    layers, width = architecture(cfg)
    recipes = {"document SFT": train_flops(docs, n_params, layers, width),
               "CCL": train_flops(ccl, n_params, layers, width)}
    examples = {"document SFT": len(docs), "CCL": len(ccl)}
    peak = args.peak_tflops * 1e12
    hours = {k: v["total"] / (peak * args.mfu) / 3600 for k, v in recipes.items()}
    result = {
        "benchmark": "cost", "command": args.command_line, "backbone": str(cfg.backbone.name),
        "n_params": float(n_params), "layers": layers, "attention_width": width, "tokenizer": which,
        "docs": str(cfg.docs.name), "span_examples_per_epoch": n_spans,
        "assumed": {"peak_tflops": args.peak_tflops, "mfu": args.mfu, "sft_docs": args.sft_docs,
                    "sft_doc_tokens": args.sft_doc_tokens, "ccl_all_spans": args.ccl_all_spans},
        "recipes": {k: {"examples": examples[k], **{f: float(v) for f, v in r.items()},
                        "mean_tokens": round(r["tokens"] / max(1, examples[k]), 1),
                        "gpu_hours": round(hours[k], 4)} for k, r in recipes.items()},
        "flops_ratio": ratio(recipes["document SFT"]["total"], recipes["CCL"]["total"]),
        "paper_ratio": ratio(PAPER_HOURS["document SFT"], PAPER_HOURS["CCL"]),
    }
    table = Table(title=f"training cost per epoch, {cfg.backbone.name} ({n_params:.3g} parameters), "
                        f"docs={cfg.docs.name}")
    for col in ("recipe", "examples", "tokens", "mean tokens", "6N FLOPs", "attention FLOPs", "total FLOPs",
                f"h @ {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s", "paper h"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for k, r in recipes.items():
        table.add_row(k, f"{examples[k]:,}", f"{r['tokens']:,.0f}", f"{r['tokens'] / max(1, examples[k]):,.0f}",
                      f"{r['dense']:.3g}", f"{r['attention']:.3g}", f"{r['total']:.3g}", f"{hours[k]:.3g}",
                      f"{PAPER_HOURS[k]:g}")
    console.print(table)
    console.print(f"document SFT / CCL: [bold]{result['flops_ratio']}x[/] FLOPs per epoch "
                  f"(paper: 70 h / 4 h = {result['paper_ratio']}x); tokenizer: {which}"
                  + ("" if layers else "; attention not counted (architecture unknown)"))
    return result
