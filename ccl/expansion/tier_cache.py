"""On-disk cache entries of a span tier: ``pairs.jsonl`` + ``report.json`` (+ extra JSON lines).

``report.json`` is written last, so its presence marks a complete entry; a
damaged entry reads as missing and is rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccl.data.records import SpanPair, read_span_pairs, write_jsonl
from ccl.utils.atomic import write_text_atomic


def load_tier(folder: Path) -> tuple[list[SpanPair], dict[str, Any]] | None:
    """Pairs and report of a complete entry, or ``None`` (absent or damaged)."""
    report = folder / "report.json"
    if not report.is_file():
        return None
    try:
        return read_span_pairs(folder / "pairs.jsonl"), json.loads(report.read_text())
    except (OSError, ValueError):
        return None


def save_tier(
    folder: Path,
    pairs: Iterable[SpanPair],
    report: dict[str, Any],
    extra: Mapping[str, Iterable[Any]] | None = None,
) -> None:
    """Write an entry; ``extra`` maps further JSON-lines file names to their rows."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "pairs.jsonl", pairs)
    for name, rows in (extra or {}).items():
        write_jsonl(folder / name, rows)
    # Last: its presence marks a complete entry.
    write_text_atomic(folder / "report.json", json.dumps(report, indent=2, sort_keys=True))
