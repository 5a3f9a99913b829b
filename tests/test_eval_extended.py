"""Issue 16 metrics: ranking (P@k, R@k, mAP, tuned threshold), category/chapter F1, bootstrap
intervals, the paired test, guideline checks and invalid-code rates. Hand-computed cases,
scikit-learn and scipy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ccl.eval.extended import apply_guidelines, extended_metrics, invalid_codes, threshold_from
from ccl.eval.guidelines import CodeRef, GuidelineChecker, note_references
from ccl.eval.hierarchy import chapter_mapper
from ccl.eval.metrics import code_metrics
from ccl.eval.ranking import (
    average_precision,
    keep_above,
    precision_recall_at_k,
    ranked_codes,
    tune_threshold,
)
from ccl.eval.stats import DocStats, bootstrap_intervals, paired_test

LN = math.log



# -- ranking -------------------------------------------------------------------------------


def test_ranking_orders_by_score_and_drops_codes_outside_the_space():
    scores = {"A": LN(0.2), "B": LN(0.9), "C": LN(0.5), "Z": LN(1.0)}
    assert ranked_codes(["A", "B", "C", "Z"], scores, {"A", "B", "C"}) == ["B", "C", "A"]
    # unscored codes rank after scored ones, in output order
    assert ranked_codes(["D", "A", "B"], {"A": LN(0.1)}, {"A", "B", "D"}) == ["A", "D", "B"]


def test_precision_and_recall_at_k_hand_computed():
    ranked = ["B", "C", "A"]
    gold = {"A", "B", "X", "Y"}
    # top 5 holds B and A (2 hits): P@5 = 2/5 (denominator k), R@5 = 2/4
    assert precision_recall_at_k(ranked, gold, 5) == (pytest.approx(0.4), pytest.approx(0.5))
    # top 1 = B: P@1 = 1, R@1 = 1/4
    assert precision_recall_at_k(ranked, gold, 1) == (pytest.approx(1.0), pytest.approx(0.25))
    p, r = precision_recall_at_k(ranked, set(), 5)
    assert p == 0.0 and math.isnan(r)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall_at_k(ranked, gold, 0)


def test_average_precision_hand_computed_and_equal_to_sklearn():
    # space of 5 codes; written B (0.9, gold), C (0.5, not gold), A (0.2, gold); gold also X (unwritten)
    space = ["A", "B", "C", "X", "Y"]
    scores = {"B": LN(0.9), "C": LN(0.5), "A": LN(0.2)}
    gold = {"A", "B", "X"}
    ranked = ranked_codes(list(scores), scores, set(space))
    # thresholds: B -> P=1, R=1/3; C -> P=1/2 (R unchanged); A -> P=2/3, R=2/3; zero block -> P=3/5, R=1
    hand = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    ap = average_precision(ranked, scores, gold, len(space))
    assert ap == pytest.approx(hand)
    y_true = [c in gold for c in space]
    y_score = [math.exp(scores[c]) if c in scores else 0.0 for c in space]
    assert ap == pytest.approx(average_precision_score(y_true, y_score))
    assert math.isnan(average_precision(ranked, scores, set(), len(space)))


def test_map_equals_sklearn_samples_average_on_random_runs():
    rng = np.random.default_rng(3)
    space = [f"A{i:02d}.{j}" for i in range(6) for j in range(3)]
    gold = [list(rng.choice(space, rng.integers(1, 5), replace=False)) for _ in range(30)]
    pred = [list(rng.choice(space, rng.integers(0, 7), replace=False)) for _ in range(30)]
    scores = [{c: float(LN(rng.uniform(0.01, 1))) for c in p} for p in pred]
    m = DocStats.build(gold, pred, space, scores=scores).metrics()
    y = np.array([[c in g for c in space] for g in gold])
    s = np.array([[math.exp(sc[c]) if c in sc else 0.0 for c in space] for sc in scores])
    assert m["map_label_space"] == pytest.approx(average_precision_score(y, s, average="samples"))
    # P@k checked against a direct top-k count
    for k in (5, 8, 15):
        direct = np.mean([sum(c in g for c in sorted(sc, key=lambda c: -sc[c])[:k]) / k
                          for g, sc in zip(gold, scores, strict=True)])
        assert m[f"precision_at_{k}"] == pytest.approx(direct)


def test_tuned_threshold_hand_computed():
    gold = [["A"], ["B"]]
    codes = [["A", "C"], ["B", "D"]]
    scores = [{"A": LN(0.8), "C": LN(0.3)}, {"B": LN(0.6), "D": LN(0.1)}]
    # any t in (0.3, 0.6] keeps A and B only: F1 = 1; the smallest such grid point is 0.31
    t, f1 = tune_threshold(gold, codes, scores, ["A", "B", "C", "D"])
    assert (t, f1) == (pytest.approx(0.31), pytest.approx(1.0))
    assert keep_above(["A", "C", "E"], scores[0], 0.5) == ["A", "E"]  # E unscored: kept
    rows = [{"gold_codes": g, "codes": c, "code_scores": s} for g, c, s in zip(gold, codes, scores, strict=True)]
    # threshold_from's label space is the validation gold codes: C and D must be gold somewhere
    rows.append({"gold_codes": ["C", "D"], "codes": [], "code_scores": {}})
    tuned = threshold_from(rows)
    assert tuned["value"] == pytest.approx(0.31) and tuned["val_micro_f1"] == pytest.approx(2 / 3)
    assert threshold_from([{"gold_codes": ["A"], "codes": ["A"]}]) is None  # no scores


# -- levels, weights, intervals, paired test -----------------------------------------------


def test_full_code_metrics_equal_code_metrics():
    rng = np.random.default_rng(0)
    space = [f"B{i:02d}.{j}" for i in range(4) for j in range(3)]
    gold = [list(rng.choice(space, rng.integers(1, 4), replace=False)) for _ in range(25)]
    pred = [list(rng.choice([*space, "Z99.9"], rng.integers(0, 5), replace=False)) for _ in range(25)]
    m = DocStats.build(gold, pred, space).metrics()
    ref = code_metrics(gold, pred, space)
    for k in ("micro_f1", "micro_precision", "micro_recall", "macro_f1", "macro_precision", "macro_recall"):
        assert m[k] == pytest.approx(ref[k]), k


def test_category_and_chapter_levels_hand_computed(tab):
    # gold E11.9 (ch. 4) and I10 (ch. 9); predicted E11.65 (outside the full-code space: right
    # category, wrong specificity) and J45.909 (ch. 10, outside every level's space).
    gold, pred, space = [["E11.9", "I10"]], [["E11.65", "J45.909"]], ["E11.9", "I10"]
    m = DocStats.build(gold, pred, space, chapter_mapper(tab)).metrics()
    assert m["micro_f1"] == 0.0
    # category: E11 tp, I10 fn -> P 1, R 1/2, F1 2/3
    assert (m["category_micro_precision"], m["category_micro_recall"]) == (1.0, 0.5)
    assert m["category_micro_f1"] == pytest.approx(2 / 3)
    assert m["chapter_micro_f1"] == pytest.approx(2 / 3)
    assert chapter_mapper(tab)("E11.9") == "4" and chapter_mapper(tab)("E11.999") == "4"


def test_weights_equal_duplicated_documents():
    gold = [["A01"], ["A02", "A03"], ["A01"]]
    pred = [["A01"], ["A02"], ["A03"]]
    space = ["A01", "A02", "A03"]
    w = DocStats.build(gold, pred, space).metrics(np.array([2, 0, 1]))
    dup = DocStats.build([gold[0], gold[0], gold[2]], [pred[0], pred[0], pred[2]], space).metrics()
    assert w == pytest.approx(dup)


def test_bootstrap_intervals_hold_the_point_and_are_seeded():
    rng = np.random.default_rng(1)
    space = [f"C{i:02d}" for i in range(10)]
    gold = [list(rng.choice(space, 3, replace=False)) for _ in range(40)]
    pred = [list(rng.choice(space, 3, replace=False)) for _ in range(40)]
    stats_ = DocStats.build(gold, pred, space)
    ci = bootstrap_intervals(stats_, n_resamples=300, seed=5)
    again = bootstrap_intervals(stats_, n_resamples=300, seed=5)
    point = stats_.metrics()
    assert ci == again and set(ci) == set(point)
    for k, (lo, hi) in ci.items():
        assert lo <= point[k] + 1e-9 and point[k] - 1e-9 <= hi, k
    assert ci["micro_f1"][1] - ci["micro_f1"][0] > 0.05  # 40 noisy documents: a real spread
    # a constant statistic: the interval collapses to the point
    one = DocStats.build([["C01"]] * 5, [["C01"]] * 5, ["C01"])
    assert bootstrap_intervals(one, 50)["micro_f1"] == [1.0, 1.0]


def test_paired_test_identical_runs_and_a_clear_difference():
    rng = np.random.default_rng(2)
    space = [f"D{i:02d}" for i in range(8)]
    gold = [list(rng.choice(space, 2, replace=False)) for _ in range(30)]
    noisy = [list(rng.choice(space, 2, replace=False)) for _ in range(30)]
    a = DocStats.build(gold, gold, space)  # perfect
    b = DocStats.build(gold, noisy, space)
    same = paired_test(b, b, n_resamples=200)
    assert same["micro_f1"]["diff"] == 0.0 and same["micro_f1"]["p_value"] == pytest.approx(1.0)
    res = paired_test(a, b, n_resamples=500, seed=1)
    assert res["micro_f1"]["diff"] == pytest.approx(1.0 - b.metrics()["micro_f1"])
    assert res["micro_f1"]["p_value"] < 0.01
    lo, hi = res["micro_f1"]["diff_ci"]
    assert 0 < lo <= res["micro_f1"]["diff"] <= hi
    with pytest.raises(ValueError, match="same documents"):
        paired_test(a, DocStats.build(gold[:5], gold[:5], space))


# -- guidelines and invalid codes ------------------------------------------------------------


def test_note_references():
    refs = note_references("sepsis (O03.37, O03.87) and perinatal (P35-P39) type 1 (E10.-), x (T81.44-)")
    assert refs == [CodeRef("O03.37", "O03.37"), CodeRef("O03.87", "O03.87"), CodeRef("P35", "P39"),
                    CodeRef("E10", "E10"), CodeRef("T81.44", "T81.44")]
    assert CodeRef("P35", "P39").matches("P37.1") and not CodeRef("P35", "P39").matches("P40")
    assert CodeRef("E10", "E10").matches("E10.9") and not CodeRef("E10", "E10").matches("E11.9")
    assert note_references("hypothyroidism, acquired (E00-E03.-)") == [CodeRef("E00", "E03")]
    assert note_references("certain localized infections - see body system-related chapters") == []


def test_guideline_checks_on_the_tabular_list(tab):
    g = GuidelineChecker(tab)
    # E11 excludes1 "type 1 diabetes mellitus (E10.-)"; S72.001 needs a 7th character;
    # I70.44 says "use additional code to identify severity of ulcer (L97.-)"; I10 has no such rule.
    flags = g.check(["E11.9", "E10.9", "S72.001", "I10", "I70.441"])
    assert flags.excludes1_pairs == [("E11.9", "E10.9")]
    assert flags.missing_seventh_character == ["S72.001"]
    assert flags.use_additional_code_missing == ["I70.441"]
    assert g.check(["I70.441", "L97.309"]).use_additional_code_missing == []
    # F02.80 "code first the underlying physiological condition, such as: Alzheimer's (G30.-)"
    assert g.check(["F02.80"]).code_first_missing == ["F02.80"]
    assert g.check(["G30.9", "F02.80"]).code_first_missing == []
    assert g.check(["S72.001A"]).missing_seventh_character == []
    per = flags.per_code()
    assert per["E10.9"] == ["excludes1:E11.9"] and "missing_7th_character" in per["S72.001"]


def test_repair_drops_the_lower_scored_code_of_an_excludes1_pair(tab):
    g = GuidelineChecker(tab)
    assert g.repair(["E11.9", "E10.9", "I10"], {"E11.9": -2.0, "E10.9": -0.5}) == (["E10.9", "I10"], ["E11.9"])
    assert g.repair(["E11.9", "E10.9"]) == (["E11.9"], ["E10.9"])  # no scores: the later one goes
    rows = [{"codes": ["E11.9", "E10.9"], "gold_codes": ["E11.9"], "code_scores": {"E11.9": -0.1, "E10.9": -3.0}}]
    repaired, block = apply_guidelines(rows, tab, "repair")
    assert repaired[0]["codes"] == ["E11.9"] and repaired[0]["repaired_from"] == ["E11.9", "E10.9"]
    assert block["excludes1_pairs"] == 1 and block["repair_dropped"] == 1 and block["docs_with_violation"] == 1
    same, block = apply_guidelines(rows, tab, "report")
    assert same[0]["codes"] == ["E11.9", "E10.9"] and "repair_dropped" not in block
    with pytest.raises(ValueError, match="report or repair"):
        apply_guidelines(rows, tab, "fix")


def test_invalid_code_rate(tab):
    rows = [{"codes": ["E11.9", "E11", "Q99.99", "I10", "J45.909"]}]
    out = invalid_codes(rows, tab, vocabulary=["E11.9", "I10"], label_space=["E11.9"])
    # E11 not billable, Q99.99 not in the list, J45.909 outside the vocabulary: 3 of 5
    assert (out["not_billable"], out["not_in_tabular"], out["outside_label_space"]) == (1, 1, 1)
    assert out["invalid_code_rate"] == pytest.approx(3 / 5)
    assert out["outside_test_label_space"] == 4


def test_extended_metrics_block(tab):
    rows = [{"gold_codes": ["E11.9"], "codes": ["E11.9", "I10"], "code_scores": {"E11.9": -0.1, "I10": -2.0}},
            {"gold_codes": ["I10"], "codes": ["I10"], "code_scores": {"I10": -0.2}}]
    out = extended_metrics(rows, ["E11.9", "I10"], tab, ["E11.9", "I10"], {"value": 0.5}, n_resamples=50)
    m = out["overall"]
    assert m["tuned_micro_f1"] == pytest.approx(1.0)  # I10 of doc 1 (p = 0.14) is cut at 0.5
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert m["precision_at_5"] == pytest.approx((1 / 5 + 1 / 5) / 2) and m["map_label_space"] == pytest.approx(1.0)
    assert m["map_trec"] == pytest.approx(1.0) and m["map_trec_complete"] == pytest.approx(1.0)
    assert out["invalid_codes"]["invalid_code_rate"] == 0.0
    assert set(out["intervals"]) == set(m) and out["intervals_info"]["n_resamples"] == 50


def test_run_writes_the_extended_metrics(tmp_path):
    """A tiny end-to-end run with restricted decoding: every issue-16 block in metrics.json."""
    import json

    from rich.console import Console
    from test_run import compose_cfg

    from ccl.run import run

    cfg = compose_cfg(tmp_path, "infer.restrict_codes=true", "eval.bootstrap_resamples=50",
                      "eval.guidelines=repair", "infer.split=test", "eval.tune_threshold=true")
    metrics = run(cfg, tmp_path / "run", Console(quiet=True))
    folder = tmp_path / "run"
    overall = metrics["codes"]["overall"]
    for key in ("category_micro_f1", "chapter_micro_f1", "precision_at_5", "recall_at_15", "map_label_space",
                "map_trec", "tuned_micro_f1"):
        assert 0.0 <= overall[key] <= 1.0, key
    assert set(metrics["intervals"]) >= {"micro_f1", "macro_f1", "map_label_space", "map_trec", "precision_at_8"}
    assert metrics["invalid_codes"]["invalid_code_rate"] == 0.0
    assert metrics["guidelines"]["mode"] == "repair" and "excludes1_pairs" in metrics["guidelines"]
    assert 0.0 <= metrics["threshold"]["value"] < 1.0 and metrics["threshold"]["val_docs"] == 4
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert all("code_scores" in r for r in rows)
    assert (folder / "val" / "predictions.jsonl").exists() and (folder / "restrict_codes.json").exists()
    assert json.loads((folder / "metrics.json").read_text())["intervals_info"]["n_resamples"] == 50
