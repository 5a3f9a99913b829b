"""``python -m ccl.bench.gpu``: Qwen3-4B + LoRA training throughput and MFU, packed vs padded.

Builds a randomly initialised model with Qwen3-4B's architecture from the
config below (no weights, no hub), puts LoRA rank 16 on every projection
(CCL's :func:`~ccl.model.backbone.apply_training_mode`), and trains in bf16 on
one synthetic pool of SFT examples shaped like a CCL mix (long documents and
short span pairs, loss on the answer only), two ways in the same run:

* **packed**: token-budget batches of ``--seq`` (4,096) tokens packed into one
  row by :class:`~ccl.data.packing.PackingCollator`, attention kept per example
  (flash-attention varlen when flash-attn is installed, else one SDPA call per
  example), logits only where a loss is taken;
* **padded**: shuffled batches of ``--padded-batch`` examples padded to the
  longest, ``DataCollatorForSeq2Seq``-style, as a HF Trainer user would run it.

Reported per arm: real (non-padding) tokens/s, the real share of computed
tokens, peak memory and model FLOPs utilisation.

MFU convention. Model FLOPs per step = ``6 N T`` + causal attention
(``6 L d sum(n^2)/2`` over the real sequences, forward + backward), T = real
tokens, N = all parameters with the tied embedding counted once (as the
``lm_head`` matmul). ``6N`` is the usual full fine-tuning count; under LoRA the
frozen weights get no weight gradient, so the hardware does about ``4 N T``:
``hfu_4n`` reports that count beside ``mfu_6n``. Both are divided by the step
time and the GPU's dense bf16 peak (:data:`PEAK_TFLOPS`). Padding is never
counted as useful work, so the padded arm's MFU shows its waste.

``--small`` runs a two-layer Qwen3 on the CPU in float32 in seconds (the test
suite does): the same code path, with no MFU unless ``--peak-tflops`` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccl.bench.common import attention_flops, machine_info
from ccl.config import LoraConfig, TrainConfig
from ccl.data.packing import PACKED_SDPA, PackingCollator, use_packed_attention
from ccl.data.sft import IGNORE_INDEX
from ccl.model.backbone import apply_training_mode
from ccl.model.module import causal_lm_forward, model_inputs

QWEN3_4B = {  # Qwen/Qwen3-4B config.json
    "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
    "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "attention_bias": False,
}
SMALL = {**QWEN3_4B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024}
# Dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


def peak_tflops(device_name: str) -> float | None:
    return next((tf for key, tf in PEAK_TFLOPS if key in device_name), None)


def build_model(arch: dict[str, Any], device: torch.device, dtype: torch.dtype, rank: int) -> Any:
    """Random-initialised Qwen3 with LoRA ``rank`` on q/k/v/o/gate/up/down."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**arch)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(config, dtype=dtype)
    train = TrainConfig(mode="lora", lora=LoraConfig(r=rank, alpha=2 * rank, top_layers=None))
    return apply_training_mode(model, train)


def synthetic_pool(n: int, vocab: int, seq: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Half documents (lognormal lengths around seq/3, loss on their last 15%), half span pairs."""
    examples = []
    for k in range(n):
        if k % 2 == 0:
            length = int(np.clip(rng.lognormal(np.log(seq / 3), 0.5), 64, seq))
            answer = max(1, length * 15 // 100)
        else:
            length = int(rng.integers(max(8, seq // 64), max(9, seq // 32)))
            answer = max(1, length // 5)
        ids = rng.integers(10, vocab, size=length).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (length - answer) + ids[-answer:]})
    return examples


def packed_batches(examples: list[dict], seq: int, collator: PackingCollator) -> list[list[dict]]:
    """Examples in order, cut whenever the next would push a batch past ``seq`` tokens (then FFD-packed)."""
    batches, batch, used = [], [], 0
    for ex in examples:
        n = len(ex["input_ids"])
        if batch and used + n > seq:
            batches.append(batch)
            batch, used = [], 0
        batch.append(ex)
        used += n
    return [*batches, batch] if batch else batches


def pad_collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, ex in enumerate(examples):
        n = len(ex["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(ex["input_ids"]), torch.tensor(ex["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_arm(model: Any, batches: list[list[dict]], collate: Any, attn: str, device: torch.device,
            optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Train on ``batches``; wall time, tokens and the per-example lengths (for attention FLOPs)."""

    model.get_base_model().set_attn_implementation(attn)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    real = computed = 0
    for examples in batches:
        batch = collate(examples)
        positions = "answer" if "loss_mask" in batch else "all"
        inputs = {k: v.to(device, non_blocking=True) for k, v in model_inputs(batch, positions).items()}
        causal_lm_forward(model, inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += sum(len(ex["input_ids"]) for ex in examples)
        computed += batch["input_ids"].numel()
    sync(device)
    seconds = time.perf_counter() - start
    lengths = [len(ex["input_ids"]) for b in batches for ex in b]
    out = {"attn_implementation": attn, "steps": len(batches), "examples": len(lengths), "real_tokens": real,
           "computed_tokens": computed, "real_share": round(real / computed, 4), "seconds": round(seconds, 3),
           "real_tokens_per_s": round(real / seconds, 1), "lengths": lengths}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def run_padded(model: Any, warm: list[dict], examples: list[dict], size: int, device: torch.device,
               optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> tuple[dict[str, Any], int]:
    """The padded arm (warm-up, then timed) at ``size`` examples a batch, halving it on out-of-memory."""
    order = rng.permutation(len(examples))
    failed = []
    while True:
        try:
            run_arm(model, chunks(warm, size), lambda exs: pad_collate(exs, 0), "sdpa", device, optimizer)
            shuffled = [examples[int(i)] for i in order]
            arm = run_arm(model, chunks(shuffled, size), lambda exs: pad_collate(exs, 0), "sdpa", device, optimizer)
            arm["batch_size"] = size
            if failed:
                arm["out_of_memory_at_batch"] = failed
            return arm, size
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            failed.append(size)
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            size //= 2


def chunks(items: list[dict], size: int) -> list[list[dict]]:
    return [items[s : s + size] for s in range(0, len(items), size)]


def add_utilisation(arm: dict[str, Any], n_params: int, layers: int, width: int, peak: float | None) -> None:
    lengths = arm.pop("lengths")
    attn = attention_flops(lengths, layers, width)
    tokens = arm["real_tokens"]
    arm["model_flops_6n"] = 6.0 * n_params * tokens + attn
    arm["hardware_flops_4n"] = 4.0 * n_params * tokens + attn
    if peak:
        per_s = peak * 1e12 * arm["seconds"]
        arm["mfu_6n"] = round(arm["model_flops_6n"] / per_s, 4)
        arm["hfu_4n"] = round(arm["hardware_flops_4n"] / per_s, 4)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ccl.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a two-layer Qwen3 in float32 (runs on a CPU)")
    parser.add_argument("--seq", type=int, default=None, help="packed row length (default 4096; --small 256)")
    parser.add_argument("--steps", type=int, default=12, help="packed steps measured (the padded arm "
                        "trains on the same examples)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed packed and padded steps first")
    parser.add_argument("--padded-batch", type=int, default=2, help="examples per padded batch (halved "
                        "on out-of-memory, which the results then say)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--attn", default="auto", help="packed arm: auto (flash_attention_2 when "
                        f"flash-attn is installed, else {PACKED_SDPA}) or a transformers attn_implementation")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak bf16 TFLOP/s")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    cuda = torch.cuda.is_available()
    if not cuda and not args.small:
        raise SystemExit("ccl.bench.gpu needs a CUDA GPU for Qwen3-4B; --small runs a tiny Qwen3 on the CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    arch = SMALL if args.small else QWEN3_4B
    seq = int(args.seq or (256 if args.small else 4096))
    attn = args.attn
    if attn == "auto":
        attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else PACKED_SDPA
    model = build_model(arch, device, dtype, args.rank)
    use_packed_attention(model.get_base_model())
    base = {id(p): p.numel() for name, p in model.get_base_model().named_parameters() if "lora_" not in name}
    n_params = sum(base.values())  # the model's own parameters (tied embedding once), LoRA excluded
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    rng = np.random.default_rng(0)
    collator = PackingCollator(seq, pad_token_id=0, attn_implementation=attn)
    pool = synthetic_pool(8 * (args.steps + args.warmup) + 16, arch["vocab_size"], seq, rng)
    batches = packed_batches(pool, seq, collator)
    warm, timed = batches[: args.warmup], batches[args.warmup : args.warmup + args.steps]
    timed_examples = [ex for b in timed for ex in b]
    warm_examples = [ex for b in warm for ex in b]
    size = args.padded_batch
    run_arm(model, warm, collator, attn, device, optimizer)
    arms = {"packed": run_arm(model, timed, collator, attn, device, optimizer)}
    arms["padded"], size = run_padded(model, warm_examples, timed_examples, size, device, optimizer, rng)
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    width = arch["num_attention_heads"] * arch["head_dim"]
    for arm in arms.values():
        add_utilisation(arm, n_params, arch["num_hidden_layers"], width, peak)
    result = {
        "benchmark": "gpu_qwen3_lora", "command": "python -m ccl.bench.gpu " + " ".join(args.argv),
        "model": "Qwen3 (--small)" if args.small else "Qwen3-4B architecture, random init",
        "architecture": arch, "parameters": n_params, "trainable_parameters": trainable, "lora_rank": args.rank,
        "dtype": str(dtype).removeprefix("torch."), "seq": seq, "padded_batch": size, "device": name,
        "peak_tflops": peak, "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
        "arms": arms,
        "real_token_throughput_ratio": round(arms["packed"]["real_tokens_per_s"]
                                             / arms["padded"]["real_tokens_per_s"], 2),
        "mfu_convention": "mfu_6n = (6*N*T + causal attention fwd+bwd) / (step time * peak bf16 dense); "
                          "hfu_4n counts 4*N*T (LoRA: no weight gradients for frozen weights); "
                          "T = real tokens, N = all parameters, tied embedding once",
        "machine": machine_info(),
    }
    print_result(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']}, LoRA r{result['lora_rank']}, {result['dtype']}, "
                        f"{result['device']} ({result['parameters'] / 1e9:.2f} B parameters)")
    for col in ("arm", "attention", "steps", "real share", "real tokens/s", "MFU (6N)", "HFU (4N)", "peak GiB"):
        table.add_column(col, justify="left" if col in ("arm", "attention") else "right")
    for name, a in result["arms"].items():
        table.add_row(name, a["attn_implementation"], str(a["steps"]), f"{a['real_share']:.1%}",
                      f"{a['real_tokens_per_s']:,.0f}", f"{a['mfu_6n']:.1%}" if "mfu_6n" in a else "-",
                      f"{a['hfu_4n']:.1%}" if "hfu_4n" in a else "-", str(a.get("peak_memory_gib", "-")))
    console = Console()
    console.print(table)
    console.print(f"packed / padded real tokens/s: {result['real_token_throughput_ratio']}x   ({result['command']})")


if __name__ == "__main__":
    main()
