"""``python -m ccl.report``: Table 3 with intervals and the paired test between rows 3 and 4."""

from __future__ import annotations

import json

from test_report import copy_runs, md_header, md_rows, read_jsonl, runs, write_jsonl  # noqa: F401

from ccl.report.cli import main as report_main


def test_table3_with_intervals_and_a_paired_test_of_rows_3_and_4(runs, tmp_path):  # noqa: F811
    copies = copy_runs(runs["sweep"], tmp_path / "sweep")
    gold = [r["gold_codes"] for r in read_jsonl(copies["ablation_row4"] / "predictions.jsonl")]
    # Row 4 codes every document right; row 3 codes none: a clear, paired difference.
    for name, rows in (("ablation_row4", [list(g) for g in gold]), ("ablation_row3", [[] for _ in gold])):
        preds = read_jsonl(copies[name] / "predictions.jsonl")
        for p, codes in zip(preds, rows, strict=True):
            p["codes"] = codes
            p["code_scores"] = {c: -0.1 for c in codes}
        write_jsonl(copies[name] / "predictions.jsonl", preds)
        # an older metrics.json without intervals: the report recomputes them from the predictions
        metrics = json.loads((copies[name] / "metrics.json").read_text())
        metrics.pop("intervals", None)
        metrics["codes"]["overall"]["micro_f1"] = 1.0 if name.endswith("4") else 0.0
        (copies[name] / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "out"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    table = out / "tables" / "table3_intervals.md"
    header = md_header(table)
    assert {"Micro F1", "Micro F1 95% CI", "Macro F1 95% CI", "Category F1 95% CI"} <= set(header)
    by_row = {r[0]: r for r in md_rows(table)}
    assert by_row["4"][header.index("Micro F1")] == "100.0"
    assert by_row["4"][header.index("Micro F1 95% CI")] == "[100.0, 100.0]"
    assert by_row["3"][header.index("Micro F1 95% CI")] == "[0.0, 0.0]"
    text = table.read_text()
    note = next(line for line in text.splitlines() if "Paired test row 4 - row 3" in line)
    assert "micro F1 +100.0 pts" in note
    # six documents: the exact permutation test's smallest two-sided p is 2/64, a bound
    assert "p <= 0.031" in note and "p = " not in note
    assert "table3_intervals" in (out / "report.md").read_text() or "Table 3 with 95% intervals" in (
        out / "report.md").read_text()


def test_figure3_with_intervals_scores_seen_and_unseen_subsets(runs, tmp_path):  # noqa: F811
    copies = copy_runs(runs["sweep"], tmp_path / "sweep")
    seen = {c for r in read_jsonl(copies["ablation_row4"] / "data" / "train.jsonl") for c in r["codes"]}
    gold = [r["gold_codes"] for r in read_jsonl(copies["ablation_row4"] / "predictions.jsonl")]
    unseen = {c for g in gold for c in g} - seen
    assert unseen and seen, "the tiny sweep's test set must hold seen and unseen codes"
    # Row 4 writes exactly the unseen gold codes, row 3 exactly the seen ones.
    for name, keep in (("ablation_row4", unseen), ("ablation_row3", seen)):
        preds = read_jsonl(copies[name] / "predictions.jsonl")
        for p, g in zip(preds, gold, strict=True):
            p["codes"] = [c for c in g if c in keep]
        write_jsonl(copies[name] / "predictions.jsonl", preds)
    out = tmp_path / "out"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    table = out / "tables" / "fig3_intervals.md"
    header = md_header(table)
    rows = {r[0]: r for r in md_rows(table) if r[0] in ("3", "4")}
    assert rows["4"][header.index("Unseen micro F1")] == "100.0"
    assert rows["4"][header.index("Seen micro F1")] == "0.0"
    assert rows["3"][header.index("Unseen micro F1")] == "0.0"
    assert rows["3"][header.index("Seen micro F1")] == "100.0"
    assert rows["4"][header.index("Unseen 95% CI")].startswith("[100.0, 100.0]")
    note = next(line for line in table.read_text().splitlines() if "Paired test row 4 - row 3, unseen" in line)
    assert "micro F1 +100.0 pts" in note
