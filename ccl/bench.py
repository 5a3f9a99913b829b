"""``python -m ccl.bench train|predict|cost|data|scale``: measured speed against the obvious baseline.

* ``train``   real (non-padding) tokens/s and the share of computed tokens that
  are real: CCL's packing collator with token-budget batches vs random
  fixed-size batches padded to the longest (HF ``DataCollatorForSeq2Seq``),
  same examples, same model, the arms interleaved round by round; config arms
  (``--arms before,after,after_packed``, :data:`CONFIG_ARMS`) and TRL ``SFTTrainer`` arms
  (``trl_fast``, ``trl_default``: :mod:`ccl.bench_peers`, the ``peers`` extra) each train
  their own model, with peak RSS and a held-out loss per arm;
* ``predict`` documents/s of batched, length-sorted generation
  (:class:`~ccl.generation.hf_engine.HFEngine`) vs one document at a time;
* ``cost``    training FLOPs per epoch of document SFT vs CCL from a recipe's
  token lengths, beside the paper's 70 h vs 4 h per epoch;
* ``data``    seconds to parse the Alphabetic Index and build the full gold
  tier, and to load the Tabular List cold and cached;
* ``scale``   each data step at MIMIC-IV size on a synthetic corpus of ``--notes N``
  admissions (time and peak RSS per step, each in its own process: :mod:`ccl.bench_scale`).

Options come first (``--name value``); anything ``key=value`` is a Hydra
override of ``conf/`` as for ``python -m ccl.run``. Each command prints a
table and the command line, and ``--out FILE`` keeps the numbers as JSON with
the machine they ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ccl.bench_peers import (
    PEER_ARMS,
    TrlArm,
    code_row_snapshot,
    code_rows_changed,
    lora_parameter_count,
)
from ccl.cli_errors import cli_main
from ccl.config import compose_config, tiny_settings
from ccl.data.packing import PACKED_SDPA, PackingCollator, use_packed_attention
from ccl.data.prompt_builder import limits_from_config
from ccl.data.sft import IGNORE_INDEX, tokenize_examples
from ccl.expansion.gold import build_gold_tier
from ccl.generation.chat import encode_prompts
from ccl.icd.download import find_index_files
from ccl.icd.index import parse_index_xml
from ccl.icd.tabular import load_tabular
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


# ------------------------------------------------------------------ shared pieces


def compose(overrides: Sequence[str]) -> DictConfig:
    """The run config of ``conf/`` with Hydra overrides (:func:`ccl.config.compose_config`)."""
    return compose_config(overrides)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the CPU is shared: the load average says how much)."""
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line(argv: Sequence[str]) -> str:
    return "python -m ccl.bench " + shlex.join(argv)


def write_result(path: str | None, result: dict[str, Any], console: Console) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results: {out}")


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


# ----------------------------------------------------------------------- FLOPs


def attention_flops(lengths: Sequence[int] | np.ndarray, n_layers: int, attn_width: int) -> float:
    """Forward + backward FLOPs of causal attention (QK^T and AV) over sequences of ``lengths``.

    Per layer a sequence of n does n(n+1)/2 query-key pairs, each 2 matmuls of
    ``attn_width`` multiply-adds (x2 FLOPs) forward, x3 with the backward.
    """
    n = np.asarray(lengths, dtype=np.float64)
    return float(3 * 2 * 2 * n_layers * attn_width * (n * (n + 1) / 2).sum())


def train_flops(
    lengths: Sequence[int] | np.ndarray, n_params: float, n_layers: int | None, attn_width: int | None
) -> dict[str, float]:
    """``6 N`` per token (forward 2N, backward 4N) plus causal attention; attention 0 when unknown."""
    tokens = float(np.asarray(lengths, dtype=np.float64).sum())
    dense = 6.0 * float(n_params) * tokens
    attn = attention_flops(lengths, n_layers, attn_width) if n_layers and attn_width else 0.0
    return {"tokens": tokens, "dense": dense, "attention": attn, "total": dense + attn}


# ----------------------------------------------------------------------- train


def build_training_inputs(cfg: DictConfig, work_dir: Path) -> tuple[Any, Any, list[dict], list[dict]]:
    """Model (in its ``train.mode``), tokenizer, document and span examples, as the train stage builds them."""
    # why: transformers + lightning: slow import (~3 s), not for --help
    from ccl.model.backbone import apply_training_mode
    from ccl.stages.train import build_examples, load_model

    bundle = build_data(cfg, work_dir, Console(quiet=True))
    model, tokenizer = load_model(cfg, bundle, Path(cfg.paths.cache_dir))
    model = apply_training_mode(model, cfg.train)
    doc_ex, span_ex, _ = build_examples(cfg, bundle)
    use_chat, max_len = bool(cfg.backbone.use_chat_template), int(cfg.backbone.max_length)
    docs, _ = tokenize_examples(tokenizer, doc_ex, use_chat, max_len)
    spans, _ = tokenize_examples(tokenizer, span_ex, use_chat, max_len) if span_ex else ([], None)
    return model, tokenizer, docs, spans


def epoch_sample(docs: list[dict], spans: list[dict], cfg: DictConfig, n: int, seed: int) -> list[dict]:
    """``n`` examples of the first data epoch of the mix (documents and spans in the mix's share)."""
    return epoch_split(docs, spans, cfg, n, 0, seed)[0]


def epoch_split(docs: list[dict], spans: list[dict], cfg: DictConfig, n: int, held_out: int,
                seed: int) -> tuple[list[dict], list[dict]]:
    """:func:`epoch_sample`'s ``n`` examples, and up to ``held_out`` other positions of the same epoch.

    The held-out draw (its own generator) leaves the sample as :func:`epoch_sample` draws it.
    """
    # why: lightning: slow import (~3 s), not for --help
    from ccl.data.datamodule import MixDataModule

    dm = MixDataModule(docs, spans, cfg.mix, cfg.train, seed=seed, pad_token_id=0)
    indices = dm.epoch_indices(0)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(indices), size=min(n, len(indices)), replace=False)
    rest = np.setdiff1d(np.arange(len(indices)), chosen)
    others = np.random.default_rng([seed, 1]).permutation(rest)[:held_out]
    return [dm.examples[indices[int(i)]] for i in chosen], [dm.examples[indices[int(i)]] for i in others]


class Arm:
    """One way of batching: how to cut examples into batches, collate them, and the attention kernel."""

    def __init__(self, name: str, plan: Callable[[list[dict], np.random.Generator], list[list[dict]]],
                 collate: Callable[[list[dict]], dict[str, torch.Tensor]], attn: str) -> None:
        self.name, self.plan, self.collate, self.attn = name, plan, collate, attn
        self.seconds = self.cpu_seconds = 0.0
        self.real = self.computed = self.steps = self.examples = 0

    def run(self, model: Any, optimizer: torch.optim.Optimizer, examples: list[dict],
            rng: np.random.Generator, count: bool = True) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.set_attn_implementation(self.attn)
        start, cpu_start = time.perf_counter(), time.process_time()
        real = computed = steps = 0
        for batch_examples in self.plan(examples, rng):
            batch = self.collate(batch_examples)
            # why: lightning: slow import (~3 s), not for --help
            from ccl.model.module import causal_lm_forward, model_inputs

            positions = "answer" if "loss_mask" in batch else "all"
            causal_lm_forward(model, model_inputs(batch, positions)).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            real += sum(len(ex["input_ids"]) for ex in batch_examples)
            computed += batch["input_ids"].numel()
            steps += 1
        if count:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu_start
            self.real, self.computed = self.real + real, self.computed + computed
            self.steps, self.examples = self.steps + steps, self.examples + len(examples)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "attn_implementation": self.attn,
            "real_tokens": self.real, "computed_tokens": self.computed,
            "real_share": round(self.real / self.computed, 4) if self.computed else 0.0,
            "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
            "real_tokens_per_s": round(self.real / self.seconds, 1) if self.seconds else 0.0,
            "real_tokens_per_cpu_s": round(self.real / self.cpu_seconds, 1) if self.cpu_seconds else 0.0,
            "steps": self.steps, "examples": self.examples,
        }


def packed_arm(pad_id: int, budget: int, row_tokens: int, attn: str) -> Arm:
    """CCL: token-budget batches (the datamodule's grouping, priced by the packer), packed."""
    # why: lightning: slow import (~3 s), not for --help
    from ccl.data.datamodule import group_by_length

    collator = PackingCollator(row_tokens, pad_id, attn_implementation=attn)

    def plan(examples: list[dict], rng: np.random.Generator) -> list[list[dict]]:
        lengths = [len(ex["input_ids"]) for ex in examples]
        batches = group_by_length(range(len(examples)), lengths, len(examples), budget, rng, collator.batch_tokens)
        return [[examples[i] for i in b] for b in batches]

    layout = "one row, attention per example" if collator.flatten else f"rows <= {row_tokens}, 4D block mask"
    return Arm(f"CCL packed, {budget} tokens/batch ({layout})", plan, collator, attn)


def padded_arm(tokenizer: Any, batch_size: int) -> Arm:
    """What a HF Trainer user writes: shuffled fixed-size batches, ``DataCollatorForSeq2Seq`` padding."""
    from transformers import DataCollatorForSeq2Seq

    hf = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)

    def plan(examples: list[dict], rng: np.random.Generator) -> list[list[dict]]:
        order = rng.permutation(len(examples))
        return [[examples[int(i)] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        return hf([{"input_ids": ex["input_ids"], "attention_mask": [1] * len(ex["input_ids"]),
                    "labels": ex["labels"]} for ex in examples])

    return Arm(f"padded baseline, batch {batch_size} padded to the longest", plan, collate, "sdpa")


ARMS = ("packed", "packed_mask", "padded")


def make_arms(names: Sequence[str], tokenizer: Any, budget: int, row_tokens: int, batch_size: int) -> dict[str, Arm]:
    makers = {  # the model stays on the CPU here (GPU: ccl.bench_gpu), so no flash-attention
        "packed": lambda: packed_arm(tokenizer.pad_token_id, budget, row_tokens, PACKED_SDPA),
        "packed_mask": lambda: packed_arm(tokenizer.pad_token_id, budget, row_tokens, "sdpa"),
        "padded": lambda: padded_arm(tokenizer, batch_size),
    }
    unknown = sorted(set(names) - set(makers))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}: expected some of {list(makers)}")
    return {n: makers[n]() for n in names}


# Arms that differ by config: the training step as the train stage runs it before and after
# issue 12's fixes (code rows on both sides + logits everywhere vs output rows + answer logits).
CONFIG_ARMS: dict[str, tuple[str, ...]] = {
    "before": ("train.packing=false", "train.frozen_prefix_cache=false"),
    "after": ("train.packing=false", "train.frozen_prefix_cache=false"),
    "after_packed": ("train.packing=true", "train.frozen_prefix_cache=false"),
    # + the frozen lower layers run once per distinct example (see --repeat)
    "after_prefix": ("train.packing=false", "train.frozen_prefix_cache=true"),
}
# The old path's two settings are no config keys any more (ccl.config.RETIRED_KEYS): the bench
# alone sets them, per arm; every other arm (and every run) trains as the defaults here say.
OLD_PATH: dict[str, dict[str, str]] = {"before": {"code_token_side": "both", "loss_positions": "all"}}
NEW_PATH = {"code_token_side": "output", "loss_positions": "answer"}


def arm_settings(name: str) -> list[str]:
    """Config overrides and bench-only settings (``bench.X=...``) of config arm ``name``, as recorded."""
    path = OLD_PATH.get(name, NEW_PATH)
    return [*(f"bench.{k}={v}" for k, v in path.items()), *CONFIG_ARMS[name]]


class RssPeak:
    """Peak resident memory (bytes) of this process while a block runs, sampled every ``interval`` s.

    Freed heap is handed back to the OS first (glibc ``malloc_trim``) so that an
    earlier block's peak does not hide this one's.
    """

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        import psutil

        self.interval, self.process, self.threading = interval, psutil.Process(), threading
        self.start = self.peak = 0

    def __enter__(self) -> RssPeak:
        _malloc_trim()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = self.threading.Event()
        self._thread = self.threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _malloc_trim() -> None:
    import ctypes
    import gc

    gc.collect()
    # Not glibc: the peaks may then include earlier arms' freed heap.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class ConfigArm:
    """One training configuration with its own model and optimiser, stepped as the train stage steps it.

    Batches: the datamodule's length grouping (``train.batch_size``, ``train.max_batch_tokens``)
    priced by the arm's collator (padding, or packing when ``train.packing``).
    """

    def __init__(self, name: str, cfg: DictConfig, bundle: Any) -> None:
        # why: lightning + transformers: slow import (~3 s), not for --help
        from ccl.data.datamodule import PaddingCollator
        from ccl.model.backbone import apply_training_mode
        from ccl.stages.train import frozen_prefix, load_model

        self.name, self.cfg = name, cfg
        model, tokenizer = load_model(cfg, bundle, Path(cfg.paths.cache_dir))
        self.tokenizer = tokenizer
        self.packing = bool(cfg.train.packing)
        if self.packing and model.config._attn_implementation == "sdpa":
            use_packed_attention(model)
        path = OLD_PATH.get(name, NEW_PATH)
        self.model = apply_training_mode(model, cfg.train, path["code_token_side"]).train()
        self.prefix = frozen_prefix(cfg, self.model, self.packing)
        self.loss_positions = path["loss_positions"]
        attn = self.model.get_base_model().config._attn_implementation
        self.collator = (PackingCollator(int(cfg.backbone.max_length), tokenizer.pad_token_id, attn_implementation=attn,
                                         loss_positions_only=self.loss_positions == "answer")
                         if self.packing else PaddingCollator(tokenizer.pad_token_id))
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=float(cfg.train.lr))
        self.layers = self.model.get_base_model().model.layers
        self.reached: set[int] = set()
        for i, layer in enumerate(self.layers):
            layer.register_full_backward_hook(lambda m, gi, go, i=i: self.reached.add(i))
        self.seconds = self.cpu_seconds = 0.0
        self.real = self.computed = self.answer = self.steps = 0
        self.peak_rss = self.peak_rss_increase = 0
        self.train_loss: list[float] = []
        self.code_rows = code_row_snapshot(self.model)

    def run(self, examples: list[dict], rng: np.random.Generator, count: bool = True) -> None:
        # why: lightning: slow import (~3 s), not for --help
        from ccl.data.datamodule import group_by_length
        from ccl.model.module import causal_lm_forward, model_inputs

        lengths = [len(ex["input_ids"]) for ex in examples]
        batches = group_by_length(range(len(examples)), lengths, int(self.cfg.train.batch_size),
                                  int(self.cfg.train.max_batch_tokens), rng, self.collator.batch_tokens)
        real = computed = answer = 0
        losses = []
        with RssPeak() as rss:
            start, cpu_start = time.perf_counter(), time.process_time()
            for b in batches:
                batch = self.collator([examples[i] for i in b])
                loss = causal_lm_forward(self.model, model_inputs(batch, self.loss_positions), self.prefix).loss
                loss.backward()
                losses.append(float(loss.detach()))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                real += sum(lengths[i] for i in b)
                computed += batch["input_ids"].numel()
                answer += int((batch["labels"] != IGNORE_INDEX).sum())
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        if count:
            self.seconds, self.cpu_seconds = self.seconds + seconds, self.cpu_seconds + cpu_seconds
            self.real, self.computed, self.answer = self.real + real, self.computed + computed, self.answer + answer
            self.steps += len(batches)
            self.peak_rss = max(self.peak_rss, rss.peak)
            self.peak_rss_increase = max(self.peak_rss_increase, rss.peak - rss.start)
            self.train_loss.append(float(np.mean(losses)) if losses else float("nan"))

    def summary(self) -> dict[str, Any]:
        mib = 2**20
        return {
            "name": self.name, "trainer": "ccl", "overrides": arm_settings(self.name),
            "attn_implementation": str(self.model.get_base_model().config._attn_implementation),
            "train_loss_per_round": [round(x, 4) for x in self.train_loss],
            "code_rows_trained": code_rows_changed(self.model, self.code_rows),
            "lora_parameters": lora_parameter_count(self.model),
            "layers_reached_by_backward": sorted(self.reached), "n_layers": len(self.layers),
            "steps": self.steps, "real_tokens": self.real, "computed_tokens": self.computed,
            "answer_tokens": self.answer, "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "real_tokens_per_s": round(self.real / self.seconds, 1) if self.seconds else 0.0,
            "real_tokens_per_cpu_s": round(self.real / self.cpu_seconds, 1) if self.cpu_seconds else 0.0,
            "peak_rss_mib": round(self.peak_rss / mib), "peak_rss_increase_mib": round(self.peak_rss_increase / mib),
        }


def held_out_loss(model: Any, examples: list[dict], pad_token_id: int) -> float:
    """Mean cross-entropy (nats) per answer token of ``examples`` under ``model``, one example at a time.

    The same function for every arm (CCL's and peers'), in eval mode (no dropout), logits at
    every position; the model is put back in training mode afterwards.
    """
    # why: lightning: slow import (~3 s), not for --help
    from ccl.data.datamodule import PaddingCollator

    collate = PaddingCollator(pad_token_id)
    total = tokens = 0.0
    model.eval()
    try:
        with torch.no_grad():
            for ex in examples:
                batch = collate([ex])
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits[0, :-1].float()
                labels = batch["labels"][0, 1:]
                keep = labels != IGNORE_INDEX
                total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
                tokens += int(keep.sum())
    finally:
        model.train()
    return total / tokens if tokens else float("nan")


def bench_train_configs(args: argparse.Namespace, overrides: list[str], console: Console,
                        names: list[str]) -> dict[str, Any]:
    """Config arms (:data:`CONFIG_ARMS`) and peer trainers' arms (:data:`ccl.bench_peers.PEER_ARMS`),
    each with its own model, interleaved round by round over the same examples.

    A peer arm stands beside CCL's ``after`` configuration (the train stage's defaults): its
    model, LoRA and learning rate come from that config. After the last round every arm's
    loss on ``--held-out`` further examples of the same data epoch is measured the same way.
    """
    import resource

    # why: lightning: slow import (~3 s), not for --help
    from ccl.stages.train import build_examples

    base_cfg = compose([f"backbone={args.backbone}", "logger=none", *overrides])
    seed = int(base_cfg.seed)

    def arm_cfg(name: str) -> DictConfig:
        arm_overrides = CONFIG_ARMS["after" if name in PEER_ARMS else name]
        return compose([f"backbone={args.backbone}", "logger=none", *overrides, *arm_overrides])

    with tempfile.TemporaryDirectory() as work:
        bundle = build_data(base_cfg, Path(work), Console(quiet=True))
        arms: dict[str, Any] = {n: (TrlArm if n in PEER_ARMS else ConfigArm)(n, arm_cfg(n), bundle) for n in names}
    tokenizer_cfg = base_cfg
    tok = next(iter(arms.values())).tokenizer  # with the code tokens, as every arm has it
    doc_ex, span_ex, _ = build_examples(tokenizer_cfg, bundle)
    use_chat, max_len = bool(tokenizer_cfg.backbone.use_chat_template), int(tokenizer_cfg.backbone.max_length)
    docs, _ = tokenize_examples(tok, doc_ex, use_chat, max_len)
    spans, _ = tokenize_examples(tok, span_ex, use_chat, max_len) if span_ex else ([], None)
    sample, held_out = epoch_split(docs, spans, tokenizer_cfg, args.examples, args.held_out, seed)
    warm = sample[:2]  # allocator and kernels; each arm's optimizer state
    for arm in arms.values():
        arm.run(warm, np.random.default_rng(seed), count=False)
    order = list(arms.values())
    for r, part in enumerate(np.array_split(np.arange(len(sample)), args.rounds)):
        examples = [sample[int(i)] for i in part]
        for arm in order[r % len(order):] + order[: r % len(order)]:
            for e in range(args.repeat):  # data epochs over the round's examples, as a run repeats them
                arm.run(examples, np.random.default_rng([seed, r, e]))
            console.print(f"[dim]round {r}: {arm.name} done[/]")
    summaries = {n: a.summary() for n, a in arms.items()}
    if held_out:
        for n, a in arms.items():
            summaries[n]["held_out_loss"] = round(held_out_loss(a.model, held_out, tok.pad_token_id), 4)
    kinds = {k: sum(1 for ex in sample if ex["kind"] == k) for k in ("doc", "span")}
    result: dict[str, Any] = {
        "benchmark": "train", "command": args.command_line, "backbone": str(base_cfg.backbone.name),
        "train_mode": str(base_cfg.train.mode), "examples": kinds, "rounds": args.rounds, "repeat": args.repeat,
        "held_out_examples": len(held_out),
        "batch_size": int(base_cfg.train.batch_size), "max_batch_tokens": int(base_cfg.train.max_batch_tokens),
        "threads": torch.get_num_threads(), "arms": summaries,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": list(os.getloadavg()),
    }
    if "before" in summaries:
        base = summaries["before"]
        result["vs_before"] = {n: {"real_tokens_per_s": ratio(s["real_tokens_per_s"], base["real_tokens_per_s"]),
                                   "peak_rss_increase": ratio(s["peak_rss_increase_mib"], base["peak_rss_increase_mib"])}
                               for n, s in summaries.items() if n != "before"}
    peers = [n for n in summaries if n in PEER_ARMS]
    if peers:
        best = max(peers, key=lambda n: summaries[n]["real_tokens_per_cpu_s"])
        b = summaries[best]
        result["vs_best_peer"] = {"peer": best, **{
            n: {"real_tokens_per_s": ratio(s["real_tokens_per_s"], b["real_tokens_per_s"]),
                "real_tokens_per_cpu_s": ratio(s["real_tokens_per_cpu_s"], b["real_tokens_per_cpu_s"]),
                "peak_rss_increase": ratio(s["peak_rss_increase_mib"], b["peak_rss_increase_mib"])}
            for n, s in summaries.items() if n not in PEER_ARMS}}
    result["machine"] = machine_info()
    title = "peer trainers beside CCL" if peers else "train step before/after issue 12"
    table = Table(title=f"{title}, {base_cfg.backbone.name} ({base_cfg.train.mode}), "
                        f"{kinds['doc']} documents + {kinds['span']} spans, {args.rounds} interleaved rounds")
    for col in ("arm", "layers with grad", "steps", "real tokens", "computed", "wall s", "real tok/s",
                "real tok/CPU s", "peak RSS MiB", "peak RSS rise MiB", "held-out loss"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for s in summaries.values():
        reached = s["layers_reached_by_backward"]
        span = f"{reached[0]}-{reached[-1]} ({len(reached)}/{s['n_layers']})" if reached else "none"
        table.add_row(s["name"], span, str(s["steps"]), f"{s['real_tokens']:,}", f"{s['computed_tokens']:,}",
                      f"{s['seconds']:.1f}", f"{s['real_tokens_per_s']:,.0f}", f"{s['real_tokens_per_cpu_s']:,.0f}",
                      f"{s['peak_rss_mib']:,}", f"{s['peak_rss_increase_mib']:,}", str(s.get("held_out_loss", "-")))
    console.print(table)
    return result


def bench_train(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    names = args.arms.split(",")
    own_model = set(CONFIG_ARMS) | set(PEER_ARMS)
    if any(n in own_model for n in names):
        if not all(n in own_model for n in names):
            raise ValueError(f"--arms: config and peer arms {sorted(own_model)} cannot be mixed with {list(ARMS)}")
        return bench_train_configs(args, overrides, console, names)
    cfg = compose([f"backbone={args.backbone}", "logger=none", *overrides])
    seed = int(cfg.seed)
    with tempfile.TemporaryDirectory() as work:
        model, tokenizer, docs, spans = build_training_inputs(cfg, Path(work))
    use_packed_attention(model.get_base_model() if hasattr(model, "get_base_model") else model)
    sample = epoch_sample(docs, spans, cfg, args.examples, seed)
    budget = int(args.budget or cfg.train.max_batch_tokens)
    row_tokens = int(args.row_tokens or max(len(ex["input_ids"]) for ex in sample))
    arms = make_arms(args.arms.split(","), tokenizer, budget, row_tokens, args.batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    warm = sample[: max(args.batch_size, 4)]
    for arm in arms.values():  # warm-up: allocator, kernels, optimizer state
        arm.run(model, optimizer, warm, np.random.default_rng(seed), count=False)
    order = list(arms.values())
    for r, part in enumerate(np.array_split(np.arange(len(sample)), args.rounds)):
        examples = [sample[int(i)] for i in part]
        for arm in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
            arm.run(model, optimizer, examples, np.random.default_rng([seed, r]))
    summaries = {name: arm.summary() for name, arm in arms.items()}
    kinds = {k: sum(1 for ex in sample if ex["kind"] == k) for k in ("doc", "span")}
    result: dict[str, Any] = {
        "benchmark": "train", "command": args.command_line, "backbone": str(cfg.backbone.name),
        "train_mode": str(cfg.train.mode), "examples": kinds, "rounds": args.rounds,
        "budget_tokens": budget, "row_tokens": row_tokens, "arms": summaries,
    }
    if "padded" in summaries:
        for key, rate in (("real_token_throughput_vs_padded", "real_tokens_per_s"),
                          ("real_token_throughput_vs_padded_cpu_time", "real_tokens_per_cpu_s")):
            base = summaries["padded"][rate]
            result[key] = {n: ratio(s[rate], base) for n, s in summaries.items() if n != "padded"}
    result["machine"] = machine_info()
    table = Table(title=f"train throughput, {cfg.backbone.name} ({cfg.train.mode}), "
                        f"{kinds['doc']} documents + {kinds['span']} spans, {args.rounds} interleaved rounds")
    for col in ("arm", "steps", "real tokens", "computed", "real share", "wall s", "real tok/s", "vs padded",
                "CPU s", "real tok/CPU s", "vs padded (CPU)"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for name, s in summaries.items():
        vs = [result.get(k, {}).get(name, 1.0) for k in ("real_token_throughput_vs_padded",
                                                           "real_token_throughput_vs_padded_cpu_time")]
        table.add_row(s["name"], str(s["steps"]), f"{s['real_tokens']:,}", f"{s['computed_tokens']:,}",
                      f"{s['real_share']:.1%}", f"{s['seconds']:.1f}", f"{s['real_tokens_per_s']:,.0f}",
                      f"{vs[0]}x", f"{s['cpu_seconds']:.1f}", f"{s['real_tokens_per_cpu_s']:,.0f}", f"{vs[1]}x")
    console.print(table)
    return result


# --------------------------------------------------------------------- predict


def bench_predict(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    # why: transformers + lightning: slow import (~3 s), not for --help
    from ccl.generation.hf_engine import HFEngine, common_prefix_length
    from ccl.stages.predict import build_prompts
    from ccl.stages.train import load_model

    cfg = compose([f"backbone={args.backbone}", "logger=none", "train=none", *overrides])
    with tempfile.TemporaryDirectory() as work:
        bundle = build_data(cfg, Path(work), Console(quiet=True))
        model, tokenizer = load_model(cfg, bundle, Path(cfg.paths.cache_dir))
    model.eval()
    docs = bundle.docs[str(cfg.infer.split)][: args.docs]
    prompts = build_prompts(tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), False,
                            limits_from_config(cfg, answer_tokens=int(args.max_new_tokens or cfg.infer.max_new_tokens or 160))).prompts
    sizes = [int(x) for x in str(args.batch_sizes or cfg.infer.batch_size).split(",")]
    guard = bool(cfg.infer.stop_repeated_lines)

    def engine(batch: int, **kw: Any) -> HFEngine:
        return HFEngine(model, tokenizer, batch, repeat_guard=guard, **kw)

    engines = {f"batched_{k}": (f"batched (batch {k}, sorted, shared prefix once, rows prefilled "
                                f"{'alone' if engine(k).row_prefill else 'padded'}, static KV)", engine(k)) for k in sizes}
    size = max(sizes)
    engines[f"batched_{size}_padded_prefill"] = (
        f"batched (batch {size}, sorted, padded batch prefill, static KV: before)",
        engine(size, shared_prefix=False, row_prefill=False))
    engines[f"batched_{sizes[0]}_dynamic_cache"] = (
        f"batched (batch {sizes[0]}, sorted, padded batch prefill, dynamic KV)",
        engine(sizes[0], static_cache=False, shared_prefix=False, row_prefill=False))
    engines["single"] = ("one at a time", engine(1))
    new = int(args.max_new_tokens or cfg.infer.max_new_tokens or 160)
    engines["single"][1].generate_ids(prompts[:1], 4)  # warm-up
    wall = dict.fromkeys(engines, 0.0)
    cpu = dict.fromkeys(engines, 0.0)
    prefill = dict.fromkeys(engines, 0.0)
    outputs: dict[str, list[list[int]]] = {name: [] for name in engines}
    names = list(engines)
    chunk = size * max(1, len(prompts) // (size * args.rounds))
    for r, s in enumerate(range(0, len(prompts), chunk)):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            part = prompts[s : s + chunk]
            if args.prefill:  # the prompt and one new token: where the time goes
                c = time.process_time()
                engines[name][1].generate_ids(part, 1)
                prefill[name] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            outputs[name] += engines[name][1].generate_ids(part, new)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
    n = len(prompts)
    prompt_tokens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    new_mean = float(np.mean([len(o) for o in outputs["single"]]))
    arms = {}
    for name, (label, _) in engines.items():
        arms[name] = {"name": label, "wall_seconds": round(wall[name], 2), "cpu_seconds": round(cpu[name], 2),
                      "docs_per_s": round(n / wall[name], 3), "docs_per_cpu_s": round(n / cpu[name], 3),
                      "identical_to_single": outputs[name] == outputs["single"]}
        if args.prefill:  # CPU seconds of the prompts (+1 token), and per further new token and document
            arms[name]["prefill_cpu_seconds"] = round(prefill[name], 2)
            arms[name]["decode_cpu_ms_per_token_per_doc"] = round(
                1000 * (cpu[name] - prefill[name]) / max(1.0, n * (new_mean - 1)), 2)
    encoded = encode_prompts(tokenizer, prompts)
    shared = common_prefix_length(encoded)
    result = {
        "benchmark": "predict", "command": args.command_line, "backbone": str(cfg.backbone.name),
        "documents": n, "batch_sizes": sizes, "max_new_tokens": new, "repeat_guard": guard,
        "prompt_tokens_mean": round(float(np.mean(prompt_tokens)), 1),
        "shared_prefix_tokens": shared,  # the token prefix every prompt starts with
        "new_tokens_mean": round(new_mean, 1),
        "arms": arms,
        "speedup_vs_single": {k: ratio(wall["single"], wall[k]) for k in engines if k != "single"},
        "speedup_vs_single_cpu_time": {k: ratio(cpu["single"], cpu[k]) for k in engines if k != "single"},
        "machine": machine_info(),
    }
    table = Table(title=f"generation, {cfg.backbone.name}: {n} documents (prompts {result['prompt_tokens_mean']:.0f} "
                        f"tokens on average, {shared} shared), up to {new} new tokens")
    for col in ("mode", "wall s", "docs/s", "vs single", "CPU s", "docs/CPU s", "vs single (CPU)",
                "prefill CPU s", "decode CPU ms/token/doc", "same output"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for name, a in arms.items():
        table.add_row(a["name"], f"{a['wall_seconds']:.1f}", f"{a['docs_per_s']:.3f}",
                      f"{result['speedup_vs_single'].get(name, 1.0)}x", f"{a['cpu_seconds']:.1f}",
                      f"{a['docs_per_cpu_s']:.3f}", f"{result['speedup_vs_single_cpu_time'].get(name, 1.0)}x",
                      str(a.get("prefill_cpu_seconds", "-")), str(a.get("decode_cpu_ms_per_token_per_doc", "-")),
                      str(a["identical_to_single"]))
    console.print(table)
    return result


# ------------------------------------------------------------------------ cost


def recipe_lengths(cfg: DictConfig, work_dir: Path, all_spans: bool = False) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Token lengths of the training documents and of the first CCL data epoch (the mix's draw).

    With ``all_spans`` the CCL epoch is the documents (x ``mix.doc_repeats``) plus
    every span pair once, whatever ``mix.span_share`` says.

    Returns (document SFT lengths, CCL epoch lengths, span examples, tokenizer used).
    """
    # why: lightning: slow import (~3 s), not for --help
    from ccl.data.datamodule import MixDataModule
    from ccl.stages.train import build_examples

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

    # why: transformers + lightning: slow import (~3 s), not for --help
    from ccl.model.smollm2 import smollm2_dir
    from ccl.model.tiny import build_tiny
    from ccl.stages.train import tiny_corpus

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
    cfg = compose(["logger=none", *overrides])
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


# ------------------------------------------------------------------------ data

_TABULAR_TIMER = (
    "import sys, time; t = time.perf_counter(); from ccl.icd.tabular import load_tabular; "
    "tab = load_tabular(None, sys.argv[1]); print(time.perf_counter() - t, len(tab))"
)


def _timed_tabular_load(cache_dir: Path) -> float:
    """Seconds to import the module and load the Tabular List in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _TABULAR_TIMER, str(cache_dir)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[0])


def bench_data(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    if not args.icd_dir:
        raise ValueError("data: give --icd-dir, the folder holding the four CDC index XML files")
    files = find_index_files(Path(args.icd_dir))
    if not files:
        raise FileNotFoundError(f"{args.icd_dir}: no ICD-10-CM index XML files found")
    with tempfile.TemporaryDirectory() as cache:
        cold = _timed_tabular_load(Path(cache))
        cached = _timed_tabular_load(Path(cache))
        tab = load_tabular(None, cache)
        t = time.perf_counter()
        parses = [parse_index_xml(p) for p in files.values()]
        parse_s = time.perf_counter() - t
        tier = build_gold_tier(tab, parses, codes=None, cache_dir=cache)
        total = time.perf_counter() - t
    result = {
        "benchmark": "data", "command": args.command_line, "files": {k: str(p) for k, p in files.items()},
        "index_parse_s": round(parse_s, 2), "index_plus_gold_tier_s": round(total, 2),
        "gold_pairs": len(tier.pairs), "tabular_cold_s": round(cold, 2), "tabular_cached_s": round(cached, 2),
        "targets_s": {"index_plus_gold_tier": 30, "tabular_cold": 10, "tabular_cached": 1},
        "machine": machine_info(),
    }
    table = Table(title="ICD-10-CM data speed")
    for col in ("step", "seconds", "target"):
        table.add_column(col, justify="left" if col == "step" else "right")
    table.add_row(f"parse {len(files)} index files", f"{parse_s:.1f}", "")
    table.add_row(f"parse + full gold tier ({len(tier.pairs):,} pairs)", f"{total:.1f}", "<= 30")
    table.add_row("Tabular List, cold (parse + pickle, fresh process)", f"{cold:.2f}", "<= 10")
    table.add_row("Tabular List, cached (fresh process)", f"{cached:.2f}", "<= 1")
    console.print(table)
    return result


# ------------------------------------------------------------------------- CLI

def bench_scale(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    """:func:`ccl.bench_scale.bench_scale` (its own module: the synthetic corpus and the steps)."""
    from ccl.bench_scale import bench_scale as run

    return run(args, overrides, console)


COMMANDS = {"train": bench_train, "predict": bench_predict, "cost": bench_cost, "data": bench_data,
            "scale": bench_scale}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m ccl.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared cores)")
    parser.add_argument("--backbone", default="tiny", help="train/predict: the backbone config to load")
    parser.add_argument("--examples", type=int, default=96, help="train: examples of the mix per arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="train: arms to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="train/predict: interleaved rounds")
    parser.add_argument("--repeat", type=int, default=1,
                        help="train config arms: passes over each round's examples (a run shows each example ~3 times)")
    parser.add_argument("--held-out", type=int, default=0, help="train, config and peer arms: further "
                        "examples of the same epoch each arm's loss is measured on after the last round")
    parser.add_argument("--batch-size", type=int, default=8, help="train: the padded baseline's batch size")
    parser.add_argument("--budget", type=int, default=None, help="train: packed tokens per batch "
                        "(default train.max_batch_tokens)")
    parser.add_argument("--row-tokens", type=int, default=None, help="train: packed row length "
                        "(default: the longest example)")
    parser.add_argument("--docs", type=int, default=16, help="predict: documents")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="predict: new tokens per document "
                        "(default infer.max_new_tokens)")
    parser.add_argument("--batch-sizes", default="8,16", help="predict: generation batch sizes, comma-separated")
    parser.add_argument("--no-prefill", dest="prefill", action="store_false", help="predict: skip the extra "
                        "prompt-only pass that splits the time into prefill and decoding")
    parser.add_argument("--sft-docs", type=int, default=None, help="cost: documents in the document-SFT "
                        "recipe (default: the training split)")
    parser.add_argument("--sft-doc-tokens", type=float, default=None, help="cost: mean tokens of a "
                        "document-SFT example (default: as measured on docs=)")
    parser.add_argument("--ccl-all-spans", action="store_true", help="cost: the CCL epoch takes every span "
                        "pair once (default: as many as mix.span_share says)")
    parser.add_argument("--mfu", type=float, default=0.35, help="cost: assumed model FLOPs utilisation")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="cost: GPU peak bf16 TFLOP/s")
    parser.add_argument("--icd-dir", help="data: folder with the CDC index XML files")
    parser.add_argument("--notes", type=int, default=None, help="scale: training admissions of the "
                        "synthetic MIMIC-IV-shaped corpus (validation and test in the split's proportions)")
    parser.add_argument("--work", default=None, help="scale: folder for the corpus, caches and the run "
                        "folder (default outputs/bench_scale_N)")
    parser.add_argument("--steps", default=None, help="scale: steps to run, comma-separated (default all)")
    parser.add_argument("--seed", type=int, default=0, help="scale: the corpus's seed")
    parser.add_argument("--train-steps", type=int, default=3, help="scale: optimiser steps of the train step")
    parser.add_argument("--regenerate", action="store_true", help="scale: write the corpus even if present")
    args, rest = parser.parse_known_args(list(argv))
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (Hydra overrides look like key=value)")
    return args, rest


@cli_main("ccl.bench")
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    args.command_line = command_line(argv)
    torch.set_num_threads(max(1, args.threads))
    console = Console()
    console.print(f"[dim]{args.command_line}[/]")
    result = COMMANDS[args.command](args, overrides, console)
    write_result(args.out, result, console)
    return result


if __name__ == "__main__":
    main()
