"""A rich progress bar with rate, ETA and cache hits, or nothing when disabled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Tracker:
    """Counts work done and cache hits; updates a bar when one is shown."""

    def __init__(self, progress: Progress | None, total: int, desc: str) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, rate="", hits=0) if progress else None
        self._start = time.perf_counter()
        self.done = 0
        self.hits = 0

    def advance(self, n: int = 1, hits: int = 0) -> None:
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
