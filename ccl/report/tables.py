"""The paper's tables as DataFrames, built from the results table (see :mod:`ccl.report.collect`).

Each builder returns a :class:`ResultTable` whose frame holds display columns:
rates as percentages (floats, rendered with one decimal), counts as ints. A
builder raises :class:`Skip` when the runs it needs are absent, with a message
saying what is missing; the report prints that message instead of the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ccl.report.collect import METHOD_ORDER

CODE_COLUMNS = {  # display name -> results column (fraction)
    "Micro F1": "overall_micro_f1", "Macro F1": "overall_macro_f1",
    "Micro R": "overall_micro_recall", "Macro R": "overall_macro_recall",
    "Micro P": "overall_micro_precision", "Macro P": "overall_macro_precision",
}


class Skip(Exception):
    """An analysis cannot be made from these runs; the message says which runs it needs."""


@dataclass
class ResultTable:
    """A rendered analysis: ``name`` is the file stem (``table3_ablation``)."""

    name: str
    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def pct(values: pd.Series) -> pd.Series:
    """Fractions in [0, 1] -> percentages."""
    return values.astype(float) * 100.0


def mean_std(values: pd.Series | list[float]) -> str:
    """``"45.1 ± 2.3"``: mean and sample standard deviation of percentages (one value: ``"45.1"``;
    none: a dash)."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def human_count(n: float) -> str:
    """``1.35e8`` -> ``135M``; ``9.2e5`` -> ``0.92M``; NaN -> ``?``."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    if n >= 1e5:  # model sizes read best in millions from 0.1M up
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}K"
    return str(int(n))


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _varies(df: pd.DataFrame, col: str) -> bool:
    return df[col].nunique(dropna=False) > 1


def _identity(df: pd.DataFrame, keys: tuple[str, ...] = ("recipe",)) -> list[tuple[str, str]]:
    """(display, column) identity columns: the backbone, plus test set and seed when they vary,
    plus the run folder when rows would otherwise look the same (repeated runs)."""
    cols = [("Backbone", "backbone")]
    if _varies(df, "test_set"):
        cols.append(("Test set", "test_set"))
    if _varies(df, "seed"):
        cols.append(("Seed", "seed"))
    if df.duplicated([*keys, *(c for _, c in cols)]).any():
        cols.append(("Run", "run_label"))
    return cols


def is_human_evidence(results: pd.DataFrame) -> pd.Series:
    """Rows scored with the gold evidence in the prompt ("CCL + human evidence")."""
    if "human_evidence" not in results:
        return pd.Series(False, index=results.index)
    return results["human_evidence"].fillna(False).astype(bool)


def without_human_evidence(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of models coding on their own, and a note when human-evidence rows were left out.

    Human-evidence results (Table 1's "CCL + human evidence", Table 4's upper bound) share
    their run's recipe and backbone; the training-recipe analyses leave them out.
    """
    human = is_human_evidence(results)
    if not human.any():
        return results, []
    return results[~human], [f"{int(human.sum())} human-evidence results left out "
                              "(gold evidence given at inference; see Tables 1 and 4)."]


def _with_run_label(df: pd.DataFrame) -> pd.DataFrame:
    sweep = df["sweep"].fillna("").astype(str)
    run = df["run"].astype(str)
    return df.assign(run_label=run.where(sweep == "", sweep + "/" + run))


def ablation_table(results: pd.DataFrame) -> ResultTable:
    """Table 3: rows 1-5 (runs named ``ablation_rowN``), micro/macro F1, recall and precision."""
    runs, left_out = without_human_evidence(results[results["ablation_row"].notna()])
    if runs.empty:
        raise Skip("Table 3 needs runs of +experiment=ablation_row1..ablation_row5; none found")
    runs = _with_run_label(runs.sort_values(["ablation_row", "backbone", "test_set", "seed"], kind="stable"))
    frame = pd.DataFrame({"Row": runs["ablation_row"].astype(int), "Recipe": runs["recipe"]})
    for display, col in _identity(runs, ("ablation_row", "recipe")):
        frame[display] = runs[col]
    for display, col in CODE_COLUMNS.items():
        frame[display] = pct(runs[col])
    rows = set(frame["Row"])
    missing = sorted(set(range(1, 6)) - rows)
    notes = [f"Rows missing from these runs: {', '.join(map(str, missing))}."] if missing else []
    notes.append("Micro/macro over the codes of the test label space; R = recall, P = precision (%).")
    notes += left_out
    return ResultTable("table3_ablation", "Table 3: ablation", frame.reset_index(drop=True), notes)


def main_table(results: pd.DataFrame) -> ResultTable:
    """Table 1: methods x backbones x test sets, micro / macro F1 (mean over repeated runs)."""
    if results.empty:
        raise Skip("Table 1 needs at least one run")
    # CCL + human evidence is its own row: same recipe, gold evidence given at inference.
    human = is_human_evidence(results)
    runs = results.assign(_rank=results["method"].map(_method_rank),
                          recipe=results["recipe"].where(~human, results["recipe"] + " + human evidence"))
    grouped = runs.groupby(["_rank", "recipe", "test_set", "backbone"], sort=True)
    means = grouped[["overall_micro_f1", "overall_macro_f1"]].mean()
    counts = grouped.size()
    columns = sorted({(t, b) for _, _, t, b in means.index})
    recipes = sorted({(r, rec) for r, rec, _, _ in means.index})
    frame = pd.DataFrame({"Method": [rec for _, rec in recipes]})
    for test_set, backbone in columns:
        for metric, col in (("micro F1", "overall_micro_f1"), ("macro F1", "overall_macro_f1")):
            frame[f"{test_set} / {backbone} {metric}"] = [
                100.0 * means.loc[(r, rec, test_set, backbone), col]
                if (r, rec, test_set, backbone) in means.index else np.nan
                for r, rec in recipes
            ]
    notes = ["Columns: test set / backbone; cells are percentages; empty cells were not run."]
    if (counts > 1).any():
        notes.append(f"Cells averaged over repeated runs (up to {int(counts.max())} per cell).")
    return ResultTable("table1_main", "Table 1: methods x backbones x test sets", frame, notes)


SCALING_KEYS = ["backbone_family", "recipe", "test_set"]


def scaling_runs(results: pd.DataFrame) -> pd.DataFrame:
    """Runs of a (family, recipe, test set) that has at least two parameter counts
    (human-evidence results left out)."""
    results = without_human_evidence(results)[0]
    runs = results[(results["backbone_family"].fillna("") != "") & results["n_params"].notna()]
    if runs.empty:
        return runs
    return runs[runs.groupby(SCALING_KEYS)["n_params"].transform("nunique") >= 2]


def scaling_table(results: pd.DataFrame) -> ResultTable:
    """Table 6: metrics against parameter count, for families with at least two sizes."""
    runs = scaling_runs(results)
    keys = SCALING_KEYS
    if runs.empty:
        raise Skip("the scaling law needs runs of at least two backbone sizes of one family "
                   "(backbone.family, backbone.n_params) with the same recipe, "
                   "e.g. backbone=tiny_s,tiny_m,tiny_l")
    runs = runs.sort_values([*keys, "n_params", "backbone"], kind="stable")
    frame = pd.DataFrame({
        "Family": runs["backbone_family"], "Backbone": runs["backbone"],
        "Params": runs["n_params"].map(human_count), "Recipe": runs["recipe"],
    })
    if _varies(runs, "test_set"):
        frame["Test set"] = runs["test_set"]
    frame["Micro F1"] = pct(runs["overall_micro_f1"])
    frame["Macro F1"] = pct(runs["overall_macro_f1"])
    frame["Seen micro F1"] = pct(runs["seen_micro_f1"])
    frame["Unseen micro F1"] = pct(runs["unseen_micro_f1"])
    notes = [
        f"{fam} ({rec}, {ts}): {slope:+.1f} micro F1 points per 10x parameters "
        f"(least squares over {n} sizes)"
        for (fam, rec, ts), slope, n in scaling_fits(runs)
    ]
    return ResultTable("table6_scaling", "Table 6: scaling with backbone size", frame.reset_index(drop=True),
                       notes)


def scaling_fits(runs: pd.DataFrame, metric: str = "overall_micro_f1") -> list[tuple[tuple[str, str, str], float, int]]:
    """Per (family, recipe, test set): slope of ``metric`` (points) against log10(params)."""
    fits = []
    for key, group in runs.groupby(SCALING_KEYS, sort=True):
        per_size = group.groupby("n_params")[metric].mean()
        if len(per_size) < 2:
            continue
        x = np.log10(per_size.index.to_numpy(dtype=float))
        slope = float(np.polyfit(x, 100.0 * per_size.to_numpy(dtype=float), 1)[0])
        fits.append((tuple(str(k) for k in key), slope, len(per_size)))
    return fits


def _counts(values: pd.Series) -> pd.Series:
    """Whole numbers that may be missing (a run of span warm-up steps only has no epoch)."""
    return pd.to_numeric(values, errors="coerce").round().astype("Int64")


def efficiency_table(results: pd.DataFrame) -> ResultTable:
    """Table 2: training tokens, time per epoch and in total, per recipe (trained runs only)."""
    runs = results[results["train_tokens"].notna()]
    if runs.empty:
        raise Skip("Table 2 needs trained runs (model/ccl_model.json); only zero-shot runs or none found")
    # Training cost is a run's, whichever test sets it was scored on: one row per run.
    runs = runs.drop_duplicates("run_dir").assign(test_set="")
    runs = _with_run_label(runs.assign(_rank=runs["method"].map(_method_rank)).sort_values(
        ["_rank", "recipe", "backbone", "test_set"], kind="stable"))
    frame = pd.DataFrame({"Method": runs["method"], "Recipe": runs["recipe"]})
    for display, col in _identity(runs):
        frame[display] = runs[col]
    frame["Doc examples"] = _counts(runs["dataset_doc_examples"])
    frame["Span examples"] = _counts(runs["dataset_span_examples"])
    frame["Dataset tokens"] = _counts(runs["dataset_tokens"])
    frame["Trained tokens"] = _counts(runs["train_tokens"])
    frame["Epochs"] = _counts(runs["data_epochs"])
    frame["Tokens/epoch"] = _counts(runs["tokens_per_epoch"])
    frame["s/epoch"] = runs["seconds_per_epoch"].astype(float)
    frame["Train s"] = runs["train_seconds"].astype(float)
    frame["Tokens/s"] = runs["tokens_per_second"].astype(float)
    notes = ["Dataset tokens: every training example tokenised once (prompt + answer). "
             "Trained tokens: what the optimiser saw (span warm-up included). "
             "s/epoch: fit time times the epoch's share of trained tokens."]
    return ResultTable("table2_efficiency", "Table 2: training cost per recipe", frame.reset_index(drop=True),
                       notes)


def evidence_table(results: pd.DataFrame) -> ResultTable:
    """Table 4: evidence precision, recall and F1 where the test set has gold evidence."""
    has_gold = results["evidence_n_gold"].fillna(0) > 0
    runs = results[has_gold & (results["task"] != "codes_only")]
    if runs.empty:
        raise Skip("Table 4 needs runs that write evidence (task=evidence or cot) on a test set "
                   "with gold evidence spans")
    runs = _with_run_label(runs.sort_values(["ablation_row", "recipe", "backbone", "test_set"], kind="stable"))
    frame = pd.DataFrame({"Recipe": runs["recipe"]})
    for display, col in _identity(runs, ("recipe", "human_evidence")):
        frame[display] = runs[col]
    if runs["human_evidence"].any():
        frame["Human evidence"] = runs["human_evidence"].map({True: "yes", False: "no"})
    for kind in ("exact", "overlap"):
        for short, metric in (("P", "precision"), ("R", "recall"), ("F1", "f1")):
            frame[f"{kind.capitalize()} {short}"] = pct(runs[f"evidence_{kind}_{metric}"])
    frame["Gold spans"] = runs["evidence_n_gold"].astype(int)
    notes = ["Exact: normalised string match; overlap: located in the note, character overlap "
             "(one-to-one matching, micro-averaged; see ccl.eval.evidence). Runs with "
             "human evidence copy the gold spans, so their evidence scores are an upper bound."]
    return ResultTable("table4_evidence", "Table 4: evidence quality", frame.reset_index(drop=True), notes)


def seen_unseen_table(results: pd.DataFrame) -> ResultTable:
    """Figure 3's numbers: F1 on the seen and the unseen test codes of each run
    (human-evidence results left out)."""
    results, left_out = without_human_evidence(results)
    if results.empty:
        raise Skip("the seen/unseen breakdown needs at least one run")
    runs = _with_run_label(results.assign(_rank=results["method"].map(_method_rank)).sort_values(
        ["ablation_row", "_rank", "recipe", "backbone"], kind="stable"))
    frame = pd.DataFrame({"Recipe": runs["recipe"]})
    for display, col in _identity(runs):
        frame[display] = runs[col]
    frame["Seen codes"] = runs["seen_n_codes"].astype(int)
    frame["Unseen codes"] = runs["unseen_n_codes"].astype(int)
    for subset in ("seen", "unseen"):
        frame[f"{subset.capitalize()} micro F1"] = pct(runs[f"{subset}_micro_f1"])
        frame[f"{subset.capitalize()} macro F1"] = pct(runs[f"{subset}_macro_f1"])
    notes = ["A test code is seen when it occurs in the document-level training data, unseen otherwise.",
             *left_out]
    return ResultTable("fig3_seen_unseen", "Figure 3 data: seen vs unseen codes", frame.reset_index(drop=True),
                       notes)


SEED_COLUMNS = {  # display name -> results column (fraction), for the seed summary of Table 3
    "Micro F1": "overall_micro_f1", "Macro F1": "overall_macro_f1",
    "Seen micro F1": "seen_micro_f1", "Unseen micro F1": "unseen_micro_f1",
    "Evidence F1": "evidence_exact_f1",
}


def ablation_seed_table(results: pd.DataFrame) -> ResultTable:
    """Table 3 over seeds: per row, mean ± standard deviation of each metric over the seeds.

    Beside each row from row 3 on: the difference of mean micro F1 (overall, seen, unseen)
    to the previous row, marked ``~`` when it is smaller than the seed spread (the larger
    of the two rows' standard deviations), and how many seeds show the difference's sign
    (seeds run for both rows). Needs at least two seeds of some row.
    """
    runs, left_out = without_human_evidence(results[results["ablation_row"].notna()])
    if runs.empty or runs.groupby(["ablation_row", "backbone", "test_set"])["seed"].nunique().max() < 2:
        raise Skip("the seed summary of Table 3 needs ablation_row runs over at least two seeds")
    keys = ["ablation_row", "recipe", "backbone", "test_set"]
    groups = {key: g for key, g in runs.groupby(keys, sort=True)}
    out = []
    previous: dict[tuple, pd.DataFrame] = {}
    for key, group in groups.items():
        row_no, recipe, backbone, test_set = key
        line: dict[str, object] = {"Row": int(row_no), "Recipe": recipe, "Backbone": backbone,
                                   "Test set": test_set, "Seeds": int(group["seed"].nunique())}
        for display, col in SEED_COLUMNS.items():
            line[display] = mean_std(pct(group[col]))
        prev = previous.get((backbone, test_set))
        for display, col in (("overall", "overall_micro_f1"), ("seen", "seen_micro_f1"),
                             ("unseen", "unseen_micro_f1")):
            line[f"Δ {display} vs row above"] = _difference(group, prev, col)
        previous[(backbone, test_set)] = group
        out.append(line)
    frame = pd.DataFrame(out)
    for col in ("Test set", "Backbone"):
        if frame[col].nunique() == 1:
            frame = frame.drop(columns=col)
    notes = ["Cells: mean ± sample standard deviation over seeds (`seed`: training randomness; the "
             "demo world is `docs.seed`, the same in every run), micro/macro F1 and exact evidence F1 (%).",
             "Δ: difference of mean micro F1 to the row above (points); ~ marks a difference smaller "
             "than the seed spread (the larger standard deviation of the two rows); k/n: seeds in "
             "which the paired difference has the sign of the mean difference."]
    return ResultTable("table3_ablation_seeds", "Table 3 over seeds: mean ± std", frame, notes + left_out)


def _difference(group: pd.DataFrame, prev: pd.DataFrame | None, col: str) -> str:
    if prev is None:
        return ""
    now, before = pct(group.groupby("seed")[col].mean()), pct(prev.groupby("seed")[col].mean())
    diff = float(now.mean() - before.mean())
    if math.isnan(diff):
        return "–"
    spread = max(float(now.std(ddof=1)) if len(now) > 1 else 0.0,
                 float(before.std(ddof=1)) if len(before) > 1 else 0.0)
    paired = (now - before).dropna()
    sign = int(((paired > 0) if diff >= 0 else (paired < 0)).sum())
    mark = " ~" if abs(diff) < spread else ""
    return f"{diff:+.1f}{mark} ({sign}/{len(paired)})"
