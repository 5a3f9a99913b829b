"""Progress that reaches a log file as well as a terminal.

When stdout is a terminal, training shows Lightning's rich progress bar and
prediction a rich bar (both redraw in place; prediction's is
:func:`ccl.generation.progress.doc_progress`). When stdout is redirected (``> run.log``,
``nohup``, a batch scheduler), a redrawn bar writes nothing useful, so a plain line
is printed instead every :func:`interval_s` seconds (30 s; ``CCL_PROGRESS_SECONDS``
changes it, 0 prints every step), plus one at the end:

    train: step 120/400 (30%), loss 1.234, 2,310 tokens/s, elapsed 4m02s, ETA 9m25s
    predict: 24/61 documents (39%), 0.41 docs/s, elapsed 58s, ETA 1m30s

:class:`ccl.model.train_progress.TrainProgress` (the training's Lightning callback) and
:mod:`ccl.generation.progress` write their lines with the helpers here, which import no
deep-learning library, so an OpenAI-only span-tier run starts without torch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TextIO

PROGRESS_ENV = "CCL_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stdout by default) is an interactive terminal."""
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def interval_s() -> float:
    """Seconds between two progress lines in a log (``CCL_PROGRESS_SECONDS``, default 30)."""
    value = os.environ.get(PROGRESS_ENV)
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL_S
    except ValueError:
        raise ValueError(f"{PROGRESS_ENV}={value!r}: expected a number of seconds") from None


def duration(seconds: float) -> str:
    """``"1h02m"``, ``"4m02s"`` or ``"58s"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LogLines:
    """Throttled progress lines: :meth:`update` prints when the interval has passed or at the end."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.stream = label, int(total), stream
        self.start = time.perf_counter()
        self.last: float | None = None
        self.every = interval_s()

    def due(self, done: int) -> bool:
        now = time.perf_counter()
        return done >= self.total or self.last is None and self.every == 0 or (
            now - (self.last if self.last is not None else self.start) >= self.every)

    def emit(self, text: str) -> None:
        self.last = time.perf_counter()
        print(f"{self.label}: {text}", file=self.stream or sys.stdout, flush=True)


def time_left(done: int, total: int, elapsed: float) -> str:
    """Time left at the rate so far, as :func:`duration` writes it (``"?"`` before any is done)."""
    return duration(elapsed / done * (total - done)) if done else "?"
