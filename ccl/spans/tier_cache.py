"""On-disk cache entries of a span tier: ``pairs.jsonl`` + ``report.json`` (+ extra JSON lines).

The one format of every tier's cache (gold, silver, synthetic), under
``cache_dir/<tier>/<content hash>``.

``report.json`` is written last, so its presence marks a complete entry; it also records
each file's line count and sha256 (``files``), checked on every read, so an entry that lost a
line (or any byte) since it was written reads as missing and is rebuilt, as a damaged one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccl.records import SpanPair, read_span_pairs, write_jsonl
from ccl.spans.tiers import TierResult
from ccl.utils.atomic import write_text_atomic
from ccl.utils.hashing import hash_file

log = logging.getLogger(__name__)

PAIRS = "pairs.jsonl"  # an entry's span pairs
REPORT = "report.json"  # its report; written last, so its presence marks a complete entry
FILES = "files"  # the report's record of each file: {"lines": N, "sha256": HEX}


def file_record(path: Path) -> dict[str, Any]:
    """``{"lines": N, "sha256": HEX}`` of a written file (lines: newline characters)."""
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return {"lines": lines, "sha256": hash_file(path, None)}


def entry_problem(folder: Path, report: dict[str, Any]) -> str | None:
    """Why the entry in ``folder`` does not match its own record (``None``: it does)."""
    record = report.get(FILES)
    if not isinstance(record, dict) or PAIRS not in record:
        return "no record of its files (written by an older CCL)"
    for name, want in record.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        got = file_record(path)
        if got["lines"] != want.get("lines"):
            return f"{name} has {got['lines']} lines, its record says {want.get('lines')}"
        if got["sha256"] != want.get("sha256"):
            return f"{name} does not match its recorded sha256"
    return None


def load_tier(folder: Path) -> TierResult | None:
    """Pairs and report of a complete entry, or ``None`` (absent, damaged, or of another
    format: a gold entry written as Arrow before tiers shared this one)."""
    path = folder / REPORT
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
        problem = entry_problem(folder, report)
        if problem is None:
            report.pop(FILES)
            return TierResult(read_span_pairs(folder / PAIRS), report)
    except (OSError, ValueError, AttributeError) as err:
        problem = " ".join(str(err).split()) or type(err).__name__
    log.warning("cache entry %s is damaged (%s): rebuilding it", folder, problem)
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
    """Write an entry; ``extra`` maps further JSON-lines file names to their rows. The report
    file records each file's line count and sha256 (read back by :func:`load_tier`)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [PAIRS, *(extra or {})]
    write_jsonl(folder / PAIRS, pairs)
    for name, rows in (extra or {}).items():
        write_jsonl(folder / name, rows)
    record = {name: file_record(folder / name) for name in names}
    # Last: its presence marks a complete entry.
    write_text_atomic(folder / REPORT, json.dumps({**report, FILES: record}, indent=2, sort_keys=True))
