"""The analysis notebooks execute on a results table built from real mini runs.

They run through ccl.report.notebook (each code cell exec-ed in one namespace),
so no Jupyter kernel, nbformat or nbclient is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import mini_runs

from ccl.report.collect import collect_runs, write_results
from ccl.report.notebook import NotebookError, code_cells, run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["ablation", "scaling_law", "unseen_codes"]


@pytest.fixture(scope="module")
def results_table(tmp_path_factory) -> Path:
    runs = mini_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("nb-results")
    return write_results(collect_runs([runs["sweep"], runs["scaling"]]), out)["parquet"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_clean_nbformat4_with_a_parameters_cell(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "commit notebooks cleared"
    first = code_cells(NOTEBOOKS / f"{name}.ipynb")[0]
    assert "parameters" in first[2] and "RESULTS =" in first[1]


def test_ablation_notebook(results_table):
    ns = run_notebook(NOTEBOOKS / "ablation.ipynb", {"RESULTS": str(results_table)})
    frame = ns["table3"].frame  # the tiny_s run is a row-4 run too
    assert list(zip(frame["Row"], frame["Backbone"], strict=True)) == [
        (1, "tiny"), (2, "tiny"), (3, "tiny"), (4, "tiny"), (4, "tiny_s"), (5, "tiny")]
    assert list(ns["per_row"].index.get_level_values("Row")) == [1, 2, 3, 4, 5]
    assert ns["fig"].axes[0].get_title() == "Table 3: ablation"


def test_scaling_law_notebook(results_table):
    ns = run_notebook(NOTEBOOKS / "scaling_law.ipynb", {"RESULTS": str(results_table)})
    assert ns["table6"].frame["Backbone"].tolist() == ["tiny_s", "tiny"]
    ((family, recipe, test_set), _slope, n_sizes), = ns["fits"]
    assert (family, recipe, test_set, n_sizes) == ("tiny", "doc SFT (evidence) + gold", "demo", 2)
    assert len(ns["throughput"]) == 2


def test_unseen_codes_notebook(results_table):
    ns = run_notebook(NOTEBOOKS / "unseen_codes.ipynb", {"RESULTS": str(results_table)})
    assert len(ns["fig3"].frame) == 6  # five ablation rows and the tiny_s run
    tiers = ns["tier_gain"].frame
    assert set(tiers["Tier"]) >= {"gold", "silver", "synthetic"}
    assert set(ns["per_code"]["introduced_by"]) <= {"gold", "silver", "synthetic", "none"}
    assert ns["coverage"].to_numpy().sum() == (~ns["per_code"]["seen"]).sum()


def test_runner_names_the_failing_cell_and_rejects_magics(tmp_path):
    def notebook(*sources: str) -> Path:
        cells = [{"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
                 for s in sources]
        path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
        path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}))
        return path

    ok = notebook("x = 2", "y = x * 21")
    assert run_notebook(ok)["y"] == 42
    with pytest.raises(NotebookError, match=r"nb1\.ipynb: cell 1 failed: ZeroDivisionError"):
        run_notebook(notebook("x = 1", "x / 0"))
    with pytest.raises(NotebookError, match="cell 0 uses IPython syntax"):
        run_notebook(notebook("%matplotlib inline"))
    (tmp_path / "bad.ipynb").write_text('{"cells": []}')
    with pytest.raises(NotebookError, match="not an nbformat 4 notebook"):
        run_notebook(tmp_path / "bad.ipynb")
