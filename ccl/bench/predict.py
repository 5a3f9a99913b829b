"""``python -m ccl.bench predict``: documents/s of batched, length-sorted generation vs one at a time."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ccl.bench.common import machine_info, ratio
from ccl.config import compose_config
from ccl.data.prompt_builder import limits_from_config
from ccl.generation.chat import encode_prompts
from ccl.generation.hf_engine import HFEngine, common_prefix_length
from ccl.predict.serving import load_model
from ccl.stages.data import build_data
from ccl.stages.predict import build_prompts


def bench_predict(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:

    cfg = compose_config([f"backbone={args.backbone}", "logger=none", "train=none", *overrides])
    with tempfile.TemporaryDirectory() as work:
        bundle = build_data(cfg, Path(work), Console(quiet=True))
        model, tokenizer = load_model(cfg, bundle, Path(cfg.paths.cache_dir))
    model.eval()
    docs = bundle.docs[str(cfg.infer.split)][: args.docs]
    prompts = build_prompts(
        tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), False,
        limits_from_config(cfg, answer_tokens=int(args.max_new_tokens or cfg.infer.max_new_tokens or 160)),
    ).prompts
    sizes = [int(x) for x in str(args.batch_sizes or cfg.infer.batch_size).split(",")]
    guard = bool(cfg.infer.stop_repeated_lines)

    def engine(batch: int, **kw: Any) -> HFEngine:
        return HFEngine(model, tokenizer, batch, repeat_guard=guard, **kw)

    engines = {f"batched_{k}": (f"batched (batch {k}, sorted, shared prefix once, rows prefilled "
                                f"{'alone' if engine(k).row_prefill else 'padded'}, static KV)", engine(k))
               for k in sizes}
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
