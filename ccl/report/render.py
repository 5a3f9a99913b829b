"""Markdown and LaTeX renderings of a :class:`~ccl.report.tables.ResultTable`.

Floats print with one decimal (rates are already percentages), ints as ints,
missing values as an en dash. The LaTeX is a booktabs ``table`` environment.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ccl.report.tables import ResultTable

MISSING = "–"
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  MISSING: "--"}


def format_cell(value: Any, decimals: int = 1) -> str:
    """One cell as text: floats with ``decimals`` decimals, ints as ints, NaN/None as a dash."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.{decimals}f}"
    return str(value)


def cells(frame: pd.DataFrame, decimals: int = 1) -> list[list[str]]:
    """The frame's rows as formatted text cells."""
    return [[format_cell(v, decimals) for v in row] for row in frame.itertuples(index=False, name=None)]


def _numeric(frame: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            for c in frame.columns]


def to_markdown(table: ResultTable, decimals: int = 1) -> str:
    """A GitHub-flavoured Markdown table with the title as a heading and the notes below."""
    header = [str(c) for c in table.frame.columns]
    align = ["---:" if num else ":---" for num in _numeric(table.frame)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [f"### {table.title}", "", line(header), "| " + " | ".join(align) + " |"]
    out += [line(row) for row in cells(table.frame, decimals)]
    out += [""] + [f"_{note}_" for note in table.notes]
    return "\n".join(out).rstrip() + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: ResultTable, decimals: int = 1) -> str:
    """A booktabs ``table`` with caption (title + notes) and ``\\label{tab:<name>}``."""
    spec = "".join("r" if num else "l" for num in _numeric(table.frame))
    caption = " ".join([table.title + ".", *table.notes])
    rows = [" & ".join(latex_escape(c) for c in row) + r" \\" for row in cells(table.frame, decimals)]
    return "\n".join([
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in table.frame.columns) + r" \\",
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]) + "\n"


def write_table(table: ResultTable, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.tex`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex = out_dir / f"{table.name}.md", out_dir / f"{table.name}.tex"
    md.write_text(to_markdown(table), encoding="utf-8")
    tex.write_text(to_latex(table), encoding="utf-8")
    return [md, tex]
