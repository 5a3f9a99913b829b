"""Obtain the ICD-10-CM Alphabetic Index files: configured paths, a cache, or the CDC zip.

The CDC publishes each fiscal year's index, External Cause index, Table of
Drugs and Chemicals and Neoplasm Table as XML inside one "table and index" zip
(:data:`CDC_TABLE_INDEX_URL`). Without network access the caller gets
:class:`IndexUnavailable` with instructions, or (through
:func:`resolve_index_files`) an empty :class:`IndexFiles` marked ``fallback``.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ccl.utils.downloads import DownloadFailed, FailedDownload, fetch_url, skip_reason

CDC_TABLE_INDEX_URL = (
    "https://ftp.cdc.gov/pub/Health_Statistics/NCHS/Publications/ICD10CM/"
    "{year}/icd10cm-table-index-{year}.zip"
)
INDEX_KINDS = ("index", "eindex", "drug", "neoplasm")
CONFIG_KEYS = {kind: f"{kind}_xml" for kind in INDEX_KINDS}  # icd.index_xml, ...
INDEX_ROOT = "ICD10CM.index"  # the root element of all four files, every year
# How far into a file the kind must be known: the <title> or <indexHeading> comes first.
_SNIFF_ELEMENTS = 64
FALLBACK_MESSAGE = (
    "No Alphabetic Index available: gold pairs come from Tabular List terms only "
    "(code descriptions and inclusion terms)."
)


class IndexUnavailable(RuntimeError):
    """The index files could not be obtained; the message says what to do instead."""


@dataclass(frozen=True)
class IndexFiles:
    """Index XML paths by kind (``index``, ``eindex``, ``drug``, ``neoplasm``)."""

    paths: dict[str, Path] = field(default_factory=dict)
    origin: str = "none"  # config | cache | download | none
    fallback: bool = False
    message: str = ""


def zip_url(year: int, url: str | None = None) -> str:
    """The CDC "table and index" zip URL for ``year``, or ``url`` when given."""
    return url or CDC_TABLE_INDEX_URL.format(year=year)


def _expected_names(year: int) -> str:
    return ", ".join(f"icd10cm-{kind}-{year}.xml" for kind in INDEX_KINDS)


def _help(year: int, url: str, reason: str) -> str:
    keys = ", ".join(f"icd.{key}" for key in CONFIG_KEYS.values())
    return (
        f"Cannot get the ICD-10-CM Alphabetic Index for {year} from {url}: {reason}. "
        f"The zip should hold the index XML files ({_expected_names(year)}, or any names: "
        f"they are recognised by their <{INDEX_ROOT}> content). Download and unzip it on a machine with network "
        f"access and point the config keys {keys} at the extracted files "
        f"(or set icd.download=false to use Tabular List terms only)."
    )


def sniff_index_kind(source: str | Path | IO[bytes]) -> tuple[str, str] | None:
    """``(kind, version)`` of a CDC index XML file, from its content, or ``None``.

    The kind comes from the root element and the first elements under it, as
    :func:`ccl.icd.index.parse_index_xml` decides it: root ``<ICD10CM.index>``; an
    ``<indexHeading>`` whose first column says "Neoplasm" (``neoplasm``) or
    "Substance"/"Drug" (``drug``); else a ``<title>`` naming the External Cause
    index (``eindex``); else ``index``. File names play no part, so FY2025's
    ``icd-10-cm-eindex-2025.xml``, ``icd10cm-eindex-April-1-2026-XML.xml`` and a
    renamed copy are all found. Not XML, or another root (a Tabular List, an
    addenda file): ``None``. Reads only the first elements of the file.
    """
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as fh:
                return sniff_index_kind(fh)
        except OSError:
            return None
    kind, version, heading, seen = None, "", [], 0
    try:
        for event, elem in ET.iterparse(source, events=("start", "end")):
            if event == "start":
                seen += 1
                if seen == 1 and elem.tag != INDEX_ROOT:
                    return None
                if elem.tag in ("letter", "mainTerm") or seen > _SNIFF_ELEMENTS:
                    break
                continue
            text = " ".join("".join(elem.itertext()).split())
            if elem.tag == "version":
                version = text
            elif elem.tag == "head" and elem.get("col") == "1":
                heading.append(text.lower())
            elif elem.tag == "indexHeading":
                first = " ".join(heading)
                kind = "neoplasm" if "neoplasm" in first else "drug" if (
                    "substance" in first or "drug" in first) else None
                if kind is None:
                    return None
                break
            elif elem.tag == "title" and kind is None:
                kind = "eindex" if "external cause" in text.lower() else "index"
    except ET.ParseError:
        return None
    if seen == 0:
        return None
    return kind or "index", version


def _pick(found: dict[str, list[tuple[str, str, Any]]]) -> dict[str, Any]:
    """Per kind, the file of the latest version (then the first name) among those found."""
    return {kind: max(items, key=lambda t: (t[0], [-ord(c) for c in t[1]]))[2]
            for kind, items in found.items()}


def find_index_files(folder: Path) -> dict[str, Path]:
    """Index XML files in ``folder`` by kind, recognised by their content (:func:`sniff_index_kind`).

    Several files of one kind (two years): the latest ``<version>``. Files whose
    name says ``addenda`` are skipped (they list changes, not the index).
    """
    found: dict[str, list[tuple[str, str, Any]]] = {}
    if not folder.is_dir():
        return {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() != ".xml" or "addenda" in path.name.lower():
            continue
        sniffed = sniff_index_kind(path)
        if sniffed is not None:
            found.setdefault(sniffed[0], []).append((sniffed[1], path.name, path))
    return _pick(found)


def extract_index(zip_path: Path, dest_dir: Path) -> dict[str, Path]:
    """Extract the four index XML files of a CDC zip into ``dest_dir``; return them by kind.

    Members are recognised by content (:func:`sniff_index_kind`), whatever the year names them.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            found: dict[str, list[tuple[str, str, Any]]] = {}
            for info in archive.infolist():
                name = Path(info.filename).name  # flattens folders; no path escapes dest_dir
                if info.is_dir() or not name.lower().endswith(".xml") or "addenda" in name.lower():
                    continue
                with archive.open(info) as member:
                    sniffed = sniff_index_kind(member)
                if sniffed is not None:
                    found.setdefault(sniffed[0], []).append((sniffed[1], name, info))
            members = _pick(found)
            missing = [kind for kind in INDEX_KINDS if kind not in members]
            if missing:
                names = ", ".join(Path(i.filename).name for i in archive.infolist()) or "nothing"
                raise IndexUnavailable(
                    f"{zip_path}: no {'/'.join(missing)} XML file in the zip (no member with root "
                    f"<{INDEX_ROOT}> of that kind; it holds: {names})"
                )
            out: dict[str, Path] = {}
            for kind, info in members.items():
                target = dest_dir / Path(info.filename).name
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                out[kind] = target
    except zipfile.BadZipFile as err:
        raise IndexUnavailable(f"{zip_path}: not a valid zip file ({err})") from None
    return {kind: out[kind] for kind in INDEX_KINDS}


def download_index(
    year: int, dest_dir: Path, timeout: float = 30, url: str | None = None
) -> dict[str, Path]:
    """Download the CDC "table and index" zip for ``year`` and extract the index XML files.

    The zip is kept in ``dest_dir`` so a second call does not download again.
    Raises :class:`IndexUnavailable` (naming the URL, the expected files and the
    config keys to set instead) when offline, on an HTTP error or a bad zip.
    """
    dest_dir = Path(dest_dir)
    source = zip_url(year, url)
    zip_path = dest_dir / Path(source.split("?")[0]).name
    if not zip_path.is_file():
        try:
            fetch_url(source, zip_path, timeout)
        except DownloadFailed as err:  # an HTTP status, a network error
            raise IndexUnavailable(_help(year, source, err.reason)) from None
    try:
        return extract_index(zip_path, dest_dir)
    except IndexUnavailable as err:
        raise IndexUnavailable(_help(year, source, str(err))) from None


def resolve_index_files(icd_cfg: Any, cache_dir: str | Path, timeout: float = 10) -> IndexFiles:
    """Index files for ``icd_cfg`` (an ``ICDConfig`` or its DictConfig).

    Order: the configured ``icd.*_xml`` paths (a missing file is an error);
    else files already cached under ``cache_dir/icd10cm-index/<year>``; else a
    download when ``icd.download`` is true; else an empty set with
    ``fallback=True`` and a plain-language ``message``.
    """
    configured: dict[str, Path] = {}
    for kind, key in CONFIG_KEYS.items():
        value = getattr(icd_cfg, key, None)
        if value:
            path = Path(str(value)).expanduser()
            if not path.is_file():
                raise IndexUnavailable(f"icd.{key} points to {path}, which is not a file")
            configured[kind] = path
    if configured:
        missing = [CONFIG_KEYS[k] for k in INDEX_KINDS if k not in configured]
        note = f"icd.{', icd.'.join(missing)} not set: those files are not used." if missing else ""
        return IndexFiles(configured, "config", False, note)
    year = int(getattr(icd_cfg, "year", 2026))
    folder = Path(cache_dir) / "icd10cm-index" / str(year)
    cached = find_index_files(folder)
    if all(kind in cached for kind in INDEX_KINDS):
        return IndexFiles(cached, "cache")
    if getattr(icd_cfg, "download", False):
        # One line instead of a network error: offline switch, or a failure remembered for 24 h.
        url = zip_url(year)
        skip = skip_reason(Path(cache_dir), url)
        if skip:
            return IndexFiles({}, "none", True, f"{FALLBACK_MESSAGE} Download skipped: {skip}; "
                              "icd.download=false silences this.")
        try:
            files = download_index(year, folder, timeout=timeout)
        except IndexUnavailable as err:
            FailedDownload(Path(cache_dir), url).remember(str(err).split(": ", 1)[-1])
            return IndexFiles({}, "none", True, f"{FALLBACK_MESSAGE} {err} (not retried for 24 h)")
        FailedDownload(Path(cache_dir), url).forget()
        return IndexFiles(files, "download")
    return IndexFiles({}, "none", True, f"{FALLBACK_MESSAGE} (icd.download is false)")
