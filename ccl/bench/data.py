"""``python -m ccl.bench data``: seconds to parse the Alphabetic Index and build the full gold tier, and
to load the Tabular List cold and cached."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.bench.common import machine_info
from ccl.icd.download import find_index_files
from ccl.icd.index import parse_index_xml
from ccl.icd.tabular import load_tabular
from ccl.spans.gold import build_gold_tier

_TABULAR_TIMER = (
    "import sys, time; t = time.perf_counter(); from ccl.icd.tabular import load_tabular; "
    "tab = load_tabular(None, sys.argv[1]); print(time.perf_counter() - t, len(tab))"
)


def _timed_tabular_load(cache_dir: Path) -> float:
    """Seconds to import the module and load the Tabular List in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _TABULAR_TIMER, str(cache_dir)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[0])


def bench_data(args: argparse.Namespace, overrides: list[str], console: Console) -> dict[str, Any]:
    if not args.icd_dir:
        raise ValueError("data: give --icd-dir, the folder holding the four CDC index XML files")
    files = find_index_files(Path(args.icd_dir))
    if not files:
        raise FileNotFoundError(f"{args.icd_dir}: no ICD-10-CM index XML files found")
    with tempfile.TemporaryDirectory() as cache:
        cold = _timed_tabular_load(Path(cache))
        cached = _timed_tabular_load(Path(cache))
        tab = load_tabular(None, cache)
        t = time.perf_counter()
        parses = [parse_index_xml(p) for p in files.values()]
        parse_s = time.perf_counter() - t
        tier = build_gold_tier(tab, parses, codes=None, cache_dir=cache)
        total = time.perf_counter() - t
    result = {
        "benchmark": "data", "command": args.command_line, "files": {k: str(p) for k, p in files.items()},
        "index_parse_s": round(parse_s, 2), "index_plus_gold_tier_s": round(total, 2),
        "gold_pairs": len(tier.pairs), "tabular_cold_s": round(cold, 2), "tabular_cached_s": round(cached, 2),
        "targets_s": {"index_plus_gold_tier": 30, "tabular_cold": 10, "tabular_cached": 1},
        "machine": machine_info(),
    }
    table = Table(title="ICD-10-CM data speed")
    for col in ("step", "seconds", "target"):
        table.add_column(col, justify="left" if col == "step" else "right")
    table.add_row(f"parse {len(files)} index files", f"{parse_s:.1f}", "")
    table.add_row(f"parse + full gold tier ({len(tier.pairs):,} pairs)", f"{total:.1f}", "<= 30")
    table.add_row("Tabular List, cold (parse + pickle, fresh process)", f"{cold:.2f}", "<= 10")
    table.add_row("Tabular List, cached (fresh process)", f"{cached:.2f}", "<= 1")
    console.print(table)
    return result
