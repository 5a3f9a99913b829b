"""Code-level metrics as in the paper and Edin et al. (medical-coding-reproducibility).

Conventions (peers differ, so they are spelled out):

* Codes are canonicalised (:func:`ccl.icd.codes.canonical_code`) and deduplicated
  per document before counting.
* **Label space.** Defaults to the union of the gold codes of the evaluated
  documents (the test label space), so every code in it has support >= 1.
  Predicted codes outside the label space are dropped first and counted in
  ``dropped_predictions``. A gold code outside an explicit label space is an
  error: pass a label space that covers the gold codes.
* **Micro** P/R/F1 pool tp, fp, fn over all documents and codes;
  F1 = 2tp / (2tp + fp + fn).
* **Macro** P/R/F1 are means over the codes of the label space: the denominator
  is ``n_labels`` = |label space|. Per-code P, R and F1 = 2PR/(P+R) are 0 when
  undefined (no predictions, no gold, or P = R = 0), as in Edin et al. and
  scikit-learn's ``zero_division=0``; so a code of an explicit label space with
  no gold and no prediction adds 0 to the macro sums. ``macro_f1`` is the mean of
  per-code F1, not the F1 of macro P and macro R.
* With no documents or an empty label space every rate is 0.0.

Rates are Python floats in [0, 1]; counts are ints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ccl.icd.codes import canonical_code

Metrics = dict[str, float | int]


def _code_sets(name: str, docs: Sequence[Sequence[str]]) -> list[set[str]]:
    sets = []
    for i, codes in enumerate(docs):
        if isinstance(codes, str):
            raise TypeError(f"{name}[{i}]: expected a sequence of codes, got the string {codes!r}")
        sets.append({canonical_code(c) for c in codes})
    return sets


def _prepare(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], label_space: Iterable[str] | None
) -> tuple[list[set[str]], list[set[str]], list[str], int]:
    """Canonical gold/pred sets restricted to the label space, the sorted space, drops."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} documents but pred has {len(pred)}")
    gold_sets = _code_sets("gold", gold)
    pred_sets = _code_sets("pred", pred)
    if label_space is None:
        space = set().union(*gold_sets)
    else:
        if isinstance(label_space, str):
            raise TypeError(f"label_space: expected an iterable of codes, got the string {label_space!r}")
        space = {canonical_code(c) for c in label_space}
        outside = sorted(set().union(*gold_sets) - space)
        if outside:
            raise ValueError(
                f"{len(outside)} gold codes are outside the label space, e.g. {outside[:5]}: "
                "pass a label space that covers the gold codes"
            )
    kept = [p & space for p in pred_sets]
    dropped = sum(len(p) - len(k) for p, k in zip(pred_sets, kept, strict=True))
    return gold_sets, kept, sorted(space), dropped


def _counts(gold_sets: list[set[str]], pred_sets: list[set[str]], codes: list[str]) -> np.ndarray:
    """Per-code (tp, fp, fn) as an int array of shape (len(codes), 3)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold_sets, pred_sets, strict=True):
        tp.update(g & p)
        fp.update(p - g)
        fn.update(g - p)
    rows = [(tp[c], fp[c], fn[c]) for c in codes]
    return np.array(rows, dtype=np.int64).reshape(len(codes), 3)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def _summary(gold_sets: list[set[str]], pred_sets: list[set[str]], codes: list[str], dropped: int) -> Metrics:
    counts = _counts(gold_sets, pred_sets, codes)
    tp, fp, fn = (int(x) for x in counts.sum(axis=0))
    micro_p, micro_r, micro_f1 = (float(x) for x in _prf(np.array(tp), np.array(fp), np.array(fn)))
    per_p, per_r, per_f1 = _prf(counts[:, 0], counts[:, 1], counts[:, 2])

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(codes) else 0.0

    return {
        "micro_f1": micro_f1,
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "macro_f1": mean(per_f1),
        "macro_precision": mean(per_p),
        "macro_recall": mean(per_r),
        "n_docs": len(gold_sets),
        "n_labels": len(codes),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "dropped_predictions": dropped,
    }


def code_metrics(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    label_space: Iterable[str] | None = None,
) -> Metrics:
    """Micro and macro P/R/F1 of ``pred`` against ``gold`` (one code list per document).

    Keys: micro_{f1,precision,recall}, macro_{f1,precision,recall} (macro denominator:
    ``n_labels`` = |label space|), n_docs, n_labels, tp, fp, fn, dropped_predictions.
    ``label_space`` defaults to the union of the gold codes; see the module docs.
    """
    gold_sets, pred_sets, codes, dropped = _prepare(gold, pred, label_space)
    return _summary(gold_sets, pred_sets, codes, dropped)


def per_code_metrics(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    label_space: Iterable[str] | None = None,
) -> dict[str, dict[str, float | int]]:
    """For each label-space code (sorted): tp, fp, fn, precision, recall, f1, support.

    ``support`` is the number of documents with the code in gold (= tp + fn).
    """
    gold_sets, pred_sets, codes, _ = _prepare(gold, pred, label_space)
    counts = _counts(gold_sets, pred_sets, codes)
    precision, recall, f1 = _prf(counts[:, 0], counts[:, 1], counts[:, 2])
    return {
        code: {
            "tp": int(counts[i, 0]),
            "fp": int(counts[i, 1]),
            "fn": int(counts[i, 2]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(counts[i, 0] + counts[i, 2]),
        }
        for i, code in enumerate(codes)
    }


def seen_unseen_metrics(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    seen_codes: set[str],
    label_space: Iterable[str] | None = None,
) -> dict[str, Metrics]:
    """Metrics overall and restricted to the seen and the unseen codes of the label space.

    A label-space code is *seen* when it is in ``seen_codes`` (the codes of the
    document-level training data), *unseen* otherwise. For each subset, gold and
    predictions are filtered to the subset and :func:`code_metrics` is computed
    with the subset as label space (so ``dropped_predictions`` there counts every
    prediction outside the subset, the other subset's included). The micro counts
    tp, fp, fn of "seen" and "unseen" add up to those of "overall". Each dict has
    ``n_codes`` (= ``n_labels``) added.
    """
    gold_sets, pred_sets, codes, dropped = _prepare(gold, pred, label_space)
    seen = {canonical_code(c) for c in seen_codes}
    subsets = {
        "overall": codes,
        "seen": [c for c in codes if c in seen],
        "unseen": [c for c in codes if c not in seen],
    }
    pred_total = dropped + sum(len(p) for p in pred_sets)
    result: dict[str, Metrics] = {}
    for name, subset in subsets.items():
        keep = set(subset)
        sub_gold = [g & keep for g in gold_sets]
        sub_pred = [p & keep for p in pred_sets]
        sub_dropped = pred_total - sum(len(p) for p in sub_pred)
        metrics = _summary(sub_gold, sub_pred, subset, sub_dropped)
        metrics["n_codes"] = len(subset)
        result[name] = metrics
    return result
