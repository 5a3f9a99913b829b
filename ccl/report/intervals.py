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

from ccl.eval.extended import doc_stats
from ccl.eval.stats import DocStats, bootstrap_intervals, paired_test
from ccl.icd.tabular import load_tabular
from ccl.records import read_predictions
from ccl.report.tables import ResultTable, Skip, without_human_evidence
from ccl.report.unseen import code_table
from ccl.utils.run_folder import RunFolder

PAIRED_METRICS = {"micro F1": "micro_f1", "macro F1": "macro_f1"}
INTERVAL_METRICS = {"Micro F1": "micro_f1", "Macro F1": "macro_f1", "Category F1": "category_micro_f1"}
PAIR_KEYS = ["backbone", "test_set", "seed"]


def p_text(result: dict[str, Any]) -> str:
    """``p = 0.034``, or ``p <= 0.002`` when the permutation test's p-value is at its floor
    (``p_floor`` of :func:`ccl.eval.stats.paired_test`: no resample was as extreme, so the
    true p-value is at most that). Results without ``p_floor`` print as ``p = ``."""
    p, floor = float(result["p_value"]), result.get("p_floor")
    if floor is not None and p <= float(floor) * (1 + 1e-9):
        return f"p <= {float(floor):.3f}"
    return f"p = {p:.3f}"


def _predictions(path: str | Path) -> list[dict[str, Any]]:
    return read_predictions(Path(path))


def _stats(rows: list[dict[str, Any]]):
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
    stats_ = _stats(_predictions(predictions))
    return stats_.metrics(), bootstrap_intervals(stats_)


def paired_rows(a_pred: str | Path, b_pred: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The paired test of result ``a`` against ``b`` on their shared documents."""
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
                 f"{100 * v['diff_ci'][1]:+.1f}], {p_text(v)}"
                 for name, v in res.items() if name != "n_docs"]
        notes.append(f"Paired test row 4 - row 3 ({r4['backbone']}, {r4['test_set']}, seed {r4['seed']}, "
                     f"{res['n_docs']} documents; permutation test and paired bootstrap): " + "; ".join(parts) + ".")
    return notes or ["Paired test row 4 vs row 3: no pair of runs with the same backbone, test set and seed."]


# ------------------------------------------------------------ Figure 3 with intervals
SUBSET_COLUMNS = {"Seen": "seen", "Unseen": "unseen", "Unseen, silver/synthetic only": "tier_only"}
TIER_ONLY = ("silver-only", "synthetic-only")


def subset_stats(rows: list[dict[str, Any]], codes: set[str]):
    """:class:`ccl.eval.stats.DocStats` of ``rows`` scored on the codes in ``codes`` only.

    Gold and predicted codes are both cut to ``codes`` (the label space of the subset), as
    the eval stage scores its seen / unseen subsets; no ranking metrics.
    """
    space = sorted(codes)
    return DocStats.build([[c for c in r["gold_codes"] if c in codes] for r in rows],
                          [[c for c in r["codes"] if c in codes] for r in rows], space)


def run_subsets(run_dir: str | Path, coverage: pd.DataFrame | None) -> dict[str, set[str]]:
    """The test codes of a run by subset: seen, unseen, and unseen codes whose wording only a
    silver or synthetic pair spells (Figure 3(c)'s classes, from ``coverage``)."""
    codes = code_table(run_dir)
    codes = codes[codes["support"] > 0]
    out = {"seen": set(codes.loc[codes["seen"], "code"]), "unseen": set(codes.loc[~codes["seen"], "code"])}
    if coverage is not None and not coverage.empty:
        mine = coverage[(coverage["run_dir"].astype(str) == str(run_dir)) & coverage["coverage"].isin(TIER_ONLY)]
        out["tier_only"] = set(mine["code"])
    return out


def figure3_interval_table(results: pd.DataFrame, coverage: pd.DataFrame | None = None,
                           n_resamples: int = 1000, seed: int = 0) -> ResultTable:
    """Figure 3's seen / unseen micro F1 per run with 95% bootstrap intervals over documents,
    and paired tests row 4 - row 3 on the unseen codes and row 5 - row 4 on the unseen codes
    that only silver or synthetic pairs spell (the paper's Figure 3(c) claim), per seed.

    ``coverage``: the per-code frame of :func:`ccl.report.unseen.coverage_tables` (None: no
    silver/synthetic-only column). Raises :class:`Skip` without Table 3 runs.
    """
    runs, left_out = without_human_evidence(results[results["ablation_row"].notna()])
    runs = runs[runs["predictions"].astype(str) == runs["run_dir"].astype(str) + "/predictions.jsonl"]
    if runs.empty:
        raise Skip("Figure 3 with intervals needs runs of +experiment=ablation_row1..ablation_row5; none found")
    runs = runs.sort_values(["ablation_row", *PAIR_KEYS], kind="stable")
    records, cache = [], {}
    for _, r in runs.iterrows():
        rows, subsets = _predictions(r["predictions"]), run_subsets(r["run_dir"], coverage)
        cache[r["run_dir"]] = (rows, subsets)
        rec: dict[str, Any] = {"Row": int(r["ablation_row"]), "Recipe": r["recipe"], "Seed": r["seed"]}
        for display, key in SUBSET_COLUMNS.items():
            codes = subsets.get(key)
            if not codes:
                rec[f"{display} micro F1"], rec[f"{display} 95% CI"] = float("nan"), ""
                continue
            st = subset_stats(rows, codes)
            lo, hi = bootstrap_intervals(st, n_resamples=n_resamples, seed=seed)["micro_f1"]
            rec[f"{display} micro F1"] = 100.0 * st.metrics()["micro_f1"]
            rec[f"{display} 95% CI"] = f"[{100 * lo:.1f}, {100 * hi:.1f}] ({len(codes)} codes)"
        records.append(rec)
    notes = ["Micro F1 over the test codes of each subset (gold and predicted codes cut to the subset); "
             "intervals: bootstrap over test documents (scipy.stats.bootstrap, percentile, 95%)."]
    for upper, lower, key in ((4, 3, "unseen"), (5, 4, "tier_only")):
        for _, a in runs[runs["ablation_row"] == upper].iterrows():
            match = runs[runs["ablation_row"] == lower]
            for k in PAIR_KEYS:
                match = match[match[k].astype(str) == str(a[k])]
            if match.empty:
                continue
            (rows_a, sub_a), (rows_b, _) = cache[a["run_dir"]], cache[match.iloc[0]["run_dir"]]
            codes = sub_a.get(key)
            if not codes or [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
                continue
            res = paired_test(subset_stats(rows_a, codes), subset_stats(rows_b, codes),
                              n_resamples=n_resamples, seed=seed)["micro_f1"]
            label = dict(zip(SUBSET_COLUMNS.values(), SUBSET_COLUMNS, strict=True))[key].lower()
            notes.append(f"Paired test row {upper} - row {lower}, {label} codes ({len(codes)}), seed {a['seed']}: "
                         f"micro F1 {100 * res['diff']:+.1f} pts, 95% CI [{100 * res['diff_ci'][0]:+.1f}, "
                         f"{100 * res['diff_ci'][1]:+.1f}], {p_text(res)}.")
    return ResultTable("fig3_intervals", "Figure 3 with 95% intervals: seen, unseen and silver/synthetic-only "
                       "unseen codes", pd.DataFrame(records), notes + left_out)
