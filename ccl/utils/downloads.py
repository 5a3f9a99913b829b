"""Downloads, the offline switch and the memory of failed downloads, shared by every downloader in CCL.

* :func:`fetch_url` -- the one download: a URL into a file, through ``pooch`` (HTTP(S) by
  ``requests``, FTP by ``ftplib``; a ``file://`` URL, e.g. a mirror on a shared disk, is
  copied), an optional SHA-256 check, the file moved into place only when complete; any
  failure is one :class:`DownloadFailed` line.
* :func:`offline_reason` -- ``CCL_OFFLINE=1`` (or Hugging Face's ``HF_HUB_OFFLINE=1``)
  makes every download in CCL a no-op that reports itself in one line.
* :class:`FailedDownload` -- a download that failed (network error, HTTP error, bad
  archive) leaves a small JSON marker in the cache; for :data:`RETRY_AFTER_S` (24 h,
  ``CCL_DOWNLOAD_RETRY_HOURS`` to change) the same URL is not tried again, so a run
  on a machine without network does not wait for a timeout and print the same long
  network error every time. Deleting the marker (its path is in the message) retries.
"""

from __future__ import annotations

import ftplib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch
import requests

from ccl.utils.atomic import atomic_file
from ccl.utils.hashing import hash_obj

OFFLINE_ENV = ("CCL_OFFLINE", "HF_HUB_OFFLINE")
RETRY_ENV = "CCL_DOWNLOAD_RETRY_HOURS"
RETRY_AFTER_S = 24 * 3600.0
MARKER_DIR = ".failed-downloads"


class DownloadFailed(OSError):
    """:func:`fetch_url` could not get ``url``: ``reason`` is one short line (``HTTP 404 Not
    Found``, ``network error (...)``, a hash mismatch), ``str()`` the URL and the reason."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


def fetch_url(url: str, dest: Path, timeout: float, known_hash: str | None = None) -> Path:
    """Download ``url`` into ``dest`` with :func:`pooch.retrieve`; return ``dest``.

    ``http(s)://`` and ``ftp://`` go through pooch's downloaders; ``file://`` (a local or
    mounted mirror, which pooch does not fetch) is copied. Either way a temporary file beside
    ``dest`` is moved into place only when the transfer (and the check against ``known_hash``,
    ``"sha256:..."``, when given) succeeded, so no partial file is ever left under its name.
    ``timeout`` is in seconds (connect and each read). Raises :class:`DownloadFailed` (an
    ``OSError``) on an HTTP status, a network error, a missing local file, a file that cannot
    be written, a hash mismatch or a URL scheme other than these.
    """
    dest = Path(dest)
    scheme = urlparse(url).scheme.lower()
    if scheme == "file":
        return _copy_local(url, dest, known_hash)
    downloaders = {"http": pooch.HTTPDownloader, "https": pooch.HTTPDownloader, "ftp": pooch.FTPDownloader}
    if scheme not in downloaders:
        raise DownloadFailed(url, f"URL scheme {scheme or '(none)'!r} not supported (use http(s)://, ftp:// "
                                  "or file://, or place the file by hand)")
    downloader = downloaders[scheme](timeout=timeout, progressbar=False)
    try:
        with _quiet_pooch():
            pooch.retrieve(url, known_hash, fname=dest.name, path=dest.parent, downloader=downloader)
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else "error"
        reason = err.response.reason if err.response is not None else err
        raise DownloadFailed(url, f"HTTP {status} {reason}") from None
    except (requests.RequestException, *ftplib.all_errors) as err:  # connection, DNS, timeouts
        if isinstance(err, OSError) and err.filename is not None:  # the disk, not the network
            raise DownloadFailed(url, f"could not write {err.filename} ({err.strerror})") from None
        raise DownloadFailed(url, f"network error ({_innermost(err)})") from None
    except ValueError as err:  # pooch: the file's SHA-256 is not known_hash
        raise DownloadFailed(url, " ".join(str(err).split())) from None
    return dest


def _copy_local(url: str, dest: Path, known_hash: str | None) -> Path:
    """``file://`` URL: copy the file into ``dest`` by rename, checked against ``known_hash``."""
    source = Path(url2pathname(urlparse(url).path))
    if not source.is_file():
        raise DownloadFailed(url, f"no such file {source}")
    if known_hash is not None:
        digest = pooch.file_hash(str(source), alg=known_hash.split(":", 1)[0] if ":" in known_hash else "sha256")
        if digest != known_hash.split(":", 1)[-1]:
            raise DownloadFailed(url, f"SHA-256 {digest} of {source} is not the expected {known_hash}")
    try:
        with atomic_file(dest, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
    except OSError as err:
        raise DownloadFailed(url, f"could not copy to {dest} ({err.strerror or err})") from None
    return dest


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch's own log lines (the target path, the file's SHA-256) off for one call."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _innermost(err: BaseException) -> str:
    """The root cause of a ``requests`` error in one line: ``requests`` wraps urllib3's error,
    which wraps the socket's (``Failed to resolve 'host' ([Errno -2] Name or service not known)``)."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    while isinstance(getattr(err, "reason", None), BaseException):
        err = err.reason  # type: ignore[assignment]
    text = re.sub(r"^(?:<[^>]*>|\w+\([^)]*\)): ", "", " ".join(str(err).split()))
    return text or type(err).__name__


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
