"""Unseen codes: which span tier introduced each test code, and what each tier gained.

A test code is *seen* when a training document carries it, *unseen* otherwise.
Span data *covers* a code when a span tier has a pair for it; the tier that
*introduced* it is the first of gold -> silver -> synthetic with such a pair
(tiers are built in that order; synthetic only fills codes no other tier has).
The gain of a tier is the mean per-code F1 change, from a run without span
data to a run with it (same backbone, test documents, task, training mode and seed),
over the unseen codes that tier introduced. Human-evidence results (gold evidence given
at inference) are left out: both sides of a comparison are models coding on their own.

Coverage of the *wording* (Figure 3(c)): a tier covers a test code's wording when one
of its pairs for the code is, after normalisation (case, spaces, edge punctuation),
a gold evidence span of that code in the test notes. A code whose Tabular terms name it
but whose notes write it otherwise ("HTN", "AFib") is then covered by silver only, when
silver mined that form, or synthetic only, or by nothing. The class is taken over the
union of the tiers of every run on the same test documents, so that row 4 (gold only)
and row 5 (all tiers) are compared on the same codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ccl.eval.metrics import per_code_metrics
from ccl.records import TIERS, phrase_key, read_documents, read_predictions, read_span_pairs
from ccl.report.collect import RunFolderError
from ccl.report.tables import ResultTable, Skip, is_human_evidence, mean_std
from ccl.utils.run_folder import RunFolder

NOT_COVERED = "none"
# Wording-coverage classes, in order (see the module docstring).
COVERAGE_CLASSES = ("gold", "silver-only", "synthetic-only", NOT_COVERED)
# Runs compared with each other: same model, same test documents (content hash), same task.
GROUP_KEYS = ["backbone", "test_hash", "task", "train_mode", "seed"]


def code_table(run_dir: str | Path, predictions: str | Path | None = None) -> pd.DataFrame:
    """Per test code of one run: seen, pairs per tier, the introducing tier, tp/fp/fn/F1.

    ``predictions`` defaults to the run's own ``predictions.jsonl``; an extra test set's
    are in ``test_sets/<name>/`` (the results table's ``predictions`` column).
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    preds = read_predictions(Path(predictions) if predictions else folder.predictions)
    seen = {c for d in read_documents(folder.records("train"), need_text=False) for c in d.codes}
    pairs: dict[str, dict[str, int]] = {}
    for tier in TIERS:
        path = folder.spans(tier)
        counts: dict[str, int] = {}
        if path.is_file():
            for pair in read_span_pairs(path):
                counts[pair.code] = counts.get(pair.code, 0) + 1
        pairs[tier] = counts
    per_code = per_code_metrics([p["gold_codes"] for p in preds], [p["codes"] for p in preds])
    rows = []
    for code, m in per_code.items():
        introduced = next((t for t in TIERS if pairs[t].get(code)), NOT_COVERED)
        rows.append({
            "code": code, "seen": code in seen, "introduced_by": introduced,
            **{f"pairs_{t}": pairs[t].get(code, 0) for t in TIERS},
            **{k: m[k] for k in ("support", "tp", "fp", "fn", "precision", "recall", "f1")},
        })
    return pd.DataFrame(rows)


def _predictions(run: pd.Series) -> str | None:
    """The row's predictions file (results tables written before the column: None)."""
    path = run.get("predictions")
    return str(path) if isinstance(path, str) and path else None


def _baseline(group: pd.DataFrame) -> pd.Series | None:
    base = group[group["spans"] == "none"]
    return base.iloc[0] if not base.empty else None


def unseen_code_tables(results: pd.DataFrame) -> tuple[pd.DataFrame, ResultTable]:
    """(per-code table of every run with span data and its baseline, Table of the gain per tier).

    The per-code table has one row per (run, test code): the run's recipe,
    the code's coverage and introducing tier, its F1 in the run and in the
    baseline run without span data, and ``newly_correct`` (baseline F1 0, now > 0).
    """
    trained = results[(results["train_mode"] != "none") & ~is_human_evidence(results)]
    per_code_rows: list[pd.DataFrame] = []
    gains = []
    for _, group in trained.groupby(GROUP_KEYS, dropna=False, sort=True):
        base = _baseline(group)
        if base is None:
            continue
        before = code_table(base["run_dir"], _predictions(base)).set_index("code")["f1"]
        for _, run in group[group["spans"] != "none"].iterrows():
            codes = code_table(run["run_dir"], _predictions(run))
            codes["f1_before"] = codes["code"].map(before).fillna(0.0)
            codes["gain"] = codes["f1"] - codes["f1_before"]
            codes["newly_correct"] = (codes["f1_before"] == 0) & (codes["f1"] > 0)
            codes.insert(0, "recipe", run["recipe"])
            codes.insert(1, "backbone", run["backbone"])
            codes.insert(2, "test_set", run["test_set"])
            codes.insert(3, "run_dir", run["run_dir"])
            codes.insert(4, "baseline_run_dir", base["run_dir"])
            per_code_rows.append(codes)
            unseen = codes[~codes["seen"]]
            for tier in [*TIERS, NOT_COVERED]:
                if tier != NOT_COVERED and not run[f"span_{tier}"]:
                    continue
                picked = unseen[unseen["introduced_by"] == tier]
                if tier == NOT_COVERED and picked.empty:
                    continue
                gains.append({
                    "Recipe": run["recipe"], "Backbone": run["backbone"], "Test set": run["test_set"],
                    "Seed": run["seed"],
                    "Tier": tier if tier != NOT_COVERED else "not covered",
                    "Unseen codes": len(picked),
                    "F1 before": picked["f1_before"].mean() * 100 if len(picked) else np.nan,
                    "F1 after": picked["f1"].mean() * 100 if len(picked) else np.nan,
                    "Gain": picked["gain"].mean() * 100 if len(picked) else np.nan,
                    "Newly correct": int(picked["newly_correct"].sum()),
                })
    if not gains:
        raise Skip("the unseen-code gain per tier needs a trained run without span data (spans=[], "
                   "e.g. ablation_row3) and runs with span data of the same backbone, test set and task")
    frame = pd.DataFrame(gains)
    if frame["Test set"].nunique() == 1:
        frame = frame.drop(columns="Test set")
    table = ResultTable(
        "fig3_tier_gain", "Figure 3: unseen codes introduced and gained per span tier", frame,
        ["Unseen codes: unseen test codes whose first span pairs come from the tier "
         "(gold, then silver, then synthetic). F1 before: in the run without span data; "
         "gain: mean per-code F1 change (points); newly correct: F1 0 before, > 0 after. "
         "One row per run (seed) and tier; the seed's baseline is the run without span data of "
         "the same seed. Figure 3(b) draws the mean ± standard deviation over seeds."],
    )
    return pd.concat(per_code_rows, ignore_index=True), table


def coverage_summary(per_code: pd.DataFrame) -> pd.DataFrame:
    """Unseen test codes per run and introducing tier (counts), for a quick look."""
    unseen = per_code[~per_code["seen"]]
    return unseen.pivot_table(index="recipe", columns="introduced_by", values="code", aggfunc="count",
                              fill_value=0)



def tier_evidence(run_dir: str | Path) -> dict[str, dict[str, set[str]]]:
    """Per tier, per code: the normalised evidence of the run's span pairs (absent tier: empty)."""
    out: dict[str, dict[str, set[str]]] = {}
    for tier in TIERS:
        path = RunFolder(run_dir).spans(tier)
        forms: dict[str, set[str]] = {}
        if path.is_file():
            for pair in read_span_pairs(path):
                forms.setdefault(pair.code, set()).add(phrase_key(pair.evidence))
        out[tier] = forms
    return out


def written_forms(run_dir: str | Path, split: str = "test") -> dict[str, set[str]]:
    """Per code: the normalised gold evidence spans of the run's ``split`` documents."""
    path = RunFolder(run_dir).records(split)
    if not path.is_file():
        raise RunFolderError(f"{path}: file not found (the wording coverage needs the run's documents)")
    forms: dict[str, set[str]] = {}
    for doc in read_documents(path, need_text=False):
        for span in doc.spans:
            forms.setdefault(span.code, set()).add(phrase_key(span.text))
    return forms


def wording_coverage(
    forms: dict[str, set[str]], tiers: dict[str, dict[str, set[str]]]
) -> dict[str, str]:
    """Per code of ``forms``: the first class of COVERAGE_CLASSES whose tier spells one of its forms.

    ``gold`` when a gold pair matches a written form; ``silver-only`` when gold does not but
    silver does; ``synthetic-only`` when only synthetic does; ``none`` otherwise. A code
    without gold evidence spans in the notes (a source without spans) is ``none``.
    """
    out = {}
    for code, written in forms.items():
        cls = NOT_COVERED
        for tier, name in zip(TIERS, COVERAGE_CLASSES, strict=False):
            if written & tiers.get(tier, {}).get(code, set()):
                cls = name
                break
        out[code] = cls
    return out


def _micro_f1(frame: pd.DataFrame) -> float:
    tp, fp, fn = (float(frame[k].sum()) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def coverage_tables(results: pd.DataFrame) -> tuple[pd.DataFrame, ResultTable]:
    """(per (run, unseen test code) rows with the wording class, Figure 3(c) table).

    For each run with written evidence in its test documents: the unseen test codes
    (support > 0, absent from training documents), their wording class (over the union of
    the tiers of all runs on the same test documents) and per-code tp/fp/fn/F1. The table
    gives, per recipe and class, the number of codes and the micro F1 over those codes:
    mean ± standard deviation over seeds, and each seed's value.
    """
    runs = results[~is_human_evidence(results) & (results["split"] != "")]
    runs = runs[runs["predictions"].astype(str) == runs["run_dir"].astype(str) + "/" + RunFolder.predictions]
    rows: list[pd.DataFrame] = []
    for _, group in runs.groupby("test_hash", sort=True):
        union: dict[str, dict[str, set[str]]] = {t: {} for t in TIERS}
        for run_dir in group["run_dir"].unique():
            for tier, per_code in tier_evidence(run_dir).items():
                for code, forms in per_code.items():
                    union[tier].setdefault(code, set()).update(forms)
        try:
            classes = wording_coverage(written_forms(group["run_dir"].iloc[0], str(group["split"].iloc[0])), union)
        except RunFolderError:
            continue
        for _, run in group.iterrows():
            codes = code_table(run["run_dir"])
            codes = codes[(~codes["seen"]) & (codes["support"] > 0)].copy()
            codes["coverage"] = codes["code"].map(classes).fillna(NOT_COVERED)
            for col in ("recipe", "backbone", "test_set", "seed", "ablation_row", "run_dir"):
                codes[col] = run[col]
            rows.append(codes)
    if not rows:
        raise Skip("the unseen-code coverage table needs runs whose test documents carry evidence spans")
    per_code = pd.concat(rows, ignore_index=True)
    table_rows = []
    keys = ["ablation_row", "recipe", "backbone", "test_set"]
    for key, group in per_code.groupby(keys, dropna=False, sort=True):
        for cls in COVERAGE_CLASSES:
            picked = group[group["coverage"] == cls]
            if picked.empty:
                continue
            per_seed = picked.groupby("seed", dropna=False).apply(_micro_f1, include_groups=False) * 100
            table_rows.append({
                "Row": key[0], "Recipe": key[1], "Backbone": key[2], "Test set": key[3],
                "Coverage": cls, "Unseen codes": int(picked.groupby("seed", dropna=False)["code"].nunique().max()),
                "Seeds": len(per_seed), "Micro F1": mean_std(per_seed),
                "Per seed": " / ".join(f"{v:.1f}" for v in per_seed),
            })
    frame = pd.DataFrame(table_rows)
    for col in ("Row", "Test set", "Backbone"):
        if frame[col].nunique(dropna=False) == 1 and col != "Backbone":
            frame = frame.drop(columns=col)
    if "Row" in frame:
        frame["Row"] = frame["Row"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    table = ResultTable(
        "fig3c_unseen_coverage", "Figure 3(c): unseen test codes by the tier that covers their wording",
        frame,
        ["Coverage: the first tier (gold, silver, synthetic) with a pair whose evidence is written as "
         "the code is written in the test notes (union of the tiers of all runs on these notes); "
         "'none': no tier spells it. Micro F1 (%) over those codes: mean ± standard deviation "
         "over seeds; per seed in seed order."],
    )
    return per_code, table

