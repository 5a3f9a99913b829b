"""The eval stage: ``predictions.jsonl`` -> ``metrics.json`` and a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.eval.evidence import evidence_metrics
from ccl.eval.extended import apply_guidelines, extended_metrics
from ccl.eval.guidelines import COUNT_KEYS
from ccl.eval.metrics import seen_unseen_metrics
from ccl.icd.tabular import TabularList
from ccl.records import Document
from ccl.utils.verify import DamagedFile


def check_complete(path: Path, rows: list[dict[str, Any]], docs: list[Document]) -> None:
    """Refuse predictions that do not cover every document once (a cut or edited
    ``predictions.jsonl`` would otherwise be scored on fewer documents without a word).

    Raises :class:`ccl.utils.verify.DamagedFile` naming the file and the documents missing.
    """

    ids = [str(r.get("id")) for r in rows]
    missing = [d.id for d in docs if d.id not in set(ids)]
    if missing or len(ids) != len(set(ids)):
        why = (f"{len(missing)} of {len(docs)} documents have no prediction (first: {missing[0]})" if missing
               else f"{len(ids) - len(set(ids))} documents are predicted twice")
        raise DamagedFile(path, why, "delete it and rerun with the predict stage included (stage=predict+eval)")


def evaluate(
    predictions: list[dict[str, Any]],
    docs: list[Document],
    label_space: list[str] | None,
    seen_codes: set[str],
    tab: TabularList | None = None,
    eval_cfg: Any = None,
    vocabulary: list[str] | None = None,
    threshold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Code metrics overall / seen / unseen, plus evidence metrics where gold evidence exists.

    Predictions outside ``label_space`` (the test split's gold codes) are dropped,
    as in the paper; macro averages run over the codes of that label space.

    With ``tab`` (the run's Tabular List) the extended metrics of :mod:`ccl.eval.extended`
    join: guideline checks first (``eval_cfg.guidelines=repair`` repairs the predictions
    every metric then scores), category/chapter F1, ranking metrics and micro-F1 at the
    validation ``threshold`` when codes carry scores (in ``codes.overall``), bootstrap
    ``intervals`` of each, and ``invalid_codes`` (``vocabulary``: the model's code vocabulary).
    """
    guidelines = None
    if tab is not None:
        predictions, guidelines = apply_guidelines(
            predictions, tab, str(getattr(eval_cfg, "guidelines", "report")))
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
    if tab is not None:
        ext = extended_metrics(
            predictions, label_space, tab, vocabulary, threshold,
            n_resamples=int(getattr(eval_cfg, "bootstrap_resamples", 1000)),
            confidence=float(getattr(eval_cfg, "confidence", 0.95)),
            seed=int(getattr(eval_cfg, "bootstrap_seed", 0)),
            method=str(getattr(eval_cfg, "bootstrap_method", "percentile")),
        )
        result["codes"]["overall"] |= {k: v for k, v in ext.pop("overall").items()
                                       if k not in result["codes"]["overall"]}
        result |= ext
        result["guidelines"] = guidelines
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
    print_extended(metrics, console)
    ev = metrics.get("evidence")
    if ev:
        console.print(
            f"evidence: exact P/R/F1 {100 * ev['exact_precision']:.1f}/{100 * ev['exact_recall']:.1f}/"
            f"{100 * ev['exact_f1']:.1f}, overlap P/R/F1 {100 * ev['overlap_precision']:.1f}/"
            f"{100 * ev['overlap_recall']:.1f}/{100 * ev['overlap_f1']:.1f}"
        )


def print_extended(metrics: dict[str, Any], console: Console) -> None:
    """Category/chapter F1, ranking metrics, intervals, invalid codes and guideline counts (issue 16)."""
    m, ci = metrics["codes"]["overall"], metrics.get("intervals") or {}

    def show(key: str, label: str) -> str:
        if key not in m:
            return ""
        lo_hi = ci.get(key)
        band = f" [{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]" if lo_hi else ""
        return f"{label} {100 * m[key]:.1f}{band}"

    parts = [show(k, lbl) for k, lbl in (("micro_f1", "micro F1"), ("category_micro_f1", "category F1"),
                                         ("chapter_micro_f1", "chapter F1"), ("precision_at_5", "P@5"),
                                         ("recall_at_8", "R@8"), ("map_trec", "MAP (TREC)"),
                                         ("map_label_space", "mAP (label space)"),
                                         ("tuned_micro_f1", "tuned F1"))]
    if any(parts):
        info = metrics.get("intervals_info")
        head = f"{100 * info['confidence']:.0f}% intervals" if info else "no intervals"
        console.print(f"{head}: " + "; ".join(p for p in parts if p))
    inv, gl = metrics.get("invalid_codes"), metrics.get("guidelines")
    if inv:
        console.print(f"invalid codes: {100 * inv['invalid_code_rate']:.1f}% of {inv['n_codes']} "
                      f"(not in the Tabular List {inv['not_in_tabular']}, not billable {inv['not_billable']}, "
                      f"outside the model's codes {inv['outside_label_space']})")
    if gl:
        console.print(guideline_line(gl))


def guideline_line(gl: dict[str, Any]) -> str:
    """The guideline counts of the predictions beside the gold codes' own (when recorded)."""
    n = gl.get("n_docs")

    def side(prefix: str) -> str:
        docs = gl[f"{prefix}docs_with_violation"]
        rate = f"{docs}/{n} documents ({100 * docs / n:.1f}%)" if n else f"{docs} documents"
        kinds = ", ".join(f"{k.replace('_', ' ')} {gl.get(prefix + k, 0)}" for k in COUNT_KEYS)
        return f"{rate} with a violation ({kinds})"

    line = f"guidelines ({gl['mode']}): predictions {side('')}"
    if "gold_docs_with_violation" in gl:
        line += f"; gold codes {side('gold_')}"
    if "repair_dropped" in gl:
        line += f"; repair dropped {gl['repair_dropped']}"
    return line
