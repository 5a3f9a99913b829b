"""Execute a notebook's code cells in one namespace, without a Jupyter kernel.

The analysis notebooks are plain Python (no IPython magics), so CI can run
them with nothing beyond this module: each code cell is compiled and ``exec``-ed
in order in a shared namespace, with matplotlib on the Agg backend. As with
papermill, the values in ``parameters`` are set right after the cell tagged
``parameters`` (or before the first cell when none is tagged).

    python -m ccl.report.notebook notebooks/ablation.ipynb RESULTS=multirun/x/report/results.parquet

In Jupyter (or ``jupyter nbconvert --to notebook --execute``) each notebook reads its
results with :func:`notebook_results`: by default the newest report under the folder
its ``experiments/`` script sweeps into; when there is none, or it lacks the runs the
notebook needs, it prints what to run and the analysis cells do nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ccl.report.collect import RESULTS_STEM, load_results
from ccl.report.tables import Skip


class NotebookError(RuntimeError):
    """A notebook is malformed or one of its cells failed; the message names file and cell."""


def find_results(path: str | Path) -> Path | None:
    """The results table ``path`` names, or ``None``.

    ``path`` is a results file (``results.parquet`` / ``results.csv``), a report folder
    holding one, or a folder of sweeps such as ``multirun/table3_ablation`` (what
    ``experiments/table3_ablation.sh`` writes: ``<timestamp>/report/``), whose newest
    report is taken. A relative path is looked up from the working directory and then from
    each folder above it (Jupyter runs a notebook in ``notebooks/``; the scripts write from
    the repository root).
    """

    path = Path(path)
    bases = [Path.cwd(), *Path.cwd().parents] if not path.is_absolute() else [Path("/")]
    for base in bases:
        where = base / path
        if where.is_file():
            return where
        if not where.is_dir():
            continue
        reports = {t.parent for pattern in (f"{RESULTS_STEM}.*", f"report/{RESULTS_STEM}.*",
                                            f"*/report/{RESULTS_STEM}.*")
                   for t in where.glob(pattern) if t.suffix in (".parquet", ".csv")}
        if reports:
            def tables(report: Path) -> list[Path]:  # the parquet file first: it keeps the column types
                return [t for t in (report / f"{RESULTS_STEM}.parquet", report / f"{RESULTS_STEM}.csv")
                        if t.is_file()]

            newest = max(reports, key=lambda r: max(t.stat().st_mtime for t in tables(r)))
            return tables(newest)[0]
    return None


def notebook_results(path: str | Path, needs: Callable[[Any], Any] | Iterable[Callable[[Any], Any]] = (),
                     run: str = "") -> Any:
    """The results table a notebook analyses, or ``None`` after printing what to run.

    ``path``: see :func:`find_results`. ``needs``: the table builders the notebook calls
    (e.g. :func:`ccl.report.tables.ablation_table`); one raising
    :class:`ccl.report.tables.Skip` means the runs it needs are missing. ``run``: the
    command that makes them, named in the message. Never raises for missing runs.
    """

    hint = f"run `{run}` from the repository root, then rerun this notebook" if run else "run the sweep first"
    found = find_results(path)
    if found is None:
        print(f"No results table at {path}: {hint}; or set RESULTS to a results table or report folder "
              "(python -m ccl.report RUN_DIR... --out DIR writes one).")
        return None
    results = load_results(found)
    for need in [needs] if callable(needs) else list(needs):
        try:
            need(results)
        except Skip as e:
            print(f"{found}: {e}. To make these runs, {hint}.")
            return None
    print(f"results: {found} ({len(results)} rows)")
    return results


def code_cells(path: str | Path) -> list[tuple[int, str, list[str]]]:
    """(cell index, source, tags) of each code cell of an nbformat-4 notebook."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise NotebookError(f"{path}: cannot read the notebook ({e})") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path}: not an nbformat 4 notebook")
    cells = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        magic = next((line for line in source.splitlines() if line.lstrip().startswith(("%", "!"))), None)
        if magic is not None:
            raise NotebookError(f"{path}: cell {i} uses IPython syntax ({magic.strip()!r}), "
                                "which runs only in Jupyter; keep the notebooks plain Python")
        cells.append((i, source, list(cell.get("metadata", {}).get("tags", []))))
    return cells


def run_notebook(path: str | Path, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every code cell of ``path`` in order; return the namespace they ran in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    cells = code_cells(path)
    # display(): what Jupyter's kernel provides as a builtin; here the values are kept.
    shown: list[Any] = []
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path), "display": shown.append,
                                 "displayed": shown}
    tagged = any("parameters" in tags for _, _, tags in cells)
    if parameters and not tagged:
        namespace.update(parameters)
    try:
        for i, source, tags in cells:
            try:
                exec(compile(source, f"{path}[cell {i}]", "exec"), namespace)
            except Exception as e:
                raise NotebookError(f"{path}: cell {i} failed: {type(e).__name__}: {e}") from e
            if parameters and "parameters" in tags:
                namespace.update(parameters)
    finally:
        plt.close("all")
    return namespace


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m ccl.report.notebook NOTEBOOK.ipynb [NAME=VALUE ...]", file=sys.stderr)
        return 2
    bad = [arg for arg in args[1:] if "=" not in arg]
    if bad:
        print(f"expected NAME=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    run_notebook(args[0], dict(arg.split("=", 1) for arg in args[1:]))
    print(f"{args[0]}: all code cells ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
