"""Offline switch and memory of failed downloads, shared by every downloader in CCL.

* :func:`fetch_url` -- the one download: a URL into a file, by rename.
* :func:`offline_reason` -- ``CCL_OFFLINE=1`` (or Hugging Face's ``HF_HUB_OFFLINE=1``)
  makes every download in CCL a no-op that reports itself in one line.
* :class:`FailedDownload` -- a download that failed (network error, HTTP error, bad
  archive) leaves a small JSON marker in the cache; for :data:`RETRY_AFTER_S` (24 h,
  ``CCL_DOWNLOAD_RETRY_HOURS`` to change) the same URL is not tried again, so a run
  on a machine without network does not wait for a timeout and print the same long
  network error every time. Deleting the marker (its path is in the message) retries.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ccl.utils.atomic import atomic_file
from ccl.utils.hashing import hash_obj

OFFLINE_ENV = ("CCL_OFFLINE", "HF_HUB_OFFLINE")
RETRY_ENV = "CCL_DOWNLOAD_RETRY_HOURS"
RETRY_AFTER_S = 24 * 3600.0
MARKER_DIR = ".failed-downloads"


def fetch_url(url: str, dest: Path, timeout: float) -> Path:
    """Download ``url`` into ``dest`` by rename (no partial file is ever left under its name).

    Errors propagate for the caller to word: ``urllib.error.HTTPError`` (a status),
    ``urllib.error.URLError`` / ``OSError`` / ``TimeoutError`` (network).
    """
    with atomic_file(dest, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
        shutil.copyfileobj(response, out)
    return dest


def offline_reason() -> str | None:
    """``"CCL_OFFLINE=1"`` (or ``HF_HUB_OFFLINE=1``) when downloads are switched off, else None."""
    for name in OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    return None


def retry_after_s() -> float:
    """Seconds a failed URL is left alone (``CCL_DOWNLOAD_RETRY_HOURS``, default 24 h)."""
    value = os.environ.get(RETRY_ENV)
    try:
        return float(value) * 3600.0 if value else RETRY_AFTER_S
    except ValueError:
        raise ValueError(f"{RETRY_ENV}={value!r}: expected a number of hours") from None


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class FailedDownload:
    """The failure marker of one URL under ``cache_dir/.failed-downloads/``."""

    cache_dir: Path
    url: str

    @property
    def path(self) -> Path:
        return Path(self.cache_dir) / MARKER_DIR / f"{hash_obj(self.url)}.json"

    def remember(self, error: str) -> None:
        """Write the marker (time, URL, first 300 characters of the error); never raises."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"url": self.url, "time": time.time(), "error": error[:300]}))
        except OSError:
            pass  # a read-only cache only means the next run tries again

    def recent(self) -> str | None:
        """One line saying when and how the URL failed, if it did within the retry window."""
        try:
            record = json.loads(self.path.read_text())
            age = time.time() - float(record["time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if age >= retry_after_s():
            return None
        error = " ".join(str(record.get("error", "")).split())[:120]
        return (f"{self.url} failed {_age(age)} ago ({error}); not retried for {retry_after_s() / 3600:g} h "
                f"(delete {self.path} to retry now)")

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def skip_reason(cache_dir: Path, url: str) -> str | None:
    """Why ``url`` is not to be downloaded now (offline switch, recent failure), or None."""
    reason = offline_reason()
    if reason:
        return f"{url} not downloaded: {reason}"
    return FailedDownload(cache_dir, url).recent()
