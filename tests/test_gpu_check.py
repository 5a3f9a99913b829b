"""experiments/gpu_check.sh --cpu: the GPU check's smoke version runs through every part on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "experiments/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = (tmp_path / "out").glob("gpu_check_cpu_*.json")
    result = json.loads(path.read_text())
    assert result["ok"] and result["mode"] == "cpu"
    assert result["loss_agreement"]["agree"] and result["loss_agreement"]["rel_diff"] < 2e-2
    assert {"packed", "padded"} <= set(result["bench_gpu"]["arms"])
    pipe = result["pipeline"]
    assert "train=lora_gpu" in pipe["overrides"] and pipe["steps"] > 0
    assert pipe["n_truncated_answers"] is not None and pipe["answer_tokens"]["bound"] > pipe["answer_tokens"]["p99"]
    assert (tmp_path / "work" / "backbone" / "tokenizer.json").is_file()
