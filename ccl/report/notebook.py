"""Execute a notebook's code cells in one namespace, without a Jupyter kernel.

The analysis notebooks are plain Python (no IPython magics), so CI can run
them with nothing beyond this module: each code cell is compiled and ``exec``-ed
in order in a shared namespace, with matplotlib on the Agg backend. As with
papermill, the values in ``parameters`` are set right after the cell tagged
``parameters`` (or before the first cell when none is tagged).

    python -m ccl.report.notebook notebooks/ablation.ipynb RESULTS=multirun/x/report/results.parquet
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class NotebookError(RuntimeError):
    """A notebook is malformed or one of its cells failed; the message names file and cell."""


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
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path)}
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
