"""Content hashes for cache keys and the data manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_obj(obj: Any, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable value."""
    return hashlib.sha256(stable_json(obj).encode("utf-8")).hexdigest()[:n]


def hash_file(path: str | Path, n: int | None = 16) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks; the first ``n`` hex digits (None: all 64)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def hash_records(records: Iterable[Any], n: int = 16) -> str:
    """Order-sensitive hash of records (dataclasses with ``to_dict`` or plain values)."""
    h = hashlib.sha256()
    for r in records:
        h.update(stable_json(r.to_dict() if hasattr(r, "to_dict") else r).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:n]
