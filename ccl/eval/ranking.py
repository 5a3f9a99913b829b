"""Ranking metrics from per-code scores, as medical-coding-reproducibility (Edin et al.) reports them.

A generative coder scores only the codes it wrote (:mod:`ccl.predict.scores`: the
log-probability of each code's tokens). Conventions, per document, over the codes of
the label space (codes outside it are dropped first, as for F1):

* **Ranking.** Written codes in descending score (ties: output order); codes the model
  did not write rank below all of them and are never a hit in a top k.
* **P@k** = (gold codes among the top k) / k, the denominator k even when fewer codes
  were written (Edin et al., CAML). Mean over all documents.
* **R@k** = (gold codes among the top k) / (gold codes of the document). Mean over the
  documents with at least one gold code.
* **Two MAPs**, named for what they are (peers report both kinds under "MAP"):

  - ``map_label_space``: scikit-learn's ``average_precision_score`` of the document's
    label-space row: y_true the gold indicator, y_score exp(score) for written codes and 0
    for the rest (so unwritten gold codes share the lowest threshold, as in a
    discriminative model's score matrix: a missed code still earns |gold| / |label space|
    at that threshold). Mean over the documents with at least one gold code (=
    ``average_precision_score(Y, S, average="samples")`` on those rows). This is the mAP
    of medical-coding-reproducibility (Edin et al.), whose models score every code.
  - ``map_trec``: TREC-style MAP over the ranked list the model wrote, as the official
    CodiEsp scorer computes it (TeMU-BSC codiesp-evaluation-script, CodiEsp-D/P, which
    calls trectools' ``TrecEval.get_map(trec_eval=False)``): every written code ranks
    (duplicates dropped, the first kept; codes outside the code system dropped first, as
    the scorer drops codes missing from its valid-code list; codes outside the test label
    space stay, as non-relevant), and
    AP = (sum of the precision at the rank of each gold code retrieved) / (gold codes of
    the document), 0 for a document without gold codes. The mean is over the documents
    with at least one ranked code: a document the model wrote no code for is left out
    (trectools divides by the run's queries), a written-but-ungolded one counts 0.
  - ``map_trec_complete``: the same AP averaged over every document with a gold code,
    a document with no ranked code counting 0 (trec_eval's ``-c``, "complete"): unlike
    ``map_trec`` it does not reward writing nothing for hard documents.

* **Tuned threshold.** A code is kept when exp(score) >= t; t is chosen on the
  validation split from 0.00, 0.01, ..., 0.99 to maximise micro-F1 (Edin et al. tune
  on validation the same way); the smallest t wins a tie.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import numpy as np

from ccl.eval.metrics import code_metrics
from ccl.icd.codes import canonical_code

TOP_K = (5, 8, 15)
THRESHOLD_GRID = tuple(round(0.01 * i, 2) for i in range(100))


def ranked_codes(codes: Sequence[str], scores: Mapping[str, float], space: Container[str] | None) -> list[str]:
    """Written codes in descending score (ties and unscored codes keep output order), deduplicated.

    Only codes in ``space`` are kept (``None`` keeps every code). A code without a score
    ranks after every scored code.
    """
    kept = list(dict.fromkeys(c for c in map(canonical_code, codes) if space is None or c in space))
    canon = {canonical_code(k): float(v) for k, v in scores.items()}
    order = {c: i for i, c in enumerate(kept)}
    return sorted(kept, key=lambda c: (c not in canon, -canon.get(c, 0.0), order[c]))


def precision_recall_at_k(ranked: Sequence[str], gold: set[str], k: int) -> tuple[float, float]:
    """(P@k, R@k) of one document; R@k is NaN when the document has no gold code."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = sum(c in gold for c in ranked[:k])
    return hits / k, (hits / len(gold) if gold else float("nan"))


def average_precision(ranked: Sequence[str], scores: Mapping[str, float], gold: set[str], n_space: int) -> float:
    """scikit-learn's average precision of one label-space row (NaN without gold codes).

    ``n_space`` is the size of the label space: the unwritten codes form one block at
    score 0 (the last threshold, where recall reaches 1).
    """
    if not gold:
        return float("nan")
    canon = {canonical_code(k): float(v) for k, v in scores.items()}
    keys = [canon.get(c, -np.inf) for c in ranked]  # log-probabilities: no underflow to the zero block
    # Group equal scores (one threshold each), descending, then the zero block.
    ap, tp, fp, prev_recall, i = 0.0, 0, 0, 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and keys[j] == keys[i]:
            j += 1
        tp += sum(c in gold for c in ranked[i:j])
        fp += sum(c not in gold for c in ranked[i:j])
        recall = tp / len(gold)
        ap += (recall - prev_recall) * tp / (tp + fp)
        prev_recall, i = recall, j
    rest_gold = len(gold) - tp
    if rest_gold:
        # The zero block holds every unwritten code; at that threshold everything is predicted.
        ap += (1.0 - prev_recall) * len(gold) / n_space
    return ap


def trec_average_precision(ranked: Sequence[str], gold: set[str]) -> float:
    """TREC average precision of one ranked list (trec_eval's ``map``, the CodiEsp scorer's AP).

    ``ranked``: distinct codes, best first; ``gold``: the relevant codes. AP = sum over the
    ranks r (1-based) holding a gold code of (gold codes in the top r) / r, divided by
    |gold|; gold codes never retrieved add 0. A document without gold codes has AP 0 (the
    CodiEsp scorer's value for a query without relevant documents).
    """
    if not gold:
        return 0.0
    hits, total = 0, 0.0
    for rank, code in enumerate(ranked, start=1):
        if code in gold:
            hits += 1
            total += hits / rank
    return total / len(gold)


def trec_map(
    gold: Sequence[Sequence[str]],
    ranked: Sequence[Sequence[str]],
    complete: bool = False,
) -> float:
    """Mean of :func:`trec_average_precision` over documents; see the module docs.

    ``gold[i]`` and ``ranked[i]`` are document i's gold codes and its written codes in rank
    order (canonicalised and deduplicated here, first occurrence kept). ``complete=False``
    (``map_trec``, the official CodiEsp scorer): mean over the documents with at least one
    ranked code; ``complete=True`` (``map_trec_complete``, trec_eval ``-c``): mean over the
    documents with at least one gold code. 0.0 when no document qualifies.
    """
    if len(gold) != len(ranked):
        raise ValueError(f"gold has {len(gold)} documents but ranked has {len(ranked)}")
    values = []
    for g, r in zip(gold, ranked, strict=True):
        g_set = {canonical_code(c) for c in g}
        r_list = list(dict.fromkeys(map(canonical_code, r)))
        if (g_set if complete else r_list):
            values.append(trec_average_precision(r_list, g_set))
    return float(np.mean(values)) if values else 0.0


def keep_above(codes: Sequence[str], scores: Mapping[str, float], threshold: float) -> list[str]:
    """Codes whose probability exp(score) is at least ``threshold`` (unscored codes are kept)."""
    canon = {canonical_code(k): float(v) for k, v in scores.items()}
    return [c for c in codes if canonical_code(c) not in canon or np.exp(canon[canonical_code(c)]) >= threshold]


def tune_threshold(
    gold: Sequence[Sequence[str]],
    codes: Sequence[Sequence[str]],
    scores: Sequence[Mapping[str, float]],
    label_space: Sequence[str] | None = None,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, float]:
    """(threshold, micro-F1 there) maximising micro-F1 over ``grid`` (smallest threshold on ties)."""
    best = (float(grid[0]), -1.0)
    for t in grid:
        kept = [keep_above(c, s, t) for c, s in zip(codes, scores, strict=True)]
        f1 = code_metrics(gold, kept, label_space)["micro_f1"]
        if f1 > best[1] + 1e-12:
            best = (float(t), float(f1))
    return best
