"""DDP on the CPU: two gloo processes under torchrun, a tiny backbone, a fresh run and a cached rerun.

Under torchrun every rank runs the whole pipeline. Rank 0's decision to skip the cached
train stage is broadcast (else rank 1 would wait in ``fit`` for a rank 0 that skipped
it, until the process-group timeout); the data plan and the LR schedule are made for two
processes; rank 0 alone writes the run folder, predicts and scores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "backbone=tiny", "logger=none", "icd.download=false", "docs.demo.n_train=12", "docs.n_val=2", "docs.demo.n_test=3",
    "docs.demo.n_codes=8", "docs.demo.corpus_size=20", "train.max_steps=0", "train.max_epochs=1", "train.batch_size=4",
    "train.grad_accum=1", "mix.span_warmup_steps=0", "infer.max_new_tokens=8", "infer.batch_size=3",
    "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp", "train.save_every_n_steps=100",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(run_dir: Path, cache: Path, logs: Path) -> dict[int, str]:
    """Run ``ccl.run`` on two processes; return each rank's stdout+stderr."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "--log-dir", str(logs), "--redirects", "3", "-m", "ccl.run", *OVERRIDES,
           f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = {}
    for rank in (0, 1):
        files = sorted(logs.glob(f"*/attempt_0/{rank}/std*.log"))
        out[rank] = "".join(f.read_text() for f in files)
    assert done.returncode == 0, f"torchrun failed:\n{done.stderr[-3000:]}\nrank 0:\n{out[0][-3000:]}"
    return out


def test_ddp_fresh_run_and_cached_rerun_finish(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    fresh = torchrun(run_dir, cache, tmp_path / "logs1")
    meta = json.loads((run_dir / "model" / "ccl_model.json").read_text())
    # Planned for two processes: each takes every other batch, the schedule spans its steps.
    assert meta["world_size"] == 2 and meta["steps"] == meta["plan"]["total"]["batches"] // 2
    assert (run_dir / "predictions.jsonl").is_file() and (run_dir / "metrics.json").is_file()
    # Rank 0 alone predicts, scores and reports; rank 1 trains only.
    assert "run folder:" in fresh[0] and "run folder:" not in fresh[1]
    assert "predict" in fresh[0] and "predict" not in fresh[1]
    assert not list(run_dir.rglob("*.tmp"))

    cached = torchrun(run_dir, cache, tmp_path / "logs2")
    assert "train[/]: cached" in cached[0] or "train: cached" in cached[0]
    assert "Trainer.fit" not in cached[0] + cached[1]  # neither rank entered fit
