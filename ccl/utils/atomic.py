"""Atomic writes: a file or folder appears whole under its name, or not at all.

Every cache entry and run-folder file is written beside its final name and then
renamed over it (``os.replace``, atomic on one file system), so a killed or
concurrent writer never leaves a torn file for a reader to take as finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit rename it to ``path``.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"``. The parent folder is created.
    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask),
    so a shared cache stays readable by others. On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0o600)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` by rename."""
    with atomic_file(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (``default=str``) by rename: run-folder files."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def write_pickle_atomic(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` (highest protocol) to ``path`` by rename: parse caches."""
    with atomic_file(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


@contextlib.contextmanager
def atomic_dir(out: str | Path, done_marker: str | None = None, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on a clean exit rename it to ``out``.

    The folder is readable by all (a shared cache). ``replace``: an existing ``out`` is
    deleted just before the rename (a run folder's ``data/``). Otherwise, when another
    process renamed its own copy first (``out`` exists and is not empty), the rename fails:
    the other copy is kept, unless ``done_marker`` is given and ``out/done_marker`` is
    missing, which re-raises the error. The temporary folder never outlives the block.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        yield tmp
        if replace:
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if done_marker is not None and not (out / done_marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
