"""Generation progress: per document for prediction, per call (with cache hits) for expansion.

:func:`doc_progress` (prediction's HF engine): a rich bar on a terminal, throttled log lines
(:class:`ccl.utils.progress.LogLines`, every ``CCL_PROGRESS_SECONDS``) when stdout is a log.
:func:`track` (the expansion tiers): a rich bar with rate, ETA and cache hits, or nothing
when disabled.
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
    """Counts work done and cache hits; updates a bar when one is shown."""

    def __init__(self, progress: Progress | None, total: int, desc: str) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, rate="", hits=0) if progress else None
        self._start = time.perf_counter()
        self.done = 0
        self.hits = 0

    def advance(self, n: int = 1, hits: int = 0) -> None:
        """Count ``n`` more items done, ``hits`` of them answered from the cache."""
        self.done += n
        self.hits += hits
        if self._progress is None or self._task is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(
            self._task, advance=n, hits=self.hits, rate=f"{self.done / elapsed:.2f}/s"
        )


@contextmanager
def track(
    total: int,
    desc: str,
    enabled: bool = True,
    console: Console | None = None,
    show_hits: bool = True,
) -> Iterator[Tracker]:
    """``with track(n, "silver: extract") as t: ... t.advance(k, hits=h)``."""
    if not enabled or total <= 0:
        yield Tracker(None, total, desc)
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
    progress = Progress(*columns, console=console, transient=False)
    with progress:
        yield Tracker(progress, total, desc)


@contextmanager
def doc_progress(total: int, label: str = "predict", stream: TextIO | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` for ``total`` documents: a rich bar on a terminal, log lines otherwise."""
    if is_terminal(stream):
        with Progress(transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
        return
    lines = LogLines(label, total, stream)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if lines.due(done):
            elapsed = time.perf_counter() - lines.start
            rate = done / elapsed if elapsed > 0 else 0.0
            lines.emit(f"{done}/{total} documents ({done / max(total, 1):.0%}), {rate:.2f} docs/s, "
                       f"elapsed {duration(elapsed)}, ETA {time_left(done, total, elapsed)}")

    yield advance
