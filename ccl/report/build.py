"""Run folders -> results table + every analysis, rendered into one report folder.

Layout of ``out_dir``::

    results.parquet, results.csv      one row per run and test set (ccl.report.collect)
    report.md                         every table inline, figure links, skipped analyses
    tables/<name>.md, <name>.tex      Tables 1, 2, 3, 4, 6 and Figure 3's numbers
    figures/<name>.png, <name>.pdf    scaling law, Figure 3
    unseen_codes.csv                  per (run, test code): coverage, introducing tier, F1
    unseen_coverage.csv               per (run, unseen test code): the tier covering its wording, F1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ccl.report import figures, tables
from ccl.report.collect import collect_runs, incomplete_runs, write_results
from ccl.report.intervals import ablation_interval_table, figure3_interval_table
from ccl.report.render import to_markdown, write_table
from ccl.report.tables import ResultTable, Skip
from ccl.report.unseen import coverage_tables, unseen_code_tables

TABLE_BUILDERS: list[Callable[[pd.DataFrame], ResultTable]] = [
    tables.ablation_table, tables.main_table, tables.efficiency_table, tables.evidence_table,
    tables.scaling_table, tables.seen_unseen_table, tables.ablation_seed_table,
    ablation_interval_table,  # issue 16: Table 3 with intervals and the row 3 / row 4 paired test
]


@dataclass
class Report:
    """What :func:`build_report` wrote: the results, the tables, the files and the skip notes."""

    out_dir: Path
    results: pd.DataFrame
    tables: dict[str, ResultTable] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)



def _code_table(
    report: Report, out_dir: Path, builder: Callable[[pd.DataFrame], tuple[pd.DataFrame, ResultTable]],
    results: pd.DataFrame, csv_name: str,
) -> tuple[pd.DataFrame, ResultTable] | None:
    """Add a per-code table (``builder``: per-code frame + table) and its CSV to ``report``;
    None, with a note, when the builder skips."""
    try:
        per_code, table = builder(results)
    except Skip as e:
        report.notes.append(f"Skipped: {e}.")
        return None
    report.tables[table.name] = table
    report.files += write_table(table, out_dir / "tables")
    per_code.to_csv(out_dir / csv_name, index=False)
    report.files.append(out_dir / csv_name)
    return per_code, table

def render_report(results: pd.DataFrame, out_dir: str | Path, notes: Iterable[str] = ()) -> Report:
    """Render every analysis the runs in ``results`` allow; skipped ones get a note."""
    out_dir = Path(out_dir)
    report = Report(out_dir, results, notes=list(notes))
    for builder in TABLE_BUILDERS:
        try:
            table = builder(results)
        except Skip as e:
            report.notes.append(f"Skipped: {e}.")
            continue
        report.tables[table.name] = table
        report.files += write_table(table, out_dir / "tables")

    gain = _code_table(report, out_dir, unseen_code_tables, results, "unseen_codes.csv")
    tier_gain = gain[1].frame if gain else None
    coverage = _code_table(report, out_dir, coverage_tables, results, "unseen_coverage.csv")
    coverage_codes = coverage[0] if coverage else None
    try:
        table = figure3_interval_table(results, coverage_codes)
        report.tables[table.name] = table
        report.files += write_table(table, out_dir / "tables")
    except Skip as e:
        report.notes.append(f"Skipped: {e}.")
    if "fig3_seen_unseen" in report.tables:
        report.files += figures.unseen_figure(report.tables["fig3_seen_unseen"].frame, tier_gain,
                                              out_dir / "figures" / "fig3_unseen_codes", coverage_codes)
    if "table6_scaling" in report.tables:
        report.files += figures.scaling_figure(tables.scaling_runs(results), out_dir / "figures" / "scaling_law")
    index = out_dir / "report.md"
    index.write_text(_index(report), encoding="utf-8")
    report.files.append(index)
    return report


def _index(report: Report) -> str:
    lines = [f"# CCL report: {len(report.results)} runs", ""]
    lines += [f"{note}" for note in report.notes] + ([""] if report.notes else [])
    for table in report.tables.values():
        lines += [to_markdown(table), ""]
    figs = sorted(p for p in report.files if p.suffix == ".png")
    for fig in figs:
        lines += [f"![{fig.stem}]({fig.relative_to(report.out_dir).as_posix()})", ""]
    lines += ["Results table: `results.parquet` / `results.csv` (one row per run).", ""]
    return "\n".join(lines)


def build_report(paths: Iterable[str | Path], out_dir: str | Path) -> Report:
    """Collect the run folders under ``paths``, write the results table, render every analysis."""
    paths = [Path(p) for p in paths]
    results = collect_runs(paths)
    out_dir = Path(out_dir)
    written = write_results(results, out_dir)
    notes = [f"Incomplete run (no metrics.json), left out: {folder}"
             for path in paths for folder in incomplete_runs(path)]
    report = render_report(results, out_dir, notes)
    report.files = [*written.values(), *report.files]
    return report
