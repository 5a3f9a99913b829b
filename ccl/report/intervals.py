"""Table 3 with bootstrap intervals, and a paired test between rows 3 and 4 (issue 16).

Intervals come from each run's ``metrics.json`` (``intervals``, written by the eval stage:
``scipy.stats.bootstrap`` over documents, :mod:`ccl.eval.stats`); a run scored before
they existed gets them recomputed from its ``predictions.jsonl`` with the default
settings. The paired test reads both runs' predictions and compares them on the
documents they share (same test content hash required): a paired permutation test
(p-value) and a paired bootstrap interval of the difference row 4 - row 3, for the
micro and macro F1 (:func:`ccl.eval.stats.paired_test`). Runs of rows 3 and 4 are paired
by backbone, test set and seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ccl.report.tables import ResultTable, Skip, without_human_evidence
from ccl.utils.run_folder import RunFolder

PAIRED_METRICS = {"micro F1": "micro_f1", "macro F1": "macro_f1"}
INTERVAL_METRICS = {"Micro F1": "micro_f1", "Macro F1": "macro_f1", "Category F1": "category_micro_f1"}
PAIR_KEYS = ["backbone", "test_set", "seed"]


def _predictions(path: str | Path) -> list[dict[str, Any]]:
    from ccl.stages.evaluate import read_predictions

    return read_predictions(Path(path))


def _stats(rows: list[dict[str, Any]]):
    from ccl.eval.extended import doc_stats
    from ccl.icd.tabular import load_tabular

    space = sorted({c for r in rows for c in r["gold_codes"]})
    return doc_stats(rows, space, load_tabular())


def _metrics_of(predictions: str | Path) -> dict[str, Any]:
    path = RunFolder(Path(predictions).parent).metrics
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_intervals(predictions: str | Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(point estimates, intervals) of a result: from its metrics.json, else recomputed."""
    metrics = _metrics_of(predictions)
    if metrics.get("intervals"):
        return metrics["codes"]["overall"], metrics["intervals"]
    from ccl.eval.stats import bootstrap_intervals

    stats_ = _stats(_predictions(predictions))
    return stats_.metrics(), bootstrap_intervals(stats_)


def paired_rows(a_pred: str | Path, b_pred: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The paired test of result ``a`` against ``b`` on their shared documents."""
    from ccl.eval.stats import paired_test

    a, b = _predictions(a_pred), _predictions(b_pred)
    ids = [r["id"] for r in a if r["id"] in {x["id"] for x in b}]
    if len(ids) < 2:
        raise Skip(f"{a_pred} and {b_pred} share fewer than two documents")
    by_a, by_b = {r["id"]: r for r in a}, {r["id"]: r for r in b}
    rows_a, rows_b = [by_a[i] for i in ids], [by_b[i] for i in ids]
    # One label space for both: the shared documents' gold codes.
    for x, y in zip(rows_a, rows_b, strict=True):
        if sorted(x["gold_codes"]) != sorted(y["gold_codes"]):
            raise Skip(f"document {x['id']} has other gold codes in {a_pred} than in {b_pred}")
    res = paired_test(_stats(rows_a), _stats(rows_b), n_resamples=n_resamples, seed=seed)
    return {"n_docs": len(ids), **{name: res[key] for name, key in PAIRED_METRICS.items()}}


def ablation_interval_table(results: pd.DataFrame) -> ResultTable:
    """Table 3 with 95% intervals per row and the paired test row 4 vs row 3 in the notes."""
    runs, left_out = without_human_evidence(results[results["ablation_row"].notna()])
    if runs.empty:
        raise Skip("Table 3 with intervals needs runs of +experiment=ablation_row1..ablation_row5; none found")
    runs = runs.sort_values(["ablation_row", *PAIR_KEYS], kind="stable")
    records = []
    for _, r in runs.iterrows():
        point, ci = run_intervals(r["predictions"])
        rec: dict[str, Any] = {"Row": int(r["ablation_row"]), "Recipe": r["recipe"], "Backbone": r["backbone"]}
        if runs["test_set"].nunique() > 1:
            rec["Test set"] = r["test_set"]
        if runs["seed"].nunique() > 1:
            rec["Seed"] = r["seed"]
        for display, key in INTERVAL_METRICS.items():
            lo, hi = ci.get(key, [float("nan")] * 2)
            rec[display] = 100.0 * float(point.get(key, float("nan")))
            rec[f"{display} 95% CI"] = f"[{100 * lo:.1f}, {100 * hi:.1f}]"
        records.append(rec)
    notes = ["Intervals: bootstrap over test documents (scipy.stats.bootstrap, percentile, 95%)."]
    notes += _paired_notes(runs) + left_out
    return ResultTable("table3_intervals", "Table 3 with 95% intervals", pd.DataFrame(records), notes)


def _paired_notes(runs: pd.DataFrame) -> list[str]:
    row3, row4 = runs[runs["ablation_row"] == 3], runs[runs["ablation_row"] == 4]
    if row3.empty or row4.empty:
        return ["Paired test row 4 vs row 3: needs runs of both rows."]
    notes = []
    for _, r4 in row4.iterrows():
        match = row3
        for key in PAIR_KEYS:
            match = match[match[key].astype(str) == str(r4[key])]
        if match.empty:
            continue
        r3 = match.iloc[0]
        try:
            res = paired_rows(r4["predictions"], r3["predictions"])
        except Skip as e:
            notes.append(f"Paired test row 4 vs row 3 ({r4['backbone']}, seed {r4['seed']}): {e}.")
            continue
        parts = [f"{name} {100 * v['diff']:+.1f} pts, 95% CI [{100 * v['diff_ci'][0]:+.1f}, "
                 f"{100 * v['diff_ci'][1]:+.1f}], p = {v['p_value']:.3f}"
                 for name, v in res.items() if name != "n_docs"]
        notes.append(f"Paired test row 4 - row 3 ({r4['backbone']}, {r4['test_set']}, seed {r4['seed']}, "
                     f"{res['n_docs']} documents; permutation test and paired bootstrap): " + "; ".join(parts) + ".")
    return notes or ["Paired test row 4 vs row 3: no pair of runs with the same backbone, test set and seed."]
