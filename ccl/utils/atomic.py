"""Atomic writes: a file or folder appears whole under its name, or not at all.

Every cache entry and run-folder file is written beside its final name and then
renamed over it (``os.replace``, atomic on one file system), so a killed or
concurrent writer never leaves a torn file for a reader to take as finished.

A full disk (``ENOSPC``) while writing is raised as :class:`NoSpaceLeft`: the final path,
roughly how much the write needed and how much is free there, in one line; the temporary
file is gone, the final name untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ccl.utils.hashing import hash_file


class NoSpaceLeft(OSError):
    """The disk filled up while writing ``path`` (``errno.ENOSPC``); nothing was left under its name.

    ``needed``: bytes the write needs: its whole size when known beforehand (``exact``), else
    a lower bound (what it had written, or the space that was free when it began: it filled
    that); ``free``: bytes free on that file system now that the partial write is gone.
    """

    def __init__(self, path: str | Path, needed: int | None = None, exact: bool = True) -> None:
        self.path, self.needed, self.exact = Path(path), needed, exact
        self.free = free_bytes(self.path)
        super().__init__(errno.ENOSPC, "No space left on device", str(path))

    def __str__(self) -> str:
        need = (f"{'about' if self.exact else 'more than'} {human_bytes(self.needed)}" if self.needed
                else "more space")
        free = f"{human_bytes(self.free)} free" if self.free is not None else "free space unknown"
        return (f"{self.path}: no space left on device (this step needs {need}; {free} there). "
                "Nothing partial was kept: free some space (or point paths.output_dir / paths.cache_dir "
                "to a larger disk) and rerun")


def human_bytes(n: int | None) -> str:
    """``15466496`` -> ``"15 MB"`` (decimal units, as ``df -H``)."""
    size = float(n or 0)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("bytes", "kB", "MB") else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the file system of ``path`` (its nearest existing parent)."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return None


def is_no_space(err: BaseException | None) -> bool:
    """Whether ``err`` (or an error it was raised from) is a full disk: ``OSError`` with
    ``ENOSPC``, or a library error that only says so in its text (safetensors' Rust
    ``IoError(... code: 28, kind: StorageFull ...)``)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when gone)."""
    with contextlib.suppress(OSError):
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0


def _needed_at_least(err: BaseException, began_free: int, written: int) -> int:
    """A lower bound of what a write that hit a full disk needed: all the space that was free
    when it began (it filled the disk; a library may have removed its partial file since), or
    what it wrote when the limit was a quota (``EDQUOT``), not the disk."""
    quota, seen = False, 0
    while err is not None and seen < 10:
        quota |= (isinstance(err, OSError) and err.errno == errno.EDQUOT) or "quota" in str(err).lower()
        err, seen = err.__cause__ or err.__context__, seen + 1  # type: ignore[assignment]
    return written if quota else max(written, began_free)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX: fsync the directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = False, size: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit rename it to ``path``.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"``. The parent folder is created.
    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask),
    so a shared cache stays readable by others. On an exception the temporary file is
    removed and ``path`` is left as it was; a full disk raises :class:`NoSpaceLeft`
    naming ``path`` (``size``: the bytes the whole file needs, when known). ``fsync``: the
    data and the rename reach the disk before the block returns (checkpoints).
    """
    path = Path(path)
    began_free = 0 if size else free_bytes(path.parent) or 0  # a full disk: the write needed more
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if is_no_space(err):
            raise NoSpaceLeft(path, size) from err
        raise
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0o600)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException as err:
        needed = size or (_needed_at_least(err, began_free, _size(Path(tmp))) if is_no_space(err) else 0)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_no_space(err) and not isinstance(err, NoSpaceLeft):
            raise NoSpaceLeft(path, needed or None, exact=bool(size)) from err
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` by rename."""
    with atomic_file(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (``default=str``) by rename: run-folder files."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


CHECKSUM_SUFFIX = ".sha256"  # beside a pickle: the sha256 of its bytes, written after it


def write_pickle_atomic(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` (highest protocol) to ``path`` by rename: parse caches. Then the sha256
    of its bytes is written beside it (``PATH.sha256``), which :func:`pickle_intact` checks:
    a pickle has no checksum of its own, and a changed byte can unpickle into a wrong value."""
    import hashlib

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_file(path, "wb", size=len(data)) as f:
        f.write(data)
    write_text_atomic(f"{path}{CHECKSUM_SUFFIX}", hashlib.sha256(data).hexdigest() + "\n")


def pickle_intact(path: str | Path) -> bool:
    """Whether the pickle at ``path`` matches the sha256 written beside it (False when either
    is missing: an entry of an older CCL, or a write that stopped between the two)."""
    try:
        want = Path(f"{path}{CHECKSUM_SUFFIX}").read_text().strip()
        return hash_file(path, None) == want
    except OSError:
        return False


@contextlib.contextmanager
def atomic_dir(
    out: str | Path, done_marker: str | None = None, replace: bool = False,
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on a clean exit rename it to ``out``.

    The folder is readable by all (a shared cache). ``replace``: an existing ``out`` is
    deleted just before the rename (a run folder's ``data/``). Otherwise, when another
    process renamed its own copy first (``out`` exists and is not empty), the rename fails:
    the other copy is kept, unless ``done_marker`` is given and ``out/done_marker`` is
    missing, which re-raises the error. The temporary folder never outlives the block.
    A cache folder that is checked when read back gets its record of files' sizes and sha256
    as the block's last step (:func:`ccl.utils.verify.write_record`).
    """
    out = Path(out)
    began_free = free_bytes(out.parent) or 0  # a full disk: the folder needed more than this
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        if is_no_space(err):
            raise NoSpaceLeft(out) from err
        raise
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
    except Exception as err:
        if is_no_space(err):  # named as the folder (an inner file's name is a temporary one)
            needed = max(_needed_at_least(err, began_free, _size(tmp)), getattr(err, "needed", None) or 0)
            raise NoSpaceLeft(out, needed or None, exact=False) from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
