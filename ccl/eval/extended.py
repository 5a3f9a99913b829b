"""Evaluation beyond the paper's metrics, for ``metrics.json`` (issue 16).

:func:`extended_metrics` adds to one target's metrics: category- and chapter-level
P/R/F1 (:mod:`ccl.eval.hierarchy`), ranking metrics and micro-F1 at the tuned threshold
when the predictions carry ``code_scores`` (:mod:`ccl.eval.ranking`), bootstrap
intervals of every metric (:mod:`ccl.eval.stats`), guideline-violation counts
(:mod:`ccl.eval.guidelines`) and the invalid-code rate.

``invalid_code_rate`` = (parsed codes that are not in the Tabular List, not billable, or
outside the model's code vocabulary) / (parsed codes), over all documents. The
vocabulary is the set restricted decoding allows (``restrict_codes.json``; the billable
codes of every document split and span tier), so with ``infer.restrict_codes=true`` the
rate is 0. Codes outside the *test* label space (dropped before scoring) are counted
apart (``outside_test_label_space``), as they are not invalid codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccl.eval.guidelines import GuidelineChecker, guideline_counts
from ccl.eval.hierarchy import chapter_mapper
from ccl.eval.ranking import tune_threshold
from ccl.eval.stats import DocStats, bootstrap_intervals
from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList


def apply_guidelines(
    predictions: list[dict[str, Any]], tab: TabularList, mode: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(predictions to score, the ``guidelines`` block): counts for the predictions, the same
    counts for the gold codes (``gold_*``, when every row has ``gold_codes``), and with ``mode="repair"``
    the rows with the lower-scored code of each Excludes1 pair dropped (``repaired_from``
    keeps the original codes)."""
    if mode not in ("report", "repair"):
        raise ValueError(f"eval.guidelines={mode!r}: expected report or repair")
    checker = GuidelineChecker(tab)
    flags = [checker.check(p["codes"]) for p in predictions]
    block: dict[str, Any] = {"mode": mode, "n_docs": len(predictions), **guideline_counts(flags)}
    # The gold codes' own counts: the rate a correct coder would get from the same checks.
    if all("gold_codes" in p for p in predictions):
        gold = guideline_counts([checker.check(p["gold_codes"]) for p in predictions])
        block |= {f"gold_{k}": v for k, v in gold.items()}
    if mode == "repair":
        repaired, dropped = [], 0
        for p in predictions:
            kept, gone = checker.repair(p["codes"], p.get("code_scores"))
            dropped += len(gone)
            repaired.append({**p, "codes": kept, "repaired_from": p["codes"]} if gone else p)
        block["repair_dropped"] = dropped
        predictions = repaired
    return predictions, block


def invalid_codes(
    predictions: Sequence[Mapping[str, Any]], tab: TabularList, vocabulary: Sequence[str] | None,
    label_space: Sequence[str],
) -> dict[str, Any]:
    """Counts of parsed codes by kind of invalidity and ``invalid_code_rate``; see the module doc."""
    vocab = {canonical_code(c) for c in vocabulary} if vocabulary is not None else None
    space = {canonical_code(c) for c in label_space}
    n = not_in = not_billable = outside = outside_test = 0
    for p in predictions:
        for code in p["codes"]:
            code = canonical_code(code)
            n += 1
            outside_test += code not in space
            if code not in tab:
                not_in += 1
            elif not tab.is_billable(code):
                not_billable += 1
            elif vocab is not None and code not in vocab:
                outside += 1
    bad = not_in + not_billable + outside
    return {"n_codes": n, "not_in_tabular": not_in, "not_billable": not_billable,
            "outside_label_space": outside, "invalid_code_rate": bad / n if n else 0.0,
            "outside_test_label_space": outside_test,
            "label_space": "model code vocabulary" if vocab is not None else "Tabular List only"}


def scores_of(predictions: Sequence[Mapping[str, Any]]) -> list[dict[str, float]] | None:
    """Per-row ``code_scores``, or None when any row has none (ranking metrics need them)."""
    if not predictions or any("code_scores" not in p for p in predictions):
        return None
    return [dict(p["code_scores"]) for p in predictions]


def threshold_from(predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The micro-F1-maximising probability threshold on validation predictions (None without scores)."""
    scores = scores_of(predictions)
    gold = [p["gold_codes"] for p in predictions]
    if scores is None or not any(gold):
        return None
    space = sorted({canonical_code(c) for g in gold for c in g})
    t, f1 = tune_threshold(gold, [p["codes"] for p in predictions], scores, space)
    return {"value": t, "val_micro_f1": f1, "val_docs": len(predictions), "source": "validation split"}


def doc_stats(
    predictions: Sequence[Mapping[str, Any]], label_space: Sequence[str], tab: TabularList,
    threshold: float | None = None,
) -> DocStats:
    """The :class:`DocStats` of one target's predictions."""
    return DocStats.build([p["gold_codes"] for p in predictions], [p["codes"] for p in predictions],
                          label_space, chapter_mapper(tab), scores_of(predictions), threshold, valid_codes=tab)


def extended_metrics(
    predictions: list[dict[str, Any]],
    label_space: Sequence[str],
    tab: TabularList,
    vocabulary: Sequence[str] | None = None,
    threshold: Mapping[str, Any] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> dict[str, Any]:
    """Point estimates (``overall``), ``intervals``, ``invalid_codes`` and ``threshold`` blocks."""
    stats_ = doc_stats(predictions, label_space, tab, threshold["value"] if threshold else None)
    out: dict[str, Any] = {
        "overall": stats_.metrics(),
        "invalid_codes": invalid_codes(predictions, tab, vocabulary, label_space),
        "scored_codes": scores_of(predictions) is not None,
    }
    if threshold:
        out["threshold"] = dict(threshold)
    if n_resamples > 0:
        out["intervals"] = bootstrap_intervals(stats_, n_resamples, confidence, seed, method)
        out["intervals_info"] = {"method": f"scipy.stats.bootstrap ({method}) over documents",
                                 "n_resamples": int(n_resamples), "confidence": float(confidence),
                                 "seed": int(seed)}
    return out
