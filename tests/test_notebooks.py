"""The analysis notebooks execute on a results table built from real mini runs.

Most tests run them through ccl.report.notebook (each code cell exec-ed in one
namespace, no kernel); the Jupyter tests run ``jupyter nbconvert --to notebook
--execute`` (nbconvert and ipykernel: the dev extra) as a user would, with the notebook
in ``notebooks/`` and the experiments' sweeps in ``multirun/<script>/<timestamp>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import mini_runs

from ccl.report.collect import collect_runs, write_results
from ccl.report.notebook import NotebookError, code_cells, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["ablation", "scaling_law", "unseen_codes"]
# Where each notebook's experiments/ script writes its sweeps (the notebook's default RESULTS).
SCRIPTS = {"ablation": "table3_ablation", "scaling_law": "table6_scaling", "unseen_codes": "figure3_unseen_codes"}


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


def test_default_results_is_where_the_experiment_script_writes(tmp_path, monkeypatch):
    """RESULTS defaults to the folder the notebook's script sweeps into; the newest report
    there is read, from the repository root or from notebooks/ (Jupyter's working folder)."""
    for name, script in SCRIPTS.items():
        assert f'RESULTS = "multirun/{script}"' in code_cells(NOTEBOOKS / f"{name}.ipynb")[0][1]
        sh = (ROOT / "experiments" / f"{script}.sh").read_text()
        assert f"multirun/{script}/" in sh or f"sweep {script} " in sh
    from ccl.report.notebook import find_results

    older = tmp_path / "multirun" / "table3_ablation" / "2026-01-01_00-00-00" / "report" / "results.parquet"
    newer = tmp_path / "multirun" / "table3_ablation" / "2026-02-01_00-00-00" / "report" / "results.parquet"
    for i, path in enumerate([older, newer]):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1_700_000_000 + 10 * i, 1_700_000_000 + 10 * i))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert find_results("multirun/table3_ablation") == newer
    assert find_results(older.parent) == older and find_results(older) == older
    assert find_results("multirun/table6_scaling") is None


def empty_results_dir(tmp_path: Path) -> Path:
    """A repository-like folder with the notebooks and no runs."""
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    return tmp_path / "notebooks"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_without_runs_says_what_to_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(empty_results_dir(tmp_path))
    ns = run_notebook(Path(f"{name}.ipynb"))  # no exception: every analysis cell is skipped
    out = capsys.readouterr().out
    assert ns["results"] is None and ns["displayed"] == []
    assert f"No results table at multirun/{SCRIPTS[name]}" in out
    assert f"experiments/{SCRIPTS[name]}.sh --cpu" in out and "Traceback" not in out


def test_notebook_whose_runs_are_not_in_the_table_says_what_to_run(tmp_path_factory, capsys):
    """The scaling notebook on an ablation sweep of one backbone size (the old traceback)."""
    runs = mini_runs(tmp_path_factory)
    table = write_results(collect_runs([runs["sweep"]]), tmp_path_factory.mktemp("one-size"))["parquet"]
    ns = run_notebook(NOTEBOOKS / "scaling_law.ipynb", {"RESULTS": str(table)})
    out = capsys.readouterr().out
    assert ns["results"] is None and "the scaling law needs runs of at least two backbone sizes" in out
    assert "experiments/table6_scaling.sh --cpu" in out


def nbconvert(notebooks: list[Path], out: Path) -> dict[str, list[dict]]:
    """``jupyter nbconvert --to notebook --execute`` (each notebook in its own folder, as
    Jupyter runs it); the outputs of each executed notebook's code cells, by name."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline figures
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    jupyter = [sys.executable, "-m", "jupyter"]
    proc = subprocess.run([*jupyter, "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(out),
                           *map(str, notebooks)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    outputs = {}
    for nb in notebooks:
        cells = json.loads((out / nb.name).read_text())["cells"]
        outputs[nb.stem] = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
        errors = [o for o in outputs[nb.stem] if o["output_type"] == "error"]
        assert not errors, f"{nb.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    return outputs


def printed(outputs: list[dict]) -> str:
    return "".join(o["text"] if isinstance(o["text"], str) else "".join(o["text"])
                   for o in outputs if o["output_type"] == "stream")


def test_jupyter_runs_a_notebook_without_runs_to_the_end(tmp_path):
    """One notebook under nbconvert with nothing to read (~10 s: a kernel start)."""
    folder = empty_results_dir(tmp_path)
    outputs = nbconvert([folder / "scaling_law.ipynb"], tmp_path / "out")["scaling_law"]
    assert "experiments/table6_scaling.sh --cpu" in printed(outputs)
    assert [o["output_type"] for o in outputs] == ["stream"]  # the message, nothing else


@pytest.mark.slow
def test_jupyter_executes_every_notebook_on_the_experiments_reports(tmp_path, tmp_path_factory):
    """Each notebook as a user runs it: a report where its script writes one, its default RESULTS."""
    runs = mini_runs(tmp_path_factory)
    folder = empty_results_dir(tmp_path)
    for script in SCRIPTS.values():
        report = tmp_path / "multirun" / script / "2026-12-01_10-00-00" / "report"
        write_results(collect_runs([runs["sweep"], runs["scaling"]]), report)
    outputs = nbconvert([folder / f"{name}.ipynb" for name in NAMES], tmp_path / "out")
    for name in NAMES:
        text = printed(outputs[name])
        assert f"multirun/{SCRIPTS[name]}/2026-12-01_10-00-00/report/results." in text
        assert any(o["output_type"] == "display_data" and "image/png" in o["data"] for o in outputs[name])
    assert "Table 3: ablation" in printed(outputs["ablation"])
    assert "micro F1 points per 10x parameters (2 sizes)" in printed(outputs["scaling_law"])
    # and with no runs at all, every notebook still runs to its end, saying what to run
    empty = empty_results_dir(tmp_path_factory.mktemp("no-runs"))  # not below tmp_path: its reports would be found
    missing = nbconvert([empty / f"{name}.ipynb" for name in NAMES], tmp_path / "out-empty")
    for name in NAMES:
        assert f"experiments/{SCRIPTS[name]}.sh --cpu" in printed(missing[name])


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
