"""Rescore kept run folders (experiments/keep_runs.sh) with issue 23's metrics, in place.

    python experiments/rescore_kept.py benchmarks/table3_cpu/* benchmarks/restrict_cpu/*

From each folder's ``predictions.jsonl``, ``config.yaml`` and ``data/test.jsonl`` it recomputes
what issue 23 changed and updates ``metrics.json``: the MAPs (``map`` becomes
``map_label_space``; ``map_trec`` and ``map_trec_complete`` are added; rows need
``code_scores``), their bootstrap intervals (the run's own settings, ``intervals_info``) and
the ``guidelines`` block (with the gold codes' own counts). Every other number is checked:
the script stops if a recomputed value that issue 23 did not change differs from the kept
one. It prints each number that moved, before -> after. ``metrics.json`` gets a ``rescored``
note. The Tabular List is the default one (``CCL_DATA`` / the ICD cache).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import yaml

from ccl.eval.extended import apply_guidelines, doc_stats, scores_of
from ccl.eval.stats import bootstrap_intervals
from ccl.icd.tabular import load_tabular
from ccl.records import read_predictions
from ccl.utils.atomic import write_json_atomic

MAPS = ("map_label_space", "map_trec", "map_trec_complete")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def rescore(run: Path, tab) -> list[str]:
    """Update ``run``/metrics.json; returns the lines naming each number that moved."""
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    rows = read_predictions(run / "predictions.jsonl")
    # the eval stage's label space: the gold codes of the scored documents (every one of them
    # is predicted); checked below against the kept numbers
    space = sorted({c for r in rows for c in r["gold_codes"]})
    mode = str((cfg.get("eval") or {}).get("guidelines", "report"))
    moved: list[str] = []
    overall = metrics["codes"]["overall"]

    _, block = apply_guidelines(rows, tab, mode)
    old_block = metrics.get("guidelines") or {}
    for key, value in block.items():
        if old_block.get(key) != value:
            moved.append(f"guidelines.{key}: {old_block.get(key, '-')} -> {value}")
    metrics["guidelines"] = block

    if scores_of(rows) is not None:
        threshold = (metrics.get("threshold") or {}).get("value")
        stats = doc_stats(rows, space, tab, threshold)
        point = stats.metrics()
        # the label-space mAP is the old "map": it must come back unchanged
        if "map" in overall and not _close(overall["map"], point["map_label_space"]):
            sys.exit(f"{run}: map_label_space {point['map_label_space']} differs from the kept map {overall['map']}")
        for key, value in point.items():
            if key in MAPS:
                continue
            if key in overall and not _close(overall[key], value):
                sys.exit(f"{run}: {key} recomputed {value} differs from the kept {overall[key]}")
        old_map = overall.pop("map", None)
        for key in MAPS:
            before = old_map if key == "map_label_space" else None
            overall[key] = point[key]
            if before is None or not _close(before, point[key]):
                moved.append(f"codes.overall.{key}: {'-' if before is None else f'{before:.4f}'} -> {point[key]:.4f}")
        info = metrics.get("intervals_info")
        if info and metrics.get("intervals"):
            method = re.search(r"\((\w+)\)", info["method"])
            ci = bootstrap_intervals(stats, info["n_resamples"], info["confidence"], info["seed"],
                                     method.group(1) if method else "percentile")
            old_ci = metrics["intervals"]
            old_map_ci = old_ci.pop("map", None)
            for key, value in ci.items():
                if key in MAPS:
                    continue
                if key in old_ci and not all(_close(a, b) for a, b in zip(old_ci[key], value, strict=True)):
                    sys.exit(f"{run}: interval of {key} recomputed {value} differs from the kept {old_ci[key]}")
            for key in MAPS:
                old_ci[key] = ci[key]
            if old_map_ci is not None and not all(_close(a, b) for a, b in zip(old_map_ci, ci["map_label_space"],
                                                                             strict=True)):
                moved.append(f"intervals.map_label_space: {old_map_ci} -> {ci['map_label_space']}")
    else:
        # no code_scores kept: the label-space mAP keeps its value under its new name
        if "map" in overall:
            overall["map_label_space"] = overall.pop("map")
        if "map" in (metrics.get("intervals") or {}):
            metrics["intervals"]["map_label_space"] = metrics["intervals"].pop("map")
        moved.append("ranking metrics: no code_scores kept, map renamed map_label_space, "
                     "map_trec not computed")
    metrics["rescored"] = {"by": "experiments/rescore_kept.py", "issue": 23,
                           "what": "MAPs (map -> map_label_space, + map_trec, map_trec_complete) and "
                                   "the guidelines block"}
    write_json_atomic(metrics_path, metrics)
    return moved


def main(argv: list[str]) -> None:
    tab = load_tabular()
    for arg in argv:
        run = Path(arg)
        if not (run / "metrics.json").is_file() or not (run / "predictions.jsonl").is_file():
            continue
        moved = rescore(run, tab)
        print(f"{run}:")
        for line in moved:
            print(f"  {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
