"""Generation progress, one implementation for prediction and the span tiers.

:func:`track` counts items done (and, for the span tiers, cache hits). On a terminal it
shows a rich bar with count, rate, elapsed time and ETA; when stdout (or the console given) is
no terminal (``> run.log``, ``nohup``, a batch scheduler) it prints throttled log lines
(:class:`ccl.utils.progress.LogLines`: every ``CCL_PROGRESS_SECONDS``, 30 s by default, and
at the end)::

    predict: 24/61 documents (39%), 0.41 docs/s, elapsed 58s, ETA 1m30s
    silver: extract: 120/400 items (30%), 2.10 items/s, cache hits 40, elapsed 57s, ETA 2m13s

:func:`doc_progress` is the prediction engine's view of it (``advance(n)`` per document).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ccl.utils.progress import LogLines, duration, is_terminal, time_left


class Tracker:
    """Counts work done and cache hits; updates a bar or writes a log line when one is shown.

    ``progress``: the rich bar (None: none); ``lines``: the log-line writer (None: none);
    ``unit`` / ``rate_unit`` name the items in log lines; ``show_hits`` adds the cache hits.
    """

    def __init__(self, progress: Progress | None, total: int, desc: str, lines: LogLines | None = None,
                 unit: str = "items", rate_unit: str | None = None, show_hits: bool = False) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, rate="", hits=0) if progress else None
        self._lines = lines
        self._start = time.perf_counter()
        self.total, self.unit, self.rate_unit, self.show_hits = int(total), unit, rate_unit or unit, show_hits
        self.done = 0
        self.hits = 0

    def advance(self, n: int = 1, hits: int = 0) -> None:
        """Count ``n`` more items done, ``hits`` of them answered from the cache."""
        self.done += n
        self.hits += hits
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, advance=n, hits=self.hits, rate=f"{self.done / elapsed:.2f}/s"
            )
        elif self._lines is not None and self._lines.due(self.done):
            hits = f", cache hits {self.hits}" if self.show_hits else ""
            self._lines.emit(
                f"{self.done}/{self.total} {self.unit} ({self.done / max(self.total, 1):.0%}), "
                f"{self.done / elapsed:.2f} {self.rate_unit}/s{hits}, elapsed {duration(elapsed)}, "
                f"ETA {time_left(self.done, self.total, elapsed)}"
            )


@contextmanager
def track(
    total: int,
    desc: str,
    enabled: bool = True,
    console: Console | None = None,
    show_hits: bool = True,
    *,
    unit: str = "items",
    rate_unit: str | None = None,
    stream: TextIO | None = None,
    transient: bool = False,
) -> Iterator[Tracker]:
    """``with track(n, "silver: extract") as t: ... t.advance(k, hits=h)``.

    ``enabled`` False (or ``total <= 0``): count only. A rich bar when ``console`` (default:
    ``stream``, default stdout) is a terminal (``transient``: removed when done), else log lines
    to the console's file or ``stream``.
    """
    if not enabled or total <= 0:
        yield Tracker(None, total, desc)
        return
    terminal = console.is_terminal if console is not None else is_terminal(stream)
    if not terminal:
        out = console.file if console is not None else stream
        yield Tracker(None, total, desc, LogLines(desc, total, out), unit, rate_unit, show_hits)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        *([TextColumn("cache hits {task.fields[hits]}")] if show_hits else []),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=console, transient=transient)
    with progress:
        yield Tracker(progress, total, desc)


@contextmanager
def doc_progress(total: int, label: str = "predict", stream: TextIO | None = None,
                 unit: str = "documents") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` for ``total`` items (``unit``: documents, or what the prompts are,
    e.g. ``windows``, ``evidence phrases``): a rich bar on a terminal (removed when done), log
    lines (``predict: 24/61 documents (39%), 0.41 docs/s, ...``) otherwise."""
    rate = "docs" if unit == "documents" else unit.split()[-1]
    with track(total, label, show_hits=False, unit=unit, rate_unit=rate, stream=stream,
               transient=True) as tracker:
        yield tracker.advance
