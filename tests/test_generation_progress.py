"""Generation progress (ccl.generation.progress): one tracker for prediction and the span tiers,
a rich bar on a terminal and log lines in a log file."""

import io
import re

from rich.console import Console

from ccl.generation.progress import doc_progress, track


def test_prediction_progress_in_a_log_is_one_line_per_interval(monkeypatch):
    monkeypatch.setenv("CCL_PROGRESS_SECONDS", "0")  # a line at every step
    log = io.StringIO()  # no terminal
    with doc_progress(3, stream=log) as advance:
        advance(1)
        advance(2)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"predict: 1/3 documents \(33%\), [\d.]+ docs/s, elapsed \d+s, ETA \S+", lines[0])
    assert lines[1].startswith("predict: 3/3 documents (100%), ")


def test_expansion_progress_to_a_log_console_counts_cache_hits(monkeypatch):
    monkeypatch.setenv("CCL_PROGRESS_SECONDS", "3600")  # only the closing line
    log = io.StringIO()
    console = Console(file=log)  # a file is no terminal
    with track(4, "silver: extract", console=console) as tracker:
        tracker.advance(2, hits=1)
        tracker.advance(2, hits=2)
    [line] = log.getvalue().splitlines()
    assert line.startswith("silver: extract: 4/4 items (100%), ") and ", cache hits 3, " in line
    assert (tracker.done, tracker.hits) == (4, 3)


def test_disabled_progress_counts_and_writes_nothing():
    log = io.StringIO()
    with track(2, "synthetic: write", enabled=False, console=Console(file=log)) as tracker:
        tracker.advance(2)
    assert tracker.done == 2 and log.getvalue() == ""
