"""Code tokens over the full code space under LoRA: what is stored, parameters and peak RSS (issue 24).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/code_rows_memory.py \
        --backbone smollm2 [--peft-layers] [--steps 3]

Loads the backbone with Table 3 row 4's training configuration (``+experiment=ablation_row4``:
LoRA r 16 on the top 8 layers, ``backbone.code_token_side=output``), adds one code token per
billable ICD-10-CM code (74,719, the code vocabulary of ``spans.gold.restrict=all``), wraps it
as the train stage does (``apply_training_mode``) and takes ``--steps`` AdamW steps on fixed
batches of 4 examples (prompt of 200 tokens + an answer of 12 code tokens) with answer-only
logits (``train.loss_positions=answer``), code rows at ``train.code_head_lr``. ``--peft-layers``
keeps peft's own trainable-token layers (the code before issue 24's "each code row stored
once"). Prints one JSON line: parameters, stored code-row elements by kind, peak RSS after
wrapping and after training, seconds per step and a digest of the trained code rows and final
logits (equal digests: the same training).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path


def rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)


PHASES: dict[str, float] = {}


def phase(name: str) -> None:
    """Current RSS (GB) at ``name``, from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    PHASES[name] = round(kb / 1024**2, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--peft-layers", action="store_true", help="peft's layers (before the change)")
    parser.add_argument("--cache", default="outputs/cache")
    args = parser.parse_args()

    import torch

    import ccl.model.code_rows as code_rows
    from ccl.config import compose_config
    from ccl.icd.tabular import load_tabular
    from ccl.model.backbone import apply_training_mode, count_parameters, load_backbone
    from ccl.model.code_tokens import add_code_tokens, code_head_parameters
    from ccl.model.module import causal_lm_forward, model_inputs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.peft_layers:
        code_rows.store_code_rows_once = lambda model: 0  # what apply_training_mode called before
    cfg = compose_config([f"backbone={args.backbone}", "+experiment=ablation_row4", "logger=none",
                          f"paths.cache_dir={args.cache}", "icd.download=false"])
    cache = Path(cfg.paths.cache_dir)
    tab = load_tabular(cfg.icd.tabular_xml, cache)
    codes = sorted(tab.billable_codes())
    corpus = [f"{tab.description(c)} {c}" for c in codes[::50]]  # the tiny backbone's tokenizer corpus
    phase("tabular")
    model, tok = load_backbone(cfg.backbone, cache, corpus)
    phase("backbone")
    base_params = count_parameters(model)[1]
    t = time.perf_counter()
    ids = add_code_tokens(model, tok, codes, tab.description)
    add_s = time.perf_counter() - t
    phase("code_tokens")
    model = apply_training_mode(model, cfg.train, str(cfg.backbone.code_token_side))
    trainable, total = count_parameters(model)
    buffers = sum(b.numel() for b in {id(b): b for b in model.buffers()}.values())
    storage = code_rows.code_row_storage(model)
    rss_wrapped = rss_gb()
    phase("wrapped")

    head = {id(p) for p in code_head_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if id(p) not in head], "lr": cfg.train.lr},
         {"params": [p for p in params if id(p) in head], "lr": cfg.train.code_head_lr}], weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, len(tok) - len(ids), (4, 200), generator=gen)
    answer = torch.tensor(ids)[torch.randint(0, len(ids), (4, 12), generator=gen)]
    input_ids = torch.cat([prompt, answer], dim=1)
    labels = torch.cat([torch.full_like(prompt, -100), answer], dim=1)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    model.train()
    step_s = []
    for _ in range(args.steps):
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = causal_lm_forward(model, model_inputs(batch, "answer"))
        phase(f"step{len(step_s)}_forward")
        out.loss.backward()
        phase(f"step{len(step_s)}_backward")
        optimizer.step()
        phase(f"step{len(step_s)}_optimizer")
        step_s.append(round(time.perf_counter() - t, 2))
    model.eval()
    with torch.no_grad():
        logits = causal_lm_forward(model, model_inputs(batch, "answer")).logits
    rows = torch.cat([p.detach().flatten() for p in code_head_parameters(model)])
    result = {
        "backbone": args.backbone, "layers": "peft" if args.peft_layers else "ccl (rows stored once)",
        "code_tokens": len(ids), "code_token_side": str(cfg.backbone.code_token_side),
        "parameters": {"backbone": base_params, "total": total, "trainable": trainable, "buffers": buffers},
        "code_row_elements": storage, "add_code_tokens_s": round(add_s, 1),
        "peak_rss_gb": {"wrapped": rss_wrapped, "after_steps": rss_gb()}, "step_s": step_s,
        "final_loss": round(float(out.loss.detach()), 6), "rss_now_gb": PHASES,
        "digest": {"code_rows": hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16],
                   "logits": hashlib.sha256(logits.float().numpy().tobytes()).hexdigest()[:16]},
        "max_abs_logit": float(logits.abs().max()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    torch.save(logits,
               Path(args.cache) / f"code_rows_logits_{args.backbone}_{'peft' if args.peft_layers else 'ccl'}.pt")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
