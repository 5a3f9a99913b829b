"""Code metrics: hand-computed cases, edge cases, and a scikit-learn cross-check."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from ccl.eval.metrics import code_metrics, per_code_metrics, seen_unseen_metrics

# Three documents; label space (default) = gold union = {E11.9, I10, N18.3}.
GOLD = [["E11.9", "I10"], ["I10"], ["N18.3"]]
# Z99.9 is outside the label space and is dropped; "e119" is E11.9 again.
PRED = [["E11.9", "Z99.9", "e119"], ["I10", "E11.9"], []]


def test_hand_computed_micro_and_macro() -> None:
    m = code_metrics(GOLD, PRED)
    # doc1: E11.9 tp, I10 fn; doc2: I10 tp, E11.9 fp; doc3: N18.3 fn.
    assert (m["tp"], m["fp"], m["fn"], m["dropped_predictions"]) == (2, 1, 2, 1)
    assert (m["n_docs"], m["n_labels"]) == (3, 3)
    assert m["micro_precision"] == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert m["micro_recall"] == pytest.approx(2 / 4)  # 2 / (2 + 2)
    assert m["micro_f1"] == pytest.approx(4 / 7)  # 2*2 / (2*2 + 1 + 2)
    # Per code: E11.9 P=1/2 R=1 F1=2/3; I10 P=1 R=1/2 F1=2/3; N18.3 P=0 R=0 F1=0.
    assert m["macro_precision"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # 4/9
    # Macro F1 is the mean of per-code F1, not the F1 of macro P (1/2) and macro R (1/2).
    assert m["macro_f1"] != pytest.approx(0.5)


def test_per_code_metrics() -> None:
    per = per_code_metrics(GOLD, PRED)
    assert list(per) == ["E11.9", "I10", "N18.3"]
    keys = ("tp", "fp", "fn", "precision", "recall", "f1", "support")
    assert per["E11.9"] == dict(zip(keys, (1, 1, 0, 0.5, 1.0, pytest.approx(2 / 3), 1), strict=True))
    assert per["I10"] == dict(zip(keys, (1, 0, 1, 1.0, 0.5, pytest.approx(2 / 3), 2), strict=True))
    assert per["N18.3"] == dict(zip(keys, (0, 0, 1, 0.0, 0.0, 0.0, 1), strict=True))


def test_explicit_label_space_keeps_its_predictions_and_counts_unused_codes_as_zero() -> None:
    m = code_metrics(GOLD, PRED, label_space=["E11.9", "I10", "N18.3", "Z99.9", "K21.9"])
    # Z99.9 is now a fp of doc1; K21.9 has no gold and no prediction: F1 0.
    assert (m["tp"], m["fp"], m["fn"], m["dropped_predictions"], m["n_labels"]) == (2, 2, 2, 0, 5)
    assert m["micro_f1"] == pytest.approx(4 / 8)  # 2*2 / (4 + 2 + 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0 + 0) / 5)


def test_perfect_predictions() -> None:
    m = code_metrics(GOLD, [["I10", "E11.9"], ["I10"], ["n183"]])
    assert all(m[k] == 1.0 for k in m if k.startswith(("micro", "macro")))


def test_empty_predictions() -> None:
    m = code_metrics(GOLD, [[], [], []])
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 4)
    assert all(m[k] == 0.0 for k in m if k.startswith(("micro", "macro")))


def test_all_predictions_dropped() -> None:
    m = code_metrics(GOLD, [["A00.0"], ["B20", "C50.911"], ["Z00.00"]])
    assert (m["tp"], m["fp"], m["fn"], m["dropped_predictions"]) == (0, 0, 4, 4)
    assert m["micro_precision"] == 0.0


def test_empty_gold_means_empty_label_space() -> None:
    m = code_metrics([[], []], [["E11.9"], []])
    assert (m["n_labels"], m["dropped_predictions"], m["tp"], m["fp"], m["fn"]) == (0, 1, 0, 0, 0)
    assert all(m[k] == 0.0 for k in m if k.startswith(("micro", "macro")))
    assert code_metrics([], [])["n_docs"] == 0


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold has 3 documents but pred has 2"):
        code_metrics(GOLD, PRED[:2])
    with pytest.raises(TypeError, match=r"pred\[0\]"):
        code_metrics([["I10"]], ["I10"])
    with pytest.raises(ValueError, match="outside the label space"):
        code_metrics(GOLD, PRED, label_space=["I10"])


def test_json_friendly_types() -> None:
    m = code_metrics(GOLD, PRED)
    assert all(
        type(v)
        is (int if k in {"tp", "fp", "fn", "n_docs", "n_labels", "dropped_predictions"} else float)
        for k, v in m.items()
    )


def test_seen_unseen_hand_computed() -> None:
    res = seen_unseen_metrics(GOLD, PRED, seen_codes={"I10", "K21.9"})
    assert res["overall"] == {**code_metrics(GOLD, PRED), "n_codes": 3}
    seen, unseen = res["seen"], res["unseen"]
    # seen = {I10}: gold [[I10],[I10],[]], pred [[],[I10],[]] -> tp 1, fp 0, fn 1.
    assert (seen["n_codes"], seen["tp"], seen["fp"], seen["fn"]) == (1, 1, 0, 1)
    assert seen["micro_f1"] == pytest.approx(2 / 3) and seen["macro_f1"] == pytest.approx(2 / 3)
    # 4 canonical predictions, 1 kept.
    assert seen["dropped_predictions"] == 3
    # unseen = {E11.9, N18.3}: gold [[E11.9],[],[N18.3]], pred [[E11.9],[E11.9],[]].
    assert (unseen["n_codes"], unseen["tp"], unseen["fp"], unseen["fn"]) == (2, 1, 1, 1)
    assert unseen["micro_f1"] == pytest.approx(0.5)  # 2 / (2 + 1 + 1)
    assert unseen["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert unseen["macro_precision"] == pytest.approx((0.5 + 0) / 2)
    for key in ("tp", "fp", "fn"):
        assert seen[key] + unseen[key] == res["overall"][key]


def test_seen_unseen_with_no_unseen_codes() -> None:
    res = seen_unseen_metrics(GOLD, PRED, seen_codes={"E11.9", "I10", "N18.3"})
    assert res["unseen"]["n_codes"] == 0 and res["unseen"]["macro_f1"] == 0.0
    assert res["seen"]["macro_f1"] == pytest.approx(res["overall"]["macro_f1"])


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = [f"A{i:02d}.{j}" for i in range(10) for j in range(2)]
    gold = [list(rng.choice(vocab[:14], size=rng.integers(0, 5), replace=False)) for _ in range(40)]
    pred = [list(rng.choice(vocab, size=rng.integers(0, 6), replace=False)) for _ in range(40)]
    explicit = sorted(set(vocab[:16]) | {c for g in gold for c in g}) if seed % 2 else None
    m = code_metrics(gold, pred, label_space=explicit)
    space = explicit or sorted({c for g in gold for c in g})
    binarizer = MultiLabelBinarizer(classes=space)
    y_true = binarizer.fit_transform(gold)
    y_pred = binarizer.transform([[c for c in p if c in space] for p in pred])
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        assert m[f"{average}_precision"] == pytest.approx(p)
        assert m[f"{average}_recall"] == pytest.approx(r)
        assert m[f"{average}_f1"] == pytest.approx(f)
    assert m["n_labels"] == len(space)
    assert m["dropped_predictions"] == sum(c not in space for p in pred for c in p)
    per = per_code_metrics(gold, pred, label_space=explicit)
    _, _, f_each, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    assert [per[c]["f1"] for c in space] == pytest.approx(list(f_each))
    assert [per[c]["support"] for c in space] == list(support)
