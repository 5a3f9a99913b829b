"""Training checkpoints that are whole or absent, and checked before a resume.

Lightning's own ``TorchCheckpointIO`` writes through fsspec, whose local "transaction"
writes into the system temporary folder and then moves the file: across file systems
(the run folder on another disk than ``/tmp``) that move is a copy, so a full disk or a
killed process leaves a torn ``last.ckpt`` under its final name. :class:`AtomicCheckpointIO`
(Lightning's documented extension point, a ``CheckpointIO`` plugin) writes the bytes
into a temporary file *beside* the checkpoint, fsyncs it and renames it over the old one.

Before a resume, :func:`usable_checkpoint` checks the checkpoints of a run (the zip
container ``torch.save`` writes: its central directory and every member's CRC-32); a
torn or unreadable one is set aside as ``NAME.corrupt`` with one line saying so, and
training resumes from the newest good one, or starts over when none is left.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from ccl.utils.atomic import atomic_file

CORRUPT_SUFFIX = ".corrupt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` writes a temporary file in the
    checkpoint's own folder, fsyncs it and renames it into place (:func:`ccl.utils.atomic.atomic_file`).

    A full disk raises :class:`ccl.utils.atomic.NoSpaceLeft` naming the checkpoint and its
    size; the previous checkpoint under that name stays as it was. Local paths only (a
    remote ``fsspec`` URL is refused by ``atomic_file``'s ``mkdir``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        with atomic_file(path, "wb", fsync=True, size=len(data)) as f:
            f.write(data)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from (``None``: it reads whole).

    Checks the zip container of ``torch.save`` without unpickling: the central directory
    (a cut file has none), the ``data.pkl`` record and each member's CRC-32 (reads the
    whole file once).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                return "no data.pkl record: not a torch checkpoint"
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        return " ".join(str(err).split()) or type(err).__name__
    return f"member {bad} fails its CRC check" if bad else None


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``NAME.corrupt`` (kept for a look, never read again)."""
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, aside)
    return aside


def usable_checkpoint(ckpt_dir: Path, say: Callable[[str], None], rename: bool = True) -> Path | None:
    """The checkpoint to resume from in ``ckpt_dir``: ``last.ckpt`` when it reads whole, else
    the newest other ``*.ckpt`` that does; ``None`` (start over) when none does.

    Each damaged checkpoint is set aside (``rename``; DDP ranks > 0 pass False and only
    skip it) with one ``say`` line naming it and why. Temporary files of a write that was
    killed (``.NAME.*.tmp``) are removed.
    """
    if not ckpt_dir.is_dir():
        return None
    if rename:
        for tmp in ckpt_dir.glob(".*.ckpt.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
    last = ckpt_dir / "last.ckpt"
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    found, damaged = None, []
    for path in [p for p in (last, *others) if p.is_file()]:
        problem = checkpoint_problem(path)
        if problem is None:
            found = path
            break
        damaged.append((path, problem, set_aside(path).name if rename else None))
    outcome = f"resuming from {found.name}" if found else "training starts over"
    for path, problem, aside in damaged:
        kept = f"set aside as {aside}" if aside else "skipped"
        say(f"train: checkpoint {path} is damaged ({problem}); {kept}, {outcome}")
    return found


def check_given_checkpoint(path: str | Path) -> None:
    """Refuse a ``ckpt_path=...`` the user gave that is missing or unreadable (``ValueError``
    naming it); it is the user's file, so it is not renamed."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f"ckpt_path={path}: not a readable checkpoint ({problem}); give another one, "
                         "or leave ckpt_path out to resume from the run's own checkpoints")
