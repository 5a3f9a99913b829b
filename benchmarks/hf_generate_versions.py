"""HF generate speed of one trained run in the current venv (issue 22: transformers 5.19 vs 5.25).

Loads the run's base + code tokens + LoRA adapter (``--old``: plain ``PeftModel.from_pretrained``,
as the code before the reorganisation did; else :func:`ccl.model.code_rows.load_adapter`), builds
the document prompts of a few fixed notes and times :class:`ccl.generation.hf_engine.HFEngine`
as the predict stage sets it up (batch 16, repeated-line guard, log-probabilities). Prints one
JSON line: versions, generate seconds, forward calls, torch threads, the first answers.
See benchmarks/hf_generate_versions.md for the commands and results.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import transformers
from omegaconf import OmegaConf

from ccl.data.prompt_builder import PromptLimits, build_document_prompts
from ccl.generation.hf_engine import HFEngine
from ccl.icd.tabular import load_tabular
from ccl.model.backbone import load_backbone
from ccl.model.code_rows import load_adapter
from ccl.model.code_tokens import add_code_tokens


def main() -> None:
    """Time one engine call (module docstring)."""
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="/work/runs/base/outputs/ablation_row4")
    p.add_argument("--cache", default="/work/runs/cache_fresh")
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--mode", default="engine")  # engine | bare | bare_nolora
    p.add_argument("--profile", action="store_true")
    p.add_argument("--static", type=int, default=1)
    p.add_argument("--guard", type=int, default=1)
    p.add_argument("--old", action="store_true")
    a = p.parse_args()

    RUN = Path(a.run)

    cfg = OmegaConf.load(RUN / "config.yaml")
    meta = json.loads((RUN / "model/ccl_model.json").read_text())
    base = OmegaConf.merge(cfg.backbone, {"kind": "hub", "pretrained": meta["base_dir"]})
    t0 = time.perf_counter()
    model, tok = load_backbone(base, Path(a.cache))
    if a.mode != "bare_nolora":
        tab = load_tabular(None, a.cache)
        add_code_tokens(model, tok, meta["codes"], tab.description)
        if a.old:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, RUN / "model")
        else:
            model = load_adapter(model, RUN / "model")
    model.eval()
    load = time.perf_counter() - t0
    notes = [
        "Patient is a 67-year-old male with T2DM, BPH and nonrheumatic aortic stenosis admitted for "
        "acidosis. History of nontraumatic intracerebral hemorrhage. Assessment and plan: continue insulin, "
        "tamsulosin; cardiology follow-up for the aortic valve. Lactate trending down.",
        "78-year-old woman with paroxysmal atrial fibrillation, COPD with emphysema and chronic kidney disease "
        "presents with shortness of breath and bilateral leg edema. Echo shows dilated cardiomyopathy. "
        "Plan: diuresis, rate control, anticoagulation. DNR status confirmed.",
        "Follow-up visit for Crohn's disease of the small intestine and alcoholic cirrhosis. Patient reports "
        "urinary frequency; urinalysis consistent with urinary tract infection. Started on antibiotics.",
        "Admitted with acute ischemic stroke, left MCA territory. Past history: coronary artery disease, "
        "long-term insulin use, pressure ulcer of the sacrum. Altered mental status improving.",
    ]
    notes = (notes * 4)[: a.n]
    plan = build_document_prompts(tok, notes, str(cfg.task), True, PromptLimits(None))
    eng = HFEngine(model, tok, batch_size=16, repeat_guard=bool(a.guard), record_logprobs=True,
                   static_cache=bool(a.static))
    calls = {"n": 0}
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.register_forward_hook(lambda m, i, o: calls.__setitem__("n", calls["n"] + 1))
    ctx = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if a.profile else None
    if ctx:
        ctx.__enter__()
    t0 = time.perf_counter()
    if a.mode == "engine":
        outs = eng.complete(plan.prompts, a.new)
        texts = [o.text for o in outs]
    else:
        enc = tok(plan.prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.inference_mode():
            g = model.generate(**enc, max_new_tokens=a.new, do_sample=False, min_new_tokens=a.new)
        texts = tok.batch_decode(g[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    dt = time.perf_counter() - t0
    if ctx:
        ctx.__exit__(None, None, None)
        print(ctx.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(json.dumps({"tf": transformers.__version__, "mode": a.mode, "old": a.old, "n": a.n, "new": a.new,
                      "static": a.static,
                      "load_s": round(load, 1), "gen_s": round(dt, 2), "forwards": calls["n"],
                      "threads": torch.get_num_threads(), "head": [t[:60] for t in texts[:2]]}))


if __name__ == "__main__":
    main()
