"""Figures (matplotlib, Agg backend): the scaling law and Figure 3 (seen vs unseen codes).

Each function takes the tables built in :mod:`ccl.report.tables` /
:mod:`ccl.report.unseen` and writes ``<stem>.png`` and ``<stem>.pdf``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ccl.report.tables import human_count  # noqa: E402

FORMATS = ("png", "pdf")


def save(fig: plt.Figure, out_base: str | Path) -> list[Path]:
    """Save ``fig`` as PNG and PDF next to each other; close it; return the paths."""
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(f".{fmt}") for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _run_labels(frame: pd.DataFrame) -> list[str]:
    """Recipe, with the backbone (and test set) appended when they vary across rows."""
    labels = frame["Recipe"].astype(str)
    for col in ("Backbone", "Test set"):
        if col in frame and frame[col].nunique() > 1:
            labels = labels + " · " + frame[col].astype(str)
    return list(labels)


def scaling_figure(results: pd.DataFrame, out_base: str | Path) -> list[Path]:
    """Micro and macro F1 (%) against parameter count (log axis), one line per family and recipe.

    ``results``: the runs of the scaling table (:func:`ccl.report.tables.scaling_runs`).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (family, recipe, test_set), group in results.groupby(["backbone_family", "recipe", "test_set"]):
        per_size = group.groupby("n_params")[["overall_micro_f1", "overall_macro_f1"]].mean().sort_index()
        names = group.groupby("n_params")["backbone"].first().reindex(per_size.index)
        label = f"{family} · {recipe}" + ("" if results["test_set"].nunique() == 1 else f" · {test_set}")
        for ax, col in zip(axes, ("overall_micro_f1", "overall_macro_f1"), strict=True):
            ax.plot(per_size.index, 100 * per_size[col], marker="o", label=label)
            for x, y, name in zip(per_size.index, 100 * per_size[col], names, strict=True):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    for ax, title, col in zip(axes, ("Micro F1 (%)", "Macro F1 (%)"), ("overall_micro_f1", "overall_macro_f1"),
                              strict=True):
        ax.set_ylim(0, max(5.0, 115 * float(results[col].max())))
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human_count(v)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].legend(fontsize=7)
    fig.suptitle("Scaling with backbone size")
    return save(fig, out_base)


def coverage_means(per_code: pd.DataFrame) -> pd.DataFrame:
    """Per (recipe, coverage class): mean and sample std over seeds of the micro F1 (%) over
    the class's unseen codes; ``per_code`` is :func:`ccl.report.unseen.coverage_tables`' frame."""
    rows = []
    for (row, recipe, cls), group in per_code.groupby(["ablation_row", "recipe", "coverage"], dropna=False, sort=True):
        values = []
        for _, seed in group.groupby("seed", dropna=False):
            tp, fp, fn = (float(seed[k].sum()) for k in ("tp", "fp", "fn"))
            values.append(200 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
        series = pd.Series(values, dtype=float)
        rows.append({"row": row, "recipe": recipe, "coverage": cls, "mean": series.mean(),
                     "std": series.std(ddof=1) if series.count() > 1 else 0.0, "seeds": int(series.count())})
    return pd.DataFrame(rows)


def unseen_figure(seen_unseen: pd.DataFrame, tier_gain: pd.DataFrame | None, out_base: str | Path,
                  coverage: pd.DataFrame | None = None) -> list[Path]:
    """Figure 3: (a) micro F1 on seen vs unseen codes per run; (b) unseen-code F1 gain per tier;
    (c) with ``coverage`` (per-code rows of :func:`ccl.report.unseen.coverage_tables`): micro F1
    on the unseen codes of each wording-coverage class per recipe, mean ± std over seeds.

    ``seen_unseen`` and ``tier_gain`` are the frames of
    :func:`ccl.report.tables.seen_unseen_table` and :func:`ccl.report.unseen.unseen_code_tables`.
    """
    has_gain = tier_gain is not None and not tier_gain.empty
    has_cov = coverage is not None and not coverage.empty
    panels = 1 + has_gain + has_cov
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    labels = _run_labels(seen_unseen)
    x = np.arange(len(labels))
    width = 0.38
    ax.bar(x - width / 2, seen_unseen["Seen micro F1"], width, label="seen codes")
    ax.bar(x + width / 2, seen_unseen["Unseen micro F1"], width, label="unseen codes")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    top = np.nanmax(seen_unseen[["Seen micro F1", "Unseen micro F1"]].to_numpy(dtype=float), initial=0.0)
    ax.set_ylim(0, max(5.0, 1.15 * top))
    ax.set_ylabel("micro F1 (%)")
    ax.set_title("(a) seen vs unseen test codes")
    ax.legend(fontsize=8)
    if has_gain:
        ax = axes[0, 1]
        gain = tier_gain.dropna(subset=["Gain"])
        runs = _run_labels(gain)
        keys = list(dict.fromkeys(runs))
        tiers = list(dict.fromkeys(gain["Tier"]))
        width = 0.8 / max(1, len(tiers))
        for i, tier in enumerate(tiers):
            mask = (gain["Tier"] == tier).to_numpy()
            pos = [keys.index(r) + (i - (len(tiers) - 1) / 2) * width for r, m in zip(runs, mask, strict=True) if m]
            ax.bar(pos, gain.loc[mask, "Gain"], width, label=f"{tier}")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("mean per-code F1 gain (points)")
        ax.set_title("(b) unseen codes, by the tier that introduced them")
        ax.legend(fontsize=8, title="tier")
    if has_cov:
        ax = axes[0, panels - 1]
        means = coverage_means(coverage)
        recipes = list(dict.fromkeys(means["recipe"]))
        classes = [c for c in ("gold", "silver-only", "synthetic-only", "none") if c in set(means["coverage"])]
        width = 0.8 / max(1, len(classes))
        for i, cls in enumerate(classes):
            part = means[means["coverage"] == cls].set_index("recipe").reindex(recipes)
            pos = np.arange(len(recipes)) + (i - (len(classes) - 1) / 2) * width
            ax.bar(pos, part["mean"], width, yerr=part["std"], capsize=3, label=cls)
        ax.set_xticks(range(len(recipes)), recipes, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("unseen-code micro F1 (%)")
        ax.set_ylim(0, 105)
        ax.set_title("(c) unseen codes by the tier covering their wording")
        ax.legend(fontsize=8, title="covered by")
    fig.tight_layout()
    return save(fig, out_base)
