"""Profile one round of CCL's packed step and of TRL's fastest arm (benchmarks/peers_cpu.md).

    OMP_NUM_THREADS=1 python benchmarks/peers_cpu_profile.py > benchmarks/peers_cpu_profile.txt

The same 4 examples (round 0 of ``python -m ccl.bench train --examples 12 --rounds 3``) through
``after_packed`` (:class:`ccl.bench.train.ConfigArm`) and ``trl_fast`` (:class:`ccl.bench.peers.TrlArm`),
each warmed up on 2 examples first; torch.profiler's operators by self CPU time, plus what each
arm feeds its attention and its LM head.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccl.bench.peers import TrlArm  # noqa: E402
from ccl.bench.train import CONFIG_ARMS, ConfigArm, epoch_split  # noqa: E402
from ccl.config import compose_config  # noqa: E402
from ccl.data.sft import (
    build_examples,  # noqa: E402
    tokenize_examples,  # noqa: E402
)
from ccl.stages.data import build_data  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    base = ["backbone=smollm2_135m", "logger=none"]
    cfg = compose_config([*base, *CONFIG_ARMS["after_packed"]])
    with tempfile.TemporaryDirectory() as work:
        bundle = build_data(cfg, Path(work), Console(quiet=True))
        arms = {"after_packed": ConfigArm("after_packed", cfg, bundle),
                "trl_fast": TrlArm("trl_fast", compose_config([*base, *CONFIG_ARMS["after"]]), bundle)}
    tok = arms["after_packed"].tokenizer
    doc_ex, span_ex, _ = build_examples(cfg, bundle)
    use_chat, max_len = bool(cfg.backbone.use_chat_template), int(cfg.backbone.max_length)
    docs, _ = tokenize_examples(tok, doc_ex, use_chat, max_len)
    spans, _ = tokenize_examples(tok, span_ex, use_chat, max_len)
    sample, _ = epoch_split(docs, spans, cfg, 12, 0, int(cfg.seed))
    round0 = sample[:4]
    lengths = [len(ex["input_ids"]) for ex in round0]
    answers = sum(int(np.sum(np.asarray(ex["labels"]) != -100)) for ex in round0)
    print(f"round 0: {len(round0)} examples, lengths {lengths} ({sum(lengths)} tokens), {answers} answer tokens")
    for name, arm in arms.items():
        arm.run(sample[:2], np.random.default_rng(0), count=False)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            arm.run(round0, np.random.default_rng([0, 0]))
        s = arm.summary()
        print(f"\n=== {name}: {s['cpu_seconds']} CPU s, {s['steps']} step(s), {s['computed_tokens']} computed "
              f"tokens, attention {s['attn_implementation']}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
