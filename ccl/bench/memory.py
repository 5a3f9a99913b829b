"""``python -m ccl.bench.memory``: saved-activation bytes per token of LoRA training, measured.

What a training step keeps for the backward pass is counted exactly, on the CPU: a
randomly initialised Qwen3 with Qwen3-4B's layer sizes (hidden 2,560, MLP 9,728, 32
query / 8 key-value heads of 128) and LoRA r16 on every projection runs one forward
under bf16 autocast (``precision=bf16-mixed``: bf16 weights, fp32 LoRA weights) inside
``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd saves;
each storage is counted once and parameters are not counted. Run with 1 and 2 decoder
layers, the difference is one layer's bytes per token; the rest (embedding output,
final norm, logits and the loss over the full vocabulary) is measured with the real
151,936-token vocabulary. With and without gradient checkpointing (``use_reentrant=False``,
as :func:`ccl.model.backbone.apply_training_mode` sets it).

The extrapolation to the full model: ``layers * per_layer + head`` bytes per token,
plus the weights (bf16) and, with checkpointing, the one layer being recomputed in the
backward pass (its full saved activations, for the tokens of the batch). The batch
token budget that fits a card is then ``(usable - weights) / per_token`` (see
:func:`budget`). Attention through SDPA on the CPU (the math kernel is not used: the
saved tensors are the projections' inputs and outputs, which flash-attention saves too,
plus its O(T) log-sum-exp rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ccl.bench.gpu import QWEN3_4B
from ccl.config import LoraConfig, TrainConfig
from ccl.model.backbone import apply_training_mode

GIB = 1024**3
MIB = 1024**2


def saved_bytes(arch: dict[str, Any], layers: int, tokens: int, checkpointing: bool, rank: int = 16) -> int:
    """Bytes autograd saves in one forward of ``tokens`` tokens (one row), parameters excluded."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(**{**arch, "num_hidden_layers": layers}, attn_implementation="sdpa")
    model = Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16)
    train = TrainConfig(mode="lora", gradient_checkpointing=checkpointing,
                        lora=LoraConfig(r=rank, alpha=2 * rank, top_layers=None))
    model = apply_training_mode(model, train)
    for name, p in model.named_parameters():  # peft keeps LoRA weights fp32 (bf16-mixed)
        if "lora_" in name:
            p.data = p.data.float()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, arch["vocab_size"], (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids, use_cache=False)
    del out, model
    return sum(seen.values())


def measure(tokens: int = 256, rank: int = 16) -> dict[str, Any]:
    """Per-layer and head bytes per token, with and without checkpointing (Qwen3-4B sizes)."""
    small_vocab = {**QWEN3_4B, "vocab_size": 512}
    result: dict[str, Any] = {"tokens": tokens, "lora_rank": rank, "architecture": QWEN3_4B}
    for ckpt in (False, True):
        one = saved_bytes(small_vocab, 1, tokens, ckpt, rank)
        two = saved_bytes(small_vocab, 2, tokens, ckpt, rank)
        full_one = saved_bytes(QWEN3_4B, 1, tokens, ckpt, rank)
        per_layer = (two - one) / tokens
        # Everything outside the decoder layers at the real vocabulary: embedding output, final
        # norm, logits and the loss.
        head = (full_one - per_layer * tokens) / tokens
        key = "checkpointing" if ckpt else "no_checkpointing"
        result[key] = {"per_layer_bytes_per_token": round(per_layer), "head_bytes_per_token": round(head)}
    result["checkpointing"]["recompute_layer_bytes_per_token"] = result["no_checkpointing"][
        "per_layer_bytes_per_token"]
    return result


def budget(model: dict[str, Any], layers: int = 36, card_gib: float = 80.0, usable: float = 0.85,
           weights_gib: float = 7.5) -> dict[str, Any]:
    """Bytes per token of the whole model and the token budget that fits ``card_gib``.

    ``usable``: share of the card left after the CUDA context, allocator fragmentation and
    the optimizer state of the LoRA weights (small). ``weights_gib``: Qwen3-4B in bf16.
    """
    out: dict[str, Any] = {"layers": layers, "card_gib": card_gib, "usable_share": usable,
                           "weights_gib": weights_gib}
    for key in ("no_checkpointing", "checkpointing"):
        m = model[key]
        per_token = layers * m["per_layer_bytes_per_token"] + m["head_bytes_per_token"]
        if key == "checkpointing":
            per_token += m["recompute_layer_bytes_per_token"]
        free = card_gib * usable - weights_gib
        out[key] = {"mib_per_token": round(per_token / MIB, 3),
                    "max_batch_tokens": int(free * GIB / per_token)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ccl.bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens in the measured row")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = measure(args.tokens, args.rank)
    result = {"benchmark": "activation_memory_qwen3_4b", "command": "python -m ccl.bench.memory "
              + " ".join(sys.argv[1:] if argv is None else argv), "measured": model, "qwen3_4b_80gb": budget(model)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
