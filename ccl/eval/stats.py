"""Every reported code metric as a function of document weights, for bootstrap intervals
and paired tests over documents.

:class:`DocStats` holds, per document, the tp/fp/fn *events* at each level (full code,
category, chapter, and full code after a tuned threshold) and the per-document ranking
values (P@k, R@k, AP). :meth:`DocStats.metrics` computes every metric from a weight
per document (how often a bootstrap resample drew it); weights of one reproduce the
point estimates, which equal :func:`ccl.eval.metrics.code_metrics` and
:mod:`ccl.eval.ranking` (tested).

Intervals are ``scipy.stats.bootstrap`` over document indices (percentile method by
default: BCa needs a jackknife over every document and breaks down on the degenerate
statistics of small runs), seeded. The paired test between two runs on the same
documents is ``scipy.stats.permutation_test`` with ``permutation_type="samples"``: under
the null the two runs' outputs on a document are exchangeable, so each permutation swaps
them on a random subset of documents; the p-value is two-sided. A paired bootstrap
interval of the difference is given beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ccl.eval.ranking import (
    TOP_K,
    average_precision,
    keep_above,
    precision_recall_at_k,
    ranked_codes,
    trec_average_precision,
)
from ccl.icd.codes import canonical_code

Mapper = Callable[[str], str]


@dataclass
class _Events:
    """tp/fp/fn events of one level: (document index, unit index) pairs per kind."""

    units: list[str]
    doc: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> doc index per event
    unit: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> unit index per event

    @classmethod
    def build(cls, gold: Sequence[set[str]], pred: Sequence[set[str]], units: list[str]) -> _Events:
        pos = {u: i for i, u in enumerate(units)}
        ev = cls(units)
        for kind, pick in (("tp", lambda g, p: g & p), ("fp", lambda g, p: p - g), ("fn", lambda g, p: g - p)):
            pairs = [(d, pos[u]) for d, (g, p) in enumerate(zip(gold, pred, strict=True)) for u in sorted(pick(g, p))]
            arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
            ev.doc[kind], ev.unit[kind] = arr[:, 0], arr[:, 1]
        return ev

    def shifted(self, offset: int) -> _Events:
        return _Events(self.units, {k: v + offset for k, v in self.doc.items()}, dict(self.unit))

    def joined(self, other: _Events) -> _Events:
        if self.units != other.units:
            raise ValueError("paired runs must share the label space")
        return _Events(self.units, {k: np.concatenate([self.doc[k], other.doc[k]]) for k in self.doc},
                       {k: np.concatenate([self.unit[k], other.unit[k]]) for k in self.unit})

    def metrics(self, w: np.ndarray, prefix: str, macro: bool = True) -> dict[str, float]:
        n = len(self.units)
        counts = {k: np.bincount(self.unit[k], weights=w[self.doc[k]], minlength=n) for k in ("tp", "fp", "fn")}
        tp, fp, fn = (float(counts[k].sum()) for k in ("tp", "fp", "fn"))
        out = {
            f"{prefix}micro_precision": tp / (tp + fp) if tp + fp else 0.0,
            f"{prefix}micro_recall": tp / (tp + fn) if tp + fn else 0.0,
            f"{prefix}micro_f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        }
        if macro:
            t, f_p, f_n = counts["tp"], counts["fp"], counts["fn"]
            p = np.divide(t, t + f_p, out=np.zeros(n), where=t + f_p > 0)
            r = np.divide(t, t + f_n, out=np.zeros(n), where=t + f_n > 0)
            f1 = np.divide(2 * p * r, p + r, out=np.zeros(n), where=p + r > 0)
            out |= {f"{prefix}macro_precision": float(p.mean()) if n else 0.0,
                    f"{prefix}macro_recall": float(r.mean()) if n else 0.0,
                    f"{prefix}macro_f1": float(f1.mean()) if n else 0.0}
        return out


def _level_sets(gold: Sequence[set[str]], pred: Sequence[set[str]], space: set[str], to: Mapper):
    units = {to(c) for c in space}
    return [{to(c) for c in g} for g in gold], [{to(c) for c in p} & units for p in pred], sorted(units)


@dataclass
class DocStats:
    """Per-document ingredients of every metric; see the module docs."""

    n_docs: int
    levels: dict[str, _Events]
    ranking: dict[str, np.ndarray]  # name -> per-document value (NaN: not defined there)

    @classmethod
    def build(
        cls,
        gold: Sequence[Sequence[str]],
        pred: Sequence[Sequence[str]],
        label_space: Sequence[str],
        chapter_of: Mapper | None = None,
        scores: Sequence[Mapping[str, float]] | None = None,
        threshold: float | None = None,
        valid_codes: Container[str] | None = None,
    ) -> DocStats:
        """Events and ranking values of one run.

        ``pred`` holds every parsed code (outside the label space too: the category and
        chapter levels credit them); ``scores`` the per-code log-probabilities (ranking
        metrics need them); ``threshold`` a tuned probability threshold (level
        ``tuned``); ``valid_codes`` the codes of the code system (``map_trec`` ranks the
        written codes in it, as the CodiEsp scorer keeps only codes of its valid-code
        list; None ranks every written code).
        """
        if len(gold) != len(pred):
            raise ValueError(f"gold has {len(gold)} documents but pred has {len(pred)}")
        space = {canonical_code(c) for c in label_space}
        g = [{canonical_code(c) for c in codes} for codes in gold]
        p_all = [{canonical_code(c) for c in codes} for codes in pred]
        outside = sorted(set().union(*g) - space) if g else []
        if outside:
            raise ValueError(f"{len(outside)} gold codes are outside the label space, e.g. {outside[:5]}")
        p = [x & space for x in p_all]
        codes = sorted(space)
        levels = {"": _Events.build(g, p, codes)}
        levels["category_"] = _Events.build(*_level_sets(g, p_all, space, lambda c: c[:3]))
        if chapter_of is not None:
            levels["chapter_"] = _Events.build(*_level_sets(g, p_all, space, chapter_of))
        ranking: dict[str, np.ndarray] = {}
        if scores is not None:
            if len(scores) != len(pred):
                raise ValueError(f"scores has {len(scores)} documents but pred has {len(pred)}")
            ranked = [ranked_codes(codes_, s, space) for codes_, s in zip(pred, scores, strict=True)]
            for k in TOP_K:
                pr = [precision_recall_at_k(r, gd, k) for r, gd in zip(ranked, g, strict=True)]
                ranking[f"precision_at_{k}"] = np.array([x[0] for x in pr])
                ranking[f"recall_at_{k}"] = np.array([x[1] for x in pr])
            ranking["map_label_space"] = np.array([average_precision(r, s, gd, len(space))
                                                   for r, s, gd in zip(ranked, scores, g, strict=True)])
            # TREC-style: every written code of the code system ranks, the test label space's or not.
            trec = [ranked_codes(codes_, s, valid_codes) for codes_, s in zip(pred, scores, strict=True)]
            ap = [trec_average_precision(r, gd) for r, gd in zip(trec, g, strict=True)]
            ranking["map_trec"] = np.array([a if r else np.nan for a, r in zip(ap, trec, strict=True)])
            ranking["map_trec_complete"] = np.array([a if gd else np.nan for a, gd in zip(ap, g, strict=True)])
            if threshold is not None:
                kept = [{canonical_code(c) for c in keep_above(sorted(x), s, threshold)}
                        for x, s in zip(p, scores, strict=True)]
                levels["tuned_"] = _Events.build(g, kept, codes)
        return cls(len(g), levels, ranking)

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, float]:
        """Every metric under document ``weights`` (default: each document once)."""
        w = np.ones(self.n_docs) if weights is None else np.asarray(weights, dtype=float)
        out: dict[str, float] = {}
        for prefix, ev in self.levels.items():
            out |= ev.metrics(w, prefix, macro=prefix in ("", "category_", "chapter_"))
        for name, values in self.ranking.items():
            ok = ~np.isnan(values)
            den = float(w[ok].sum())
            out[name] = float((w[ok] * values[ok]).sum() / den) if den else 0.0
        return out

    def paired_with(self, other: DocStats) -> DocStats:
        """This run's documents 0..n-1, then ``other``'s as n..2n-1 (for a paired test)."""
        if (other.n_docs != self.n_docs or set(other.levels) != set(self.levels)
                or set(other.ranking) != set(self.ranking)):
            raise ValueError("paired runs must have the same documents and the same metrics")
        levels = {k: ev.joined(other.levels[k].shifted(self.n_docs)) for k, ev in self.levels.items()}
        ranking = {k: np.concatenate([v, other.ranking[k]]) for k, v in self.ranking.items()}
        return DocStats(2 * self.n_docs, levels, ranking)


def _vector(stats_: DocStats, keys: list[str], idx: np.ndarray, n: int) -> np.ndarray:
    m = stats_.metrics(np.bincount(np.asarray(idx, dtype=np.int64), minlength=n))
    return np.array([m[k] for k in keys])


def bootstrap_intervals(
    stats_: DocStats, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0, method: str = "percentile"
) -> dict[str, list[float]]:
    """``metric -> [low, high]``: bootstrap interval over documents (scipy.stats.bootstrap)."""
    point = stats_.metrics()
    keys = sorted(point)
    if stats_.n_docs < 2 or n_resamples < 1:
        return {k: [point[k], point[k]] for k in keys}
    res = stats.bootstrap(
        (np.arange(stats_.n_docs),), lambda idx: _vector(stats_, keys, idx, stats_.n_docs),
        vectorized=False, n_resamples=int(n_resamples), confidence_level=float(confidence),
        method=method, random_state=np.random.default_rng(seed),
    )
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    # A statistic constant over resamples gives NaN bounds: the interval is the point.
    return {k: [float(point[k] if np.isnan(a) else a), float(point[k] if np.isnan(b) else b)]
            for k, a, b in zip(keys, lo, hi, strict=True)}


def paired_test(
    a: DocStats, b: DocStats, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """``metric -> {a, b, diff, p_value, diff_ci}`` for two runs on the same documents.

    ``diff`` = a - b; ``p_value`` from a paired permutation test (two-sided, with
    scipy's exact test when 2^n <= n_resamples); ``p_floor`` the smallest p-value that test
    can give (randomised: 2 / (n_resamples + 1), scipy counting the observed statistic once;
    exact: 2 / 2^n), so a ``p_value`` at the floor is an upper bound, reported as
    ``p <= p_floor``; ``diff_ci`` a paired bootstrap interval of the difference.
    """
    n = a.n_docs
    both = a.paired_with(b)
    pa, pb = a.metrics(), b.metrics()
    keys = sorted(pa)
    rng = np.random.default_rng(seed)

    def diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _vector(both, keys, x, 2 * n) - _vector(both, keys, y, 2 * n)

    def diff_rows(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # Vectorised form (metrics on the last axis): scipy's permutation_test compares a
        # multi-output null distribution with the observed value that way.
        if np.ndim(x) == 1:
            return diff(x, y)
        return np.stack([diff(a, b) for a, b in zip(np.asarray(x), np.asarray(y), strict=True)])

    exact = n >= 1 and 2 ** n <= int(n_resamples)
    floor = min(1.0, 2 / 2 ** n if exact else 2 / (int(n_resamples) + 1))
    out = {k: {"a": pa[k], "b": pb[k], "diff": pa[k] - pb[k], "p_value": 1.0, "p_floor": floor,
               "diff_ci": [pa[k] - pb[k]] * 2} for k in keys}
    if n < 2:
        return out
    perm = stats.permutation_test((np.arange(n), np.arange(n) + n), diff_rows, vectorized=True,
                                  permutation_type="samples", n_resamples=int(n_resamples),
                                  alternative="two-sided", random_state=rng)
    boot = stats.bootstrap((np.arange(n),), lambda i: diff(i, i + n), vectorized=False,
                           n_resamples=int(n_resamples), confidence_level=float(confidence),
                           method="percentile", random_state=rng)
    lo, hi = np.atleast_1d(boot.confidence_interval.low), np.atleast_1d(boot.confidence_interval.high)
    for k, p, low, high in zip(keys, np.atleast_1d(perm.pvalue), lo, hi, strict=True):
        d = out[k]["diff"]
        out[k]["p_value"] = float(min(1.0, p)) if not np.isnan(p) else 1.0
        out[k]["diff_ci"] = [float(d if np.isnan(low) else low), float(d if np.isnan(high) else high)]
    return out
