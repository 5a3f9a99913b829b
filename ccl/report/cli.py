"""``python -m ccl.report RUN_DIR... [--out DIR]``: the results table and every analysis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccl.cli.errors import cli_main
from ccl.records import RecordError
from ccl.report.collect import RunFolderError, is_run_dir


def default_out(paths: list[Path]) -> Path:
    """``<sweep>/report`` for one sweep folder; ``./report`` otherwise."""
    if len(paths) == 1 and not is_run_dir(paths[0]):
        return paths[0] / "report"
    return Path("report")


@cli_main("ccl.report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ccl.report",
        description="Collect CCL run folders into one results table (Parquet, CSV) and render the "
                    "paper's tables (Markdown, LaTeX) and figures (PNG, PDF).",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders, or folders searched for them (a multirun sweep folder)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: SWEEP/report for one sweep folder, else ./report)")
    args = parser.parse_args(argv)

    # local import: matplotlib and scipy (~1 s), not for --help
    from ccl.report.build import build_report

    out = args.out or default_out(args.paths)
    try:
        report = build_report(args.paths, out)
    except (RunFolderError, RecordError) as e:  # a run folder's file that cannot be read
        print(f"ccl.report: error: {e}", file=sys.stderr)
        return 2
    runs = report.results["run_dir"].nunique() if len(report.results) else 0
    print(f"{runs} runs ({len(report.results)} results rows: one per run and test set) -> {out}")
    for name in report.tables:
        print(f"  table  {out / 'tables' / name}.md|.tex")
    for path in report.files:
        if path.suffix == ".png":
            print(f"  figure {path.with_suffix('')}.png|.pdf")
    for note in report.notes:
        print(f"  note   {note}")
    print(f"  index  {out / 'report.md'}")
    return 0
