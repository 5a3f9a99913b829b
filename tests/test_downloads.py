"""A failed CDC index download is remembered for a day; the offline switch skips downloads in one line."""

from types import SimpleNamespace

import pytest

from ccl.data.sources.common import DownloadError, download
from ccl.icd.download import resolve_index_files
from ccl.utils.downloads import FailedDownload


@pytest.fixture
def network(web, monkeypatch):
    """A web that fails like a machine without network (conftest's FakeWeb); the URLs tried."""
    monkeypatch.delenv("CCL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return web.calls


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


def test_fetch_url_checks_the_hash_and_words_failures_in_one_line(tmp_path, web):
    import hashlib

    import requests

    from ccl.utils.downloads import DownloadFailed, fetch_url

    web.serve = lambda url: b"payload"
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    assert fetch_url("https://x.org/a.bin", tmp_path / "a.bin", 5, good).read_bytes() == b"payload"
    with pytest.raises(DownloadFailed, match=r"^https://x.org/b.bin: .*hash") as err:
        fetch_url("https://x.org/b.bin", tmp_path / "b.bin", 5, "sha256:" + "0" * 64)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no file under a bad hash

    def missing(url):
        raise requests.HTTPError(response=SimpleNamespace(status_code=404, reason="Not Found"))

    web.serve = missing
    with pytest.raises(DownloadFailed) as err:
        fetch_url("https://x.org/c.bin", tmp_path / "c.bin", 5)
    assert err.value.reason == "HTTP 404 Not Found" and isinstance(err.value, OSError)
    web.serve = web.refuse
    with pytest.raises(DownloadFailed) as err:
        fetch_url("https://x.org/c.bin", tmp_path / "c.bin", 5)
    assert err.value.reason == ("network error (Failed to resolve 'host' "
                                "([Errno -3] Temporary failure in name resolution))")


def test_fetch_url_copies_a_file_url_and_refuses_other_schemes(tmp_path):
    """A mirror on a shared disk (file://) is copied and hash-checked, as pooch checks a
    download; a scheme no downloader handles is one clear line, not a network error."""
    import hashlib

    from ccl.utils.downloads import DownloadFailed, fetch_url

    mirror = tmp_path / "mirror" / "icd10cm-index.zip"
    mirror.parent.mkdir()
    mirror.write_bytes(b"zip bytes")
    digest = hashlib.sha256(b"zip bytes").hexdigest()
    out = fetch_url(mirror.as_uri(), tmp_path / "cache" / "index.zip", 5, known_hash=f"sha256:{digest}")
    assert out.read_bytes() == b"zip bytes"
    with pytest.raises(DownloadFailed, match="is not the expected"):
        fetch_url(mirror.as_uri(), tmp_path / "cache" / "other.zip", 5, known_hash="sha256:" + "0" * 64)
    with pytest.raises(DownloadFailed, match="no such file"):
        fetch_url((tmp_path / "missing.zip").as_uri(), tmp_path / "cache" / "m.zip", 5)
    with pytest.raises(DownloadFailed, match="scheme 's3' not supported"):
        fetch_url("s3://bucket/index.zip", tmp_path / "cache" / "s3.zip", 5)
    assert not (tmp_path / "cache" / "other.zip").exists() and not (tmp_path / "cache" / "m.zip").exists()
