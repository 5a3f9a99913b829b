"""Tables and figures from run folders; the multirun callback; W&B result logging.

``collect_runs(paths)`` builds the results table (one row per run folder),
``build_report(paths, out_dir)`` renders every analysis, ``python -m ccl.report``
does both from the command line, ``ReportCallback`` at the end of a multirun.
Exports load lazily: Hydra imports the callback in every job, and pandas and
matplotlib are only needed at the end.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Report": "ccl.report.build", "build_report": "ccl.report.build", "render_report": "ccl.report.build",
    "RunFolderError": "ccl.report.collect", "collect_runs": "ccl.report.collect",
    "find_run_dirs": "ccl.report.collect", "load_results": "ccl.report.collect",
    "write_results": "ccl.report.collect",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ccl.report' has no attribute {name!r}")
