"""Issue 23 item 5: what the report's figures and notes show, read from the figure's artists
and the data its plotting function returns (not the files' magic bytes); seeds aggregated
with n, a seed column, floor p-values as bounds, Table 3 rows found by the experiment.

Fast: synthetic frames, and the kept demo runs under benchmarks/table3_cpu (read only).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from ccl.eval.stats import DocStats, paired_test
from ccl.report.collect import collect_runs, experiment_of, read_run
from ccl.report.figures import draw_unseen_figure, figure3_data
from ccl.report.intervals import p_text
from ccl.report.tables import ablation_table
from ccl.report.unseen import unseen_code_tables

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "benchmarks" / "table3_cpu"


def _seen_unseen() -> pd.DataFrame:
    """Two recipes, three seeds each (the frame of seen_unseen_table with a Seed column)."""
    return pd.DataFrame({
        "Recipe": ["document SFT"] * 3 + ["CCL"] * 3, "Backbone": "smollm2_135m", "Seed": [0, 1, 2] * 2,
        "Seen codes": 10, "Unseen codes": 5,
        "Seen micro F1": [60.0, 70.0, 80.0, 65.0, 66.0, 67.0],
        "Unseen micro F1": [0.0, 0.0, 0.0, 20.0, 33.2, 26.3],
    })


def _tier_gain() -> pd.DataFrame:
    # the case: seeds 33.2 / 20.0 / 26.3 -> mean 26.5 (the old figure showed 33.2)
    return pd.DataFrame({"Recipe": ["CCL"] * 3, "Backbone": "smollm2_135m", "Seed": [0, 1, 2],
                         "Tier": "gold", "Unseen codes": 4, "Gain": [33.2, 20.0, 26.3]})


def _bars(ax: plt.Axes) -> list[tuple[list[float], list[float]]]:
    """Per bar series: (heights, error-bar half lengths) read from the axes' artists."""
    out = []
    for container in ax.containers:
        if not hasattr(container, "patches"):
            continue
        heights = [p.get_height() for p in container.patches]
        errs = [0.0] * len(heights)
        if container.errorbar is not None:
            segments = container.errorbar.lines[2][0].get_segments()
            errs = [float(abs(s[1][1] - s[0][1]) / 2) for s in segments]
        out.append((heights, errs))
    return out


def test_figure3a_draws_the_mean_and_std_over_seeds_with_n():
    fig, data = draw_unseen_figure(_seen_unseen(), None)
    try:
        ax = fig.axes[0]
        (seen_h, seen_e), (unseen_h, unseen_e) = _bars(ax)
        assert seen_h == pytest.approx([70.0, 66.0]) and unseen_h == pytest.approx([0.0, (20 + 33.2 + 26.3) / 3])
        assert seen_e == pytest.approx([10.0, 1.0])  # sample std of 60/70/80 and 65/66/67
        assert unseen_e[1] == pytest.approx(float(np.std([20.0, 33.2, 26.3], ddof=1)))
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["document SFT\n(n=3)", "CCL\n(n=3)"]
        assert list(data["a"]["n"]) == [3, 3, 3, 3]
    finally:
        plt.close(fig)


def test_figure3b_shows_the_mean_gain_not_the_tallest_seed():
    fig, data = draw_unseen_figure(_seen_unseen(), _tier_gain())
    try:
        ((heights, errs),) = _bars(fig.axes[1])
        assert heights == pytest.approx([26.5])
        assert errs == pytest.approx([float(np.std([33.2, 20.0, 26.3], ddof=1))])
        assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["CCL\n(n=3)"]
        b = data["b"]
        assert (b["label"].tolist(), b["tier"].tolist(), b["n"].tolist()) == (["CCL"], ["gold"], [3])
    finally:
        plt.close(fig)


def test_one_seed_draws_no_error_bar_and_n_1():
    one = _seen_unseen().iloc[[0, 3]]
    data = figure3_data(one, None)
    assert data["a"]["std"].tolist() == [0.0] * 4 and data["a"]["n"].tolist() == [1] * 4
    fig, _ = draw_unseen_figure(one, None)
    try:
        ax = fig.axes[0]
        assert all(c.errorbar is None for c in ax.containers if hasattr(c, "patches"))
        assert [t.get_text() for t in ax.get_xticklabels()] == ["document SFT\n(n=1)", "CCL\n(n=1)"]
        assert [p.get_height() for p in ax.containers[0].patches] == [60.0, 65.0]
    finally:
        plt.close(fig)


def test_p_values_at_the_resampling_floor_print_as_bounds():
    assert p_text({"p_value": 2 / 1001, "p_floor": 2 / 1001}) == "p <= 0.002"
    assert p_text({"p_value": 0.034, "p_floor": 2 / 1001}) == "p = 0.034"
    assert p_text({"p_value": 0.5}) == "p = 0.500"
    # a difference no permutation of 99 reaches: p at the floor 2 / (99 + 1)
    gold = [["A"]] * 12
    a = DocStats.build(gold, [["A"]] * 12, ["A"])
    b = DocStats.build(gold, [[]] * 12, ["A"])
    res = paired_test(a, b, n_resamples=99)["micro_f1"]
    assert res["p_floor"] == pytest.approx(2 / 100) and res["p_value"] == pytest.approx(2 / 100)
    assert p_text(res) == "p <= 0.020"
    # exact test (2^n <= n_resamples): the floor is 2 / 2^n
    small = paired_test(DocStats.build(gold[:4], [["A"]] * 4, ["A"]), DocStats.build(gold[:4], [[]] * 4, ["A"]))
    assert small["micro_f1"]["p_floor"] == pytest.approx(2 / 16)


def test_table3_rows_are_found_by_the_experiment_not_the_name(tmp_path):
    run = Path(shutil.copytree(KEPT / "ablation_row4_s0", tmp_path / "my_run"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["name"] = "my_run"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- +experiment=ablation_row4\n- name=my_run\n")
    row = read_run(run)
    assert (row["name"], row["experiment"], row["ablation_row"]) == ("my_run", "ablation_row4", 4)
    assert ablation_table(collect_runs([run])).frame["Row"].tolist() == [4]
    # a run merely named like a row, composed without the experiment, is no Table 3 row
    (run / ".hydra" / "overrides.yaml").write_text("- name=ablation_row4\n")
    cfg["name"] = "ablation_row4"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert np.isnan(read_run(run)["ablation_row"])
    assert experiment_of(["++experiment=ablation_row2", "seed=1"], "x") == "ablation_row2"
    assert experiment_of([], "ablation_row5") == "ablation_row5"  # kept runs without .hydra


def test_tier_gain_table_has_a_seed_column_on_the_kept_runs():
    results = collect_runs([KEPT])
    _, table = unseen_code_tables(results)
    frame = table.frame
    assert "Seed" in frame.columns
    row4 = frame[frame["Recipe"] == frame["Recipe"].iloc[0]]
    assert sorted(row4["Seed"].unique().tolist()) == [0, 1, 2]
