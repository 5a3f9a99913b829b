"""Files checked when read: a cut or changed cache entry or run-folder file is never trusted.

A folder written whole (a backbone cache entry, a run's ``model/``) carries a record of
its files, ``.ccl_files.json`` (size and sha256 of each), checked on every read
(:func:`folder_problem`). A folder without one (written before CCL kept records) gets a
structural check instead: every JSON file parses and every safetensors file is as long
as its own header says (a cut file fails both). A single JSON file of a run folder is
read with :func:`read_json`, which names the file when it does not parse.

A damaged cache entry is rebuilt (:func:`cached_folder`); a damaged run-folder file
raises :class:`DamagedFile`: one line naming the file and what to do.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path
from typing import Any

from ccl.utils.atomic import write_json_atomic
from ccl.utils.hashing import hash_file

log = logging.getLogger(__name__)

RECORD = ".ccl_files.json"  # inside a folder: {relative path: {"bytes": N, "sha256": HEX}}
HASH_LIMIT = 2 << 30  # files larger than this are checked by size only (hashing takes seconds per GB)


class DamagedFile(ValueError):
    """A run-folder file that is cut, changed or unreadable: ``PATH: damaged (WHY); FIX``."""

    def __init__(self, path: str | Path, reason: str, fix: str) -> None:
        self.path, self.reason, self.fix = Path(path), reason, fix
        super().__init__(f"{path}: damaged ({reason}); {fix}")


def read_json(path: str | Path, fix: str = "delete it and rerun") -> Any:
    """The JSON value in ``path``; :class:`DamagedFile` naming it (and ``fix``) when it does not
    parse (a cut write) or is not UTF-8. ``FileNotFoundError`` when absent."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DamagedFile(path, f"not UTF-8 text at byte {err.start}", fix) from None
    except json.JSONDecodeError as err:
        raise DamagedFile(path, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", fix) from None


def safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not whole (``None``: its size matches its header)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "shorter than its header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return "shorter than its header"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        return f"unreadable header: {' '.join(str(err).split())}"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return None if size == 8 + n + end else f"{size:,} bytes where its header says {8 + n + end:,}"


def file_problem(path: Path) -> str | None:
    """Structural check of one file by its kind (JSON parses, safetensors complete)."""
    if path.suffix == ".json":
        try:
            read_json(path)
        except DamagedFile as err:
            return err.reason
        return None
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != RECORD and not p.name.startswith(".")
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]))


def write_record(folder: str | Path) -> None:
    """Write ``folder/.ccl_files.json``: size and sha256 of every file under ``folder``."""
    folder = Path(folder)
    record = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": hash_file(p, None)}
              for p in _files(folder)}
    write_json_atomic(folder / RECORD, record)


def folder_problem(folder: str | Path, required: tuple[str, ...] = ()) -> tuple[Path, str] | None:
    """``(file, why)`` for the first file of ``folder`` that is missing, cut or changed against
    the folder's record (or, without a record, fails :func:`file_problem`); ``None`` when whole."""
    folder = Path(folder)
    for name in required:
        if not (folder / name).is_file():
            return folder / name, "missing"
    if not (folder / RECORD).is_file():
        for path in _files(folder):
            problem = file_problem(path)
            if problem:
                return path, problem
        return None
    try:
        record = read_json(folder / RECORD)
    except DamagedFile as err:
        return err.path, err.reason
    for name, want in record.items():
        path = folder / name
        if not path.is_file():
            return path, "missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return path, f"{size:,} bytes where its record says {want.get('bytes'):,}"
        if size <= HASH_LIMIT and hash_file(path, None) != want.get("sha256"):
            return path, "its content does not match its recorded sha256"
    return None


def cached_folder(out: str | Path, required: tuple[str, ...] = ()) -> bool:
    """Whether the cache entry ``out`` is there and whole. A damaged one is deleted (with a
    warning naming the file), so that the caller rebuilds it."""
    out = Path(out)
    if not out.is_dir():
        return False
    bad = folder_problem(out, required)
    if bad is None:
        return True
    log.warning("cache entry %s is damaged (%s: %s): rebuilding it", out, bad[0].name, bad[1])
    shutil.rmtree(out, ignore_errors=True)
    return False


def check_folder(folder: str | Path, fix: str, required: tuple[str, ...] = ()) -> None:
    """Raise :class:`DamagedFile` naming the first damaged file of a run-folder part and ``fix``."""
    bad = folder_problem(folder, required)
    if bad is not None:
        raise DamagedFile(bad[0], bad[1], fix)
