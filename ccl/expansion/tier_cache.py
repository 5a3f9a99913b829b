"""On-disk cache entries of a span tier: ``pairs.jsonl`` + ``report.json`` (+ extra JSON lines).

The one format of every tier's cache (gold, silver, synthetic), under
``cache_dir/<tier>/<content hash>``.

``report.json`` is written last, so its presence marks a complete entry; a
damaged entry reads as missing and is rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccl.data.records import SpanPair, read_span_pairs, write_jsonl
from ccl.expansion.tiers import TierResult
from ccl.utils.atomic import write_text_atomic

PAIRS = "pairs.jsonl"  # an entry's span pairs
REPORT = "report.json"  # its report; written last, so its presence marks a complete entry


def load_tier(folder: Path) -> TierResult | None:
    """Pairs and report of a complete entry, or ``None`` (absent, damaged, or of another
    format: a gold entry written as Arrow before tiers shared this one)."""
    report = folder / REPORT
    if not report.is_file():
        return None
    try:
        return TierResult(read_span_pairs(folder / PAIRS), json.loads(report.read_text()))
    except (OSError, ValueError):
        return None


def open_entry(cache_dir: str | Path, tier: str, key: str) -> tuple[Path, TierResult | None]:
    """The entry folder ``cache_dir/<tier>/<key>`` and what it holds (``None``: build it,
    then :func:`save_tier` into the folder)."""
    folder = Path(cache_dir) / tier / key
    return folder, load_tier(folder)


def save_tier(
    folder: Path,
    pairs: Iterable[SpanPair],
    report: dict[str, Any],
    extra: Mapping[str, Iterable[Any]] | None = None,
) -> None:
    """Write an entry; ``extra`` maps further JSON-lines file names to their rows."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / PAIRS, pairs)
    for name, rows in (extra or {}).items():
        write_jsonl(folder / name, rows)
    # Last: its presence marks a complete entry.
    write_text_atomic(folder / REPORT, json.dumps(report, indent=2, sort_keys=True))
