"""A failed CDC index download is remembered for a day; the offline switch skips downloads in one line."""

import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from ccl.data.sources.common import DownloadError, download
from ccl.icd.download import resolve_index_files
from ccl.utils.downloads import FailedDownload


@pytest.fixture
def network(monkeypatch):
    """urlopen that fails like a machine without network, counting its calls."""
    calls = []

    def refuse(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv("CCL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_failed_index_download_is_remembered_and_not_retried(tmp_path, network):
    icd = SimpleNamespace(year=2026, download=True)
    first = resolve_index_files(icd, tmp_path)
    assert first.fallback and len(network) == 1 and "name resolution" in first.message
    second = resolve_index_files(icd, tmp_path)
    assert len(network) == 1, "a failure within 24 h is not retried"
    assert second.fallback and "failed" in second.message and "not retried for 24 h" in second.message
    assert "\n" not in second.message and len(second.message) < 600
    FailedDownload(tmp_path, next(iter(network))).forget()  # deleting the marker retries
    resolve_index_files(icd, tmp_path)
    assert len(network) == 2


def test_offline_switch_skips_every_download(tmp_path, network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = resolve_index_files(SimpleNamespace(year=2026, download=True), tmp_path)
    assert files.fallback and "HF_HUB_OFFLINE=1" in files.message
    monkeypatch.setenv("CCL_OFFLINE", "1")
    with pytest.raises(DownloadError, match="CCL_OFFLINE=1.*docs.path"):
        download("https://example.org/x.json", tmp_path / "x.json", "the file x", "docs.path")
    assert network == []
