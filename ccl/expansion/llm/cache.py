"""A persistent call cache, and the cached, batched, guarded client every tier uses.

Calls are keyed by ``(backend, model, conversation, generation parameters)``
and stored in SQLite in WAL mode with ``synchronous=FULL``: each batch is one
committed transaction, so a run killed at any point (even ``kill -9``) keeps
every finished batch and loses at most the batch in flight. ``INSERT OR
IGNORE`` on the key means a resumed or concurrent run never stores a call
twice, and results are always read back in request order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ccl.config import LLMConfig
from ccl.expansion.llm.base import (
    Conversation,
    GenerationParams,
    LLMBackend,
    LLMError,
    check_privacy,
    make_backend,
)
from ccl.generation.progress import track
from ccl.utils.hashing import stable_json

CACHE_VERSION = 1
_SQL_CHUNK = 500  # keys per SELECT, under SQLite's variable limit


def call_key(backend: str, model: str, conversation: Conversation, params: GenerationParams) -> str:
    """The cache key of one call (hex sha256)."""
    blob = stable_json(
        {"v": CACHE_VERSION, "backend": backend, "model": model,
         "messages": [dict(m) for m in conversation], "params": params.to_dict()}
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """``key -> output`` in one SQLite file; safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, backend TEXT NOT NULL, "
                "model TEXT NOT NULL, request TEXT NOT NULL, output TEXT NOT NULL, created REAL)"
            )
        except sqlite3.DatabaseError as err:
            raise LLMError(f"{self.path}: not a usable LLM call cache ({err})") from err

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for i in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, output FROM calls WHERE key IN ({marks})", chunk)
            found.update(rows.fetchall())
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """Store ``(key, backend, model, request_json, output)`` rows in one transaction."""
        now = time.time()
        with self._db:  # not autocommit here: BEGIN ... COMMIT around the batch
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in rows],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass
class CallStats:
    """What one or more :meth:`CachedLLM.complete` calls did."""

    requested: int = 0
    unique: int = 0
    cache_hits: int = 0
    generated: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 2)
        return out


class CachedLLM:
    """A backend behind the call cache, in batches, with progress and the privacy guard."""

    def __init__(
        self,
        backend: LLMBackend,
        cache: CallCache | str | Path,
        batch_size: int = 8,
        progress: bool = True,
        allow_credentialed_remote: bool = False,
        console: Console | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.cache = cache if isinstance(cache, CallCache) else CallCache(cache)
        self.batch_size = batch_size
        self.progress = progress
        self.allow_credentialed_remote = allow_credentialed_remote
        self.console = console
        self.stats = CallStats()

    @property
    def label(self) -> str:
        return f"{self.backend.name}:{self.backend.model_id}"

    def complete(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        desc: str = "llm",
        credentialed: bool = False,
    ) -> list[str]:
        """One output per conversation, from the cache where possible, else from the backend."""
        check_privacy(self.backend, credentialed, self.allow_credentialed_remote)
        start = time.perf_counter()
        name, model = self.backend.name, self.backend.model_id
        keys = [call_key(name, model, c, params) for c in conversations]
        outputs = self.cache.get_many(keys)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [k for k in first if k not in outputs]
        hits = len(first) - len(missing)
        self.stats.requested += len(keys)
        self.stats.unique += len(first)
        self.stats.cache_hits += hits
        with track(len(first), desc, self.progress, self.console) as bar:
            bar.advance(hits, hits=hits)
            for b in range(0, len(missing), self.batch_size):
                batch = missing[b : b + self.batch_size]
                convs = [conversations[first[k]] for k in batch]
                texts = self.backend.generate(convs, params)
                if len(texts) != len(batch):
                    raise LLMError(
                        f"backend {self.label} returned {len(texts)} outputs for {len(batch)} prompts"
                    )
                rows = []
                for key, conv, text in zip(batch, convs, texts, strict=True):
                    text = text if isinstance(text, str) else ""
                    request = json.dumps({"messages": list(conv), "params": params.to_dict()})
                    rows.append((key, name, model, request, text))
                    outputs[key] = text
                self.cache.put_many(rows)
                self.stats.generated += len(batch)
                bar.advance(len(batch))
        self.stats.seconds += time.perf_counter() - start
        return [outputs[k] for k in keys]

    def close(self) -> None:
        self.backend.close()
        self.cache.close()


def tier_llm(llm_cfg: LLMConfig, cache_dir: str | Path, switch: str, console: Console | None = None) -> CachedLLM:
    """The cached expansion LLM a tier generates with (``cache_dir/llm/calls.sqlite``).

    ``switch`` names the setting that asked for it (``spans.silver.method=llm``): under
    ``llm=lexical``, which generates no text, the ``ValueError`` says which backends to pick.
    """
    if llm_cfg.backend == "lexical":
        raise ValueError(f"{switch} needs a generating backend: llm=hf, openai or vllm")
    return CachedLLM(
        make_backend(llm_cfg, cache_dir), Path(cache_dir) / "llm" / "calls.sqlite",
        batch_size=llm_cfg.batch_size, progress=llm_cfg.progress,
        allow_credentialed_remote=llm_cfg.allow_credentialed_remote, console=console,
    )
