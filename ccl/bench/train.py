"""``python -m ccl.bench train``: real tokens/s of CCL's packed batches vs padded ones, config arms and
TRL peer arms (:mod:`ccl.bench.peers`), each with its peak RSS and held-out loss."""

from __future__ import annotations

import argparse
import os
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

from ccl.bench.common import ARMS, RssPeak, machine_info, ratio
from ccl.bench.peers import (
    PEER_ARMS,
    TrlArm,
    code_row_snapshot,
    code_rows_changed,
    lora_parameter_count,
)
from ccl.config import compose_config
from ccl.data.datamodule import MixDataModule, PaddingCollator, group_by_length
from ccl.data.packing import PACKED_SDPA, PackingCollator, use_packed_attention
from ccl.data.sft import IGNORE_INDEX, build_examples, tokenize_examples
from ccl.model.backbone import apply_training_mode
from ccl.model.module import causal_lm_forward, model_inputs
from ccl.predict.serving import load_model
from ccl.stages.data import build_data
from ccl.stages.train import frozen_prefix


def build_training_inputs(cfg: DictConfig, work_dir: Path) -> tuple[Any, Any, list[dict], list[dict]]:
    """Model (in its ``train.mode``), tokenizer, document and span examples, as the train stage builds them."""

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




def make_arms(names: Sequence[str], tokenizer: Any, budget: int, row_tokens: int, batch_size: int) -> dict[str, Arm]:
    makers = {  # the model stays on the CPU here (GPU: ccl.bench.gpu), so no flash-attention
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


class ConfigArm:
    """One training configuration with its own model and optimiser, stepped as the train stage steps it.

    Batches: the datamodule's length grouping (``train.batch_size``, ``train.max_batch_tokens``)
    priced by the arm's collator (padding, or packing when ``train.packing``).
    """

    def __init__(self, name: str, cfg: DictConfig, bundle: Any) -> None:
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
    """Config arms (:data:`CONFIG_ARMS`) and peer trainers' arms (:data:`ccl.bench.peers.PEER_ARMS`),
    each with its own model, interleaved round by round over the same examples.

    A peer arm stands beside CCL's ``after`` configuration (the train stage's defaults): its
    model, LoRA and learning rate come from that config. After the last round every arm's
    loss on ``--held-out`` further examples of the same data epoch is measured the same way.
    """
    import resource

    base_cfg = compose_config([f"backbone={args.backbone}", "logger=none", *overrides])
    seed = int(base_cfg.seed)

    def arm_cfg(name: str) -> DictConfig:
        arm_overrides = CONFIG_ARMS["after" if name in PEER_ARMS else name]
        return compose_config([f"backbone={args.backbone}", "logger=none", *overrides, *arm_overrides])

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
        result["vs_before"] = {
            n: {"real_tokens_per_s": ratio(s["real_tokens_per_s"], base["real_tokens_per_s"]),
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
    cfg = compose_config([f"backbone={args.backbone}", "logger=none", *overrides])
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
