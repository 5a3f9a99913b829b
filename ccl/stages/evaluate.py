"""The eval stage: ``predictions.jsonl`` -> ``metrics.json`` and a rich table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.data.records import Document
from ccl.eval.evidence import evidence_metrics
from ccl.eval.metrics import seen_unseen_metrics

METRICS = "metrics.json"


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Read ``predictions.jsonl``; a broken line is an error naming file and line."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    return rows


def evaluate(
    predictions: list[dict[str, Any]],
    docs: list[Document],
    label_space: list[str] | None,
    seen_codes: set[str],
) -> dict[str, Any]:
    """Code metrics overall / seen / unseen, plus evidence metrics where gold evidence exists.

    Predictions outside ``label_space`` (the test split's gold codes) are dropped,
    as in the paper; macro averages run over the codes of that label space.
    """
    by_id = {d.id: d for d in docs}
    missing = [p["id"] for p in predictions if p["id"] not in by_id]
    if missing:
        raise ValueError(f"predictions for unknown document ids: {missing[:5]}")
    gold = [p["gold_codes"] for p in predictions]
    if label_space is None:
        label_space = sorted({c for codes in gold for c in codes})
    pred = [p["codes"] for p in predictions]
    result: dict[str, Any] = {
        "codes": seen_unseen_metrics(gold, pred, seen_codes, label_space=label_space),
        "label_space": {"size": len(label_space), "seen": len(set(label_space) & seen_codes),
                        "unseen": len(set(label_space) - seen_codes),
                        "macro_average_over": "codes of the test label space (gold codes of the split)"},
        "n_docs": len(predictions),
    }
    if any("note_tokens_cut" in p for p in predictions):  # predictions of the shared prompt builder
        cut = [int(p.get("note_tokens_cut", 0)) for p in predictions]
        result["prompts"] = {"notes_cut": sum(c > 0 for c in cut), "note_tokens_cut": sum(cut),
                             "notes_windowed": sum(int(p.get("windows", 1)) > 1 for p in predictions)}
    with_evidence = [p for p in predictions if by_id[p["id"]].spans]
    if with_evidence:
        result["evidence"] = evidence_metrics(
            [
                (by_id[p["id"]].text, [(s.start, s.end, s.text) for s in by_id[p["id"]].spans], p["evidence"])
                for p in with_evidence
            ]
        )
    return result


def print_metrics(metrics: dict[str, Any], console: Console, title: str = "CCL metrics") -> None:
    """Percentages, as the paper's tables print them."""
    table = Table(title=title)
    for col in ("subset", "codes", "micro F1", "macro F1", "precision", "recall"):
        table.add_column(col, justify="right")
    for subset in ("overall", "seen", "unseen"):
        m = metrics["codes"].get(subset)
        if not m:
            continue
        table.add_row(
            subset, str(m.get("n_codes", m.get("n_labels", ""))),
            *(f"{100 * m[k]:.1f}" for k in ("micro_f1", "macro_f1", "micro_precision", "micro_recall")),
        )
    console.print(table)
    ev = metrics.get("evidence")
    if ev:
        console.print(
            f"evidence: exact P/R/F1 {100 * ev['exact_precision']:.1f}/{100 * ev['exact_recall']:.1f}/"
            f"{100 * ev['exact_f1']:.1f}, overlap P/R/F1 {100 * ev['overlap_precision']:.1f}/"
            f"{100 * ev['overlap_recall']:.1f}/{100 * ev['overlap_f1']:.1f}"
        )
