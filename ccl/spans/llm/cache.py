"""A persistent call cache, and the cached, batched, guarded client every tier uses.

Calls are keyed by ``(backend, model, conversation, generation parameters)``
and stored in SQLite in WAL mode with ``synchronous=FULL``: each batch is one
committed transaction, so a run killed at any point (even ``kill -9``) keeps
every finished batch and loses at most the batch in flight. ``INSERT OR
IGNORE`` on the key means a resumed or concurrent run never stores a call
twice, and results are always read back in request order.

Concurrent workers (shards of one mining run, on one machine or on a shared
filesystem) never generate a call twice: before generating a batch, a worker
*claims* its keys in one ``BEGIN IMMEDIATE`` transaction (a row in ``claims``,
skipped when the call is already stored or claimed by another live worker), and
the claim is deleted in the transaction that stores the output. Keys another
worker holds are waited for, and taken over when that worker is gone (same
host: its process has exited; any host: the claim is older than
``claim_ttl_s``).

Opening is serialised by a ``filelock`` lock beside the file (``calls.sqlite.lock``): switching
a new file to WAL takes an exclusive lock for which SQLite does not always wait (its busy
timeout is not applied to that step), so workers that opened one new cache at the same moment
used to fail with "database is locked" (13 of 120 opens, 8 processes at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from rich.console import Console

from ccl.config import LLMConfig
from ccl.generation.progress import track
from ccl.spans.llm.base import (
    Conversation,
    GenerationParams,
    LLMBackend,
    LLMError,
    check_privacy,
    make_backend,
)
from ccl.utils.hashing import stable_json
from ccl.utils.processes import process_alive

CACHE_VERSION = 1
_SQL_CHUNK = 500  # keys per SELECT, under SQLite's variable limit
CLAIM_TTL_S = 3600.0  # a claim older than this is taken over (its worker is presumed dead)
POLL_S = 0.5  # how often a worker checks for calls another worker is generating


def call_key(backend: str, model: str, conversation: Conversation, params: GenerationParams,
             grammar: str | None = None) -> str:
    """The cache key of one call (hex sha256); ``grammar``: the grammar the answer is decoded
    under (None: free decoding, the key of a call without one)."""
    record = {"v": CACHE_VERSION, "backend": backend, "model": model,
              "messages": [dict(m) for m in conversation], "params": params.to_dict()}
    if grammar is not None:
        record["grammar"] = hashlib.sha256(grammar.encode("utf-8")).hexdigest()
    return hashlib.sha256(stable_json(record).encode("utf-8")).hexdigest()


def worker_id() -> str:
    """``host:pid:random``: who holds a claim (the host and pid tell whether it is alive)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _alive(owner: str) -> bool:
    """False only when ``owner`` ran on this host and its process has exited."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return process_alive(int(pid))


class CallCache:
    """``key -> output`` in one SQLite file; safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One opener at a time (module docstring): the lock is held only while the file is
        # set up, never while calls run; SQLite's own locking covers the rest.
        opening = FileLock(f"{self.path}.lock", timeout=60, thread_local=False, is_singleton=False)
        try:
            with opening:
                self._db = self._open()
        except Timeout as err:
            raise LLMError(f"{opening.lock_file}: held by another process for 60 s while it opened the LLM call "
                           "cache; if no CCL process is running, delete the lock file and rerun") from err
        except sqlite3.DatabaseError as err:
            raise LLMError(f"{self.path}: not a usable LLM call cache ({err})") from err

    def _open(self) -> sqlite3.Connection:
        """Connect, switch to WAL with ``synchronous=FULL`` and create the tables if missing."""
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, backend TEXT NOT NULL, "
                "model TEXT NOT NULL, request TEXT NOT NULL, output TEXT NOT NULL, created REAL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                "claimed REAL NOT NULL)"
            )
        except BaseException:
            db.close()
            raise
        return db

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
        """Store ``(key, backend, model, request_json, output)`` rows in one transaction, and
        drop their claims."""
        now = time.time()
        with self._db:  # not autocommit here: BEGIN ... COMMIT around the batch
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in rows],
            )
            self._db.executemany("DELETE FROM claims WHERE key = ?", [(row[0],) for row in rows])

    def _rows(self, table: str, columns: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(keys), _SQL_CHUNK):
            chunk = list(keys[i : i + _SQL_CHUNK])
            marks = ",".join("?" * len(chunk))
            out += self._db.execute(f"SELECT {columns} FROM {table} WHERE key IN ({marks})", chunk).fetchall()
        return out

    def claim(self, keys: Sequence[str], owner: str, limit: int,
              ttl_s: float = CLAIM_TTL_S) -> list[str]:
        """Claim for ``owner`` up to ``limit`` of ``keys`` (in order) that are neither stored
        nor claimed by a live worker, in one transaction; returns the claimed keys. A claim
        of a dead worker (:func:`_alive`) or older than ``ttl_s`` seconds is taken over."""
        now = time.time()
        wanted = list(dict.fromkeys(keys))
        window = max(4 * limit, 64)  # keys read per query: claiming stops once ``limit`` are held
        got: list[str] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(wanted), window):
                chunk = wanted[start : start + window]
                done = {k for (k,) in self._rows("calls", "key", chunk)}
                held = {k: (o, t) for k, o, t in self._rows("claims", "key, owner, claimed", chunk)}
                for key in chunk:
                    if key in done:
                        continue
                    if key in held:
                        other, when = held[key]
                        if other != owner and now - when < ttl_s and _alive(other):
                            continue
                    got.append(key)
                    if len(got) >= limit:
                        break
                if len(got) >= limit:
                    break
            self._db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                                 [(k, owner, now) for k in got])
        return got

    def release(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (its batch failed or was interrupted)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,))

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
        grammars: Sequence[str | None] | None = None,
    ) -> list[str]:
        """One output per conversation, from the cache where possible, else from the backend.

        ``grammars``: one grammar per conversation (:mod:`ccl.spans.llm.grammar`; ``None``:
        free) for a backend that decodes under one (``backend.supports_grammar``); ignored
        otherwise. A call another worker is generating (:meth:`CallCache.claim`) is waited
        for, never generated twice.
        """
        check_privacy(self.backend, credentialed, self.allow_credentialed_remote)
        start = time.perf_counter()
        name, model = self.backend.name, self.backend.model_id
        if grammars is not None and len(grammars) != len(conversations):
            raise ValueError(f"{len(grammars)} grammars for {len(conversations)} conversations")
        if not getattr(self.backend, "supports_grammar", False) or grammars is None:
            grammars = [None] * len(conversations)
        keys = [call_key(name, model, c, params, g) for c, g in zip(conversations, grammars, strict=True)]
        outputs = self.cache.get_many(keys)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        todo = [k for k in first if k not in outputs]
        hits = len(first) - len(todo)
        self.stats.requested += len(keys)
        self.stats.unique += len(first)
        self.stats.cache_hits += hits
        owner = worker_id()
        try:
            with track(len(first), desc, self.progress, self.console) as bar:
                bar.advance(hits, hits=hits)
                while todo:
                    batch = self.cache.claim(todo, owner, self.batch_size)
                    if not batch:  # every key left is being generated by another worker
                        found = self.cache.get_many(todo)
                        if not found:
                            time.sleep(POLL_S)
                            continue
                        outputs.update(found)
                        self.stats.cache_hits += len(found)
                        todo = [k for k in todo if k not in found]
                        bar.advance(len(found), hits=len(found))
                        continue
                    self._generate(batch, conversations, grammars, first, params, outputs)
                    claimed = set(batch)
                    todo = [k for k in todo if k not in claimed]
                    bar.advance(len(batch))
        finally:
            self.cache.release(owner)
        self.stats.seconds += time.perf_counter() - start
        return [outputs[k] for k in keys]

    def _generate(self, batch: list[str], conversations: Sequence[Conversation],
                  grammars: Sequence[str | None], first: dict[str, int], params: GenerationParams,
                  outputs: dict[str, str]) -> None:
        """Generate the claimed ``batch`` of keys and store it (one transaction)."""
        name, model = self.backend.name, self.backend.model_id
        convs = [conversations[first[k]] for k in batch]
        batch_grammars = [grammars[first[k]] for k in batch]
        if any(g is not None for g in batch_grammars):
            texts = self.backend.generate(convs, params, grammars=batch_grammars)
        else:
            texts = self.backend.generate(convs, params)
        if len(texts) != len(batch):
            raise LLMError(
                f"backend {self.label} returned {len(texts)} outputs for {len(batch)} prompts"
            )
        rows = []
        for key, conv, grammar, text in zip(batch, convs, batch_grammars, texts, strict=True):
            text = text if isinstance(text, str) else ""
            request: dict[str, Any] = {"messages": list(conv), "params": params.to_dict()}
            if grammar is not None:
                request["grammar_sha256"] = hashlib.sha256(grammar.encode("utf-8")).hexdigest()
            rows.append((key, name, model, json.dumps(request), text))
            outputs[key] = text
        self.cache.put_many(rows)
        self.stats.generated += len(batch)

    def close(self) -> None:
        self.backend.close()
        self.cache.close()


def tier_llm(llm_cfg: LLMConfig, cache_dir: str | Path, switch: str, console: Console | None = None) -> CachedLLM:
    """The cached span-tier LLM a tier generates with (``cache_dir/llm/calls.sqlite``).

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
