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


def seed_summary(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Per group of ``keys`` (in order of first appearance): ``mean``, ``std`` (sample
    standard deviation over the group's rows, i.e. seeds; 0 for one row) and ``n`` (rows with
    a value) of column ``value``."""
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        values = pd.to_numeric(group[value], errors="coerce").dropna()
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key, strict=True)), "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else 0.0, "n": int(len(values))})
    return pd.DataFrame(rows, columns=[*keys, "mean", "std", "n"])


def figure3_data(seen_unseen: pd.DataFrame, tier_gain: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """What Figure 3(a) and (b) draw: the runs of a recipe (its seeds) aggregated.

    ``seen_unseen`` (rows of :func:`ccl.report.tables.seen_unseen_table`, one per run):
    ``"a"`` has per (label, subset in seen / unseen) the mean, std and n of the micro F1 (%).
    ``tier_gain`` (rows of :func:`ccl.report.unseen.unseen_code_tables`, one per run and tier):
    ``"b"`` has per (label, tier) the mean, std and n over runs of the mean per-code F1 gain
    (points). The label is the recipe, with backbone and test set appended when they vary.
    """
    frame = seen_unseen.assign(label=_run_labels(seen_unseen))
    parts = [seed_summary(frame, ["label"], f"{subset.capitalize()} micro F1").assign(subset=subset)
             for subset in ("seen", "unseen")]
    out = {"a": pd.concat(parts, ignore_index=True)[["label", "subset", "mean", "std", "n"]]}
    if tier_gain is not None and not tier_gain.empty:
        gain = tier_gain.dropna(subset=["Gain"])
        gain = gain.assign(label=_run_labels(gain))
        out["b"] = seed_summary(gain, ["label", "Tier"], "Gain").rename(columns={"Tier": "tier"})
    return out


def _grouped_bars(ax: plt.Axes, data: pd.DataFrame, group: str, label_of=str) -> list[str]:
    """Bars of ``data`` (label, ``group``, mean, std, n): one cluster per label, one bar per
    ``group`` value, error bars ± std where n > 1 (none in a series of single runs); x labels
    carry n. Returns the x labels."""
    labels = list(dict.fromkeys(data["label"]))
    kinds = list(dict.fromkeys(data[group]))
    width = 0.8 / max(1, len(kinds))
    for i, kind in enumerate(kinds):
        part = data[data[group] == kind].set_index("label").reindex(labels)
        pos = np.arange(len(labels)) + (i - (len(kinds) - 1) / 2) * width
        err = part["std"].where(part["n"] > 1, 0.0).fillna(0.0)
        several = bool((part["n"] > 1).any())  # one run per bar: no error bars at all
        ax.bar(pos, part["mean"], width, yerr=err if several else None, capsize=3 if several else 0,
               label=label_of(kind))
    n_of = data.groupby("label", sort=False)["n"].max()
    ticks = [f"{lbl}\n(n={int(n_of[lbl])})" for lbl in labels]
    ax.set_xticks(range(len(labels)), ticks, rotation=30, ha="right", fontsize=7)
    return ticks


def draw_unseen_figure(seen_unseen: pd.DataFrame, tier_gain: pd.DataFrame | None,
                       coverage: pd.DataFrame | None = None) -> tuple[plt.Figure, dict[str, pd.DataFrame]]:
    """Figure 3 as a matplotlib figure, and the numbers it draws (:func:`figure3_data`,
    plus ``"c"``: :func:`coverage_means`); see :func:`unseen_figure`."""
    data = figure3_data(seen_unseen, tier_gain)
    has_gain = "b" in data and not data["b"].empty
    has_cov = coverage is not None and not coverage.empty
    panels = 1 + has_gain + has_cov
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.4), squeeze=False)
    ax = axes[0, 0]
    _grouped_bars(ax, data["a"], "subset", lambda s: f"{s} codes")
    top = np.nanmax((data["a"]["mean"] + data["a"]["std"]).to_numpy(dtype=float), initial=0.0)
    ax.set_ylim(0, max(5.0, 1.15 * top))
    ax.set_ylabel("micro F1 (%), mean ± std over seeds")
    ax.set_title("(a) seen vs unseen test codes")
    ax.legend(fontsize=8)
    if has_gain:
        ax = axes[0, 1]
        _grouped_bars(ax, data["b"], "tier")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel("mean per-code F1 gain (points), mean ± std over seeds")
        ax.set_title("(b) unseen codes, by the tier that introduced them")
        ax.legend(fontsize=8, title="tier")
    if has_cov:
        ax = axes[0, panels - 1]
        means = coverage_means(coverage)
        data["c"] = means
        recipes = list(dict.fromkeys(means["recipe"]))
        classes = [c for c in ("gold", "silver-only", "synthetic-only", "none") if c in set(means["coverage"])]
        width = 0.8 / max(1, len(classes))
        for i, cls in enumerate(classes):
            part = means[means["coverage"] == cls].set_index("recipe").reindex(recipes)
            pos = np.arange(len(recipes)) + (i - (len(classes) - 1) / 2) * width
            ax.bar(pos, part["mean"], width, yerr=part["std"], capsize=3, label=cls)
        seeds = means.groupby("recipe", sort=False)["seeds"].max()
        ax.set_xticks(range(len(recipes)), [f"{r}\n(n={int(seeds[r])})" for r in recipes],
                      rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("unseen-code micro F1 (%), mean ± std over seeds")
        ax.set_ylim(0, 105)
        ax.set_title("(c) unseen codes by the tier covering their wording")
        ax.legend(fontsize=8, title="covered by")
    fig.tight_layout()
    return fig, data


def unseen_figure(seen_unseen: pd.DataFrame, tier_gain: pd.DataFrame | None, out_base: str | Path,
                  coverage: pd.DataFrame | None = None) -> list[Path]:
    """Figure 3: (a) micro F1 on seen vs unseen codes per recipe; (b) unseen-code F1 gain per
    tier; (c) with ``coverage`` (per-code rows of :func:`ccl.report.unseen.coverage_tables`):
    micro F1 on the unseen codes of each wording-coverage class per recipe. Every bar is the
    mean over a recipe's runs (its seeds) with ± sample std error bars; each x label gives
    n, the number of runs.

    ``seen_unseen`` and ``tier_gain`` are the frames of
    :func:`ccl.report.tables.seen_unseen_table` and :func:`ccl.report.unseen.unseen_code_tables`.
    """
    fig, _ = draw_unseen_figure(seen_unseen, tier_gain, coverage)
    return save(fig, out_base)
