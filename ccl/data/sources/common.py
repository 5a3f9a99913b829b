"""Helpers every document source shares: code mapping, span trimming, splits, files, downloads.

**Code mapping rule** (:class:`CodeMapper`). Datasets are coded in older
ICD-10-CM years (MDACE: FY2020-ish, MIMIC-IV: FY2015-2022, CodiEsp: CIE-10-ES
2018); the Tabular List of ``icd.year`` has since split some codes. A code is
kept as is when it is billable in the loaded Tabular List. Otherwise:

1. the *anchor* is the code itself when the list has it (a category or
   subcategory that now needs more characters), else the code without its
   trailing ``X`` placeholders and 7th character (``W19.XXX`` -> ``W19``), else
   its longest existing prefix of at least 3 characters (the reason then starts
   with ``ancestor_``);
2. among the anchor's billable descendants (those with the same 7th character
   when the code had one; Tabular order otherwise puts ``A``, initial
   encounter, first), the replacement is, in this order of preference:
   the only one (``unique_descendant``); the first whose description (less
   any 7th-character meaning) equals the anchor's (``same_description_descendant``:
   ``I24.8`` -> ``I24.89``, ``T14.90`` -> ``T14.90XA``, ``E11.359`` -> ``E11.3599``
   whose 7th character means "unspecified eye"); the one whose description adds the word
   "unspecified" most often (``unspecified_descendant``: ``E87.2`` -> ``E87.20``
   *Acidosis, unspecified*), then "other" (``other_descendant``: ``K83.0`` ->
   ``K83.09`` *Other cholangitis*; ties: shortest code, then Tabular order);
   else the first in Tabular order (``first_descendant``);
3. a code with no anchor is dropped (``not_in_tabular``); a string that is not
   code-shaped is dropped (``malformed``).

Every decision is counted per occurrence and listed per distinct code in
:meth:`CodeMapper.report`, so a run's manifest says exactly what changed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import string
import tempfile
import unicodedata
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.data.records import Document, RecordError
from ccl.icd.codes import canonical_code, is_well_formed
from ccl.icd.tabular import TabularList
from ccl.utils.downloads import offline_reason

DOWNLOAD_TIMEOUT_S = 60
_UNSPECIFIED = re.compile(r"\bunspecified\b")


class MissingDataError(FileNotFoundError):
    """A data file or folder is missing; the message names it and says how to get it."""


class DownloadError(RuntimeError):
    """A public file could not be fetched; the message names the URL and the offline fix."""


def option(cfg: Any, name: str, default: Any) -> Any:
    """``cfg.name`` when the config declares it, else ``default``.

    Lets a loader read an optional knob (e.g. ``language``) from configs that
    predate it, whether ``cfg`` is a dataclass or an OmegaConf node.
    """
    value = getattr(cfg, name, default)
    return default if value is None else value


# -- ICD-10-CM code mapping ------------------------------------------------------


def _anchor(code: str, tab: TabularList) -> tuple[str | None, bool]:
    """The Tabular node a non-billable code maps from, and whether it is a shortened prefix."""
    if code in tab:
        return code, False
    bare = code.replace(".", "")
    stem = bare[:6].rstrip("X") if len(bare) == 7 else bare.rstrip("X")
    if canonical_code(stem) in tab:
        return canonical_code(stem), False
    for n in range(len(stem) - 1, 2, -1):
        if canonical_code(stem[:n]) in tab:
            return canonical_code(stem[:n]), True
    return None, False


def _billable_descendants(anchor: str, seventh: str | None, tab: TabularList) -> list[str]:
    start, end = tab.subtree_span(anchor)
    found = [tab.code_at(i) for i in range(start, end)]
    found = [c for c in found if tab.is_billable(c)]
    if seventh:
        same = [c for c in found if len(c.replace(".", "")) == 7 and c.endswith(seventh)]
        found = same or found
    return found


def map_code(code: str, tab: TabularList) -> tuple[str | None, str]:
    """Map ``code`` to a billable code of ``tab``: ``(new_code or None, reason)`` (see module doc)."""
    canon = canonical_code(code)
    if not is_well_formed(canon):
        return None, "malformed"
    if tab.is_billable(canon):
        return canon, "valid"
    anchor, shortened = _anchor(canon, tab)
    if anchor is None:
        return None, "not_in_tabular"
    bare = canon.replace(".", "")
    seventh = bare[6] if len(bare) == 7 else None
    candidates = _billable_descendants(anchor, seventh, tab)
    if not candidates:
        return None, "no_billable_descendant"
    prefix = "ancestor_" if shortened else ""
    if len(candidates) == 1:
        return candidates[0], prefix + "unique_descendant"
    anchor_desc = tab.description(anchor).lower()
    same = [c for c in candidates if _base_description(c, tab) == anchor_desc]
    if same:
        # These differ by 7th character only: prefer its "unspecified" value, else Tabular order.
        flagged = [bool(_UNSPECIFIED.search(tab.description(c).lower())) for c in same]
        best = same[flagged.index(True)] if any(flagged) else same[0]
        return best, prefix + "same_description_descendant"
    for word in ("unspecified", "other"):
        best = _most_added(word, anchor_desc, candidates, tab)
        if best is not None:
            return best, f"{prefix}{word}_descendant"
    return candidates[0], prefix + "first_descendant"


def _base_description(code: str, tab: TabularList) -> str:
    """Lower-case description without the 7th-character meaning (an extended code's parent's)."""
    info = tab.get(code)
    if info is not None and info.kind == "extended" and info.parent:
        return tab.description(info.parent).lower()
    return tab.description(code).lower()


def _most_added(word: str, anchor_desc: str, candidates: list[str], tab: TabularList) -> str | None:
    """The candidate whose description adds ``word`` most often to the anchor's, shortest first."""
    pattern = re.compile(rf"\b{word}\b")
    base = len(pattern.findall(anchor_desc))
    scored = [
        (len(pattern.findall(_base_description(c, tab))) - base, -len(c), -i, c)
        for i, c in enumerate(candidates)
    ]
    best = max(scored)
    return best[3] if best[0] > 0 else None


class CodeMapper:
    """Maps codes with :func:`map_code`, memoised, counting every occurrence by reason."""

    def __init__(self, tab: TabularList) -> None:
        self.tab = tab
        self._memo: dict[str, tuple[str | None, str]] = {}
        self.counts: Counter[str] = Counter()
        self.changed: dict[str, str] = {}
        self.dropped: dict[str, str] = {}

    def __call__(self, code: str, count: bool = True) -> str | None:
        """The mapped code (None: dropped); ``count=False`` for a second look at a counted code."""
        key = code.strip()
        if key not in self._memo:
            self._memo[key] = map_code(key, self.tab)
        new, reason = self._memo[key]
        if not count:
            return new
        self.counts[reason] += 1
        if new is None:
            self.dropped[key] = reason
        elif reason != "valid":
            self.changed[canonical_code(key)] = new
        return new

    def report(self) -> dict[str, Any]:
        """Occurrence counts (valid, mapped by reason, dropped by reason) and per-code lists."""
        mapped = {r: n for r, n in sorted(self.counts.items()) if r != "valid" and r in _MAPPED}
        dropped = {
            r: n for r, n in sorted(self.counts.items()) if r not in _MAPPED and r != "valid"
        }
        return {
            "tabular_year": self.tab.year,
            "valid": self.counts.get("valid", 0),
            "mapped": mapped,
            "dropped": dropped,
            "mapped_codes": dict(sorted(self.changed.items())),
            "dropped_codes": dict(sorted(self.dropped.items())),
        }


_MAPPED = {
    f"{p}{r}_descendant"
    for p in ("", "ancestor_")
    for r in ("unique", "same_description", "unspecified", "other", "first")
}


# -- evidence spans --------------------------------------------------------------

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_KEEP_AT_END = "%+"  # "20%", "HER2+": the sign is part of the finding


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge whitespace and punctuation.

    A bracket stays when its partner is inside the span (``"(HTN)"`` is kept
    whole, ``"(IMC > 40"`` loses its ``(``); ``%`` and ``+`` stay at the end.
    Returns ``(start, start)`` when nothing is left.
    """
    while start < end:
        ch = text[start]
        if ch.isspace() or (
            _is_punct(ch) and not (ch in _OPENERS and _OPENERS[ch] in text[start + 1 : end])
        ):
            start += 1
        else:
            break
    while end > start:
        ch = text[end - 1]
        keep = ch in _KEEP_AT_END or (ch in _CLOSERS and _CLOSERS[ch] in text[start : end - 1])
        if ch.isspace() or (_is_punct(ch) and not keep):
            end -= 1
        else:
            break
    return start, end


# -- splits ----------------------------------------------------------------------


def carve_validation(
    docs: Sequence[Document], n_val: int, seed: int, salt: str
) -> tuple[list[Document], list[Document]]:
    """Split ``docs`` into (train, val) with ``n_val`` seeded picks; input order is kept in both."""
    if not 0 <= n_val < len(docs):
        raise ValueError(f"docs.n_val={n_val}: need 0 <= n_val < {len(docs)} training documents")
    ids = sorted(d.id for d in docs)
    chosen = set(random.Random(f"ccl-{salt}:{seed}").sample(ids, n_val))
    return [d for d in docs if d.id not in chosen], [d for d in docs if d.id in chosen]


def with_split(docs: Sequence[Document], split: str) -> list[Document]:
    for d in docs:
        d.split = split
    return list(docs)


# -- files -----------------------------------------------------------------------


def require(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a Path if it exists, else :class:`MissingDataError` naming it and the fix."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingDataError(f"{p}: {what} not found. {fix}")
    return p


def download(url: str, dest: Path, what: str, config_key: str) -> Path:
    """Fetch ``url`` to ``dest`` (atomically; kept if already there).

    Offline or failing: :class:`DownloadError` naming the URL, the file and the
    config key that points at a copy obtained by hand. ``CCL_OFFLINE=1`` skips the
    attempt (:mod:`ccl.utils.downloads`); a failure stops the run, so it is not remembered.
    """
    if dest.exists():
        return dest
    offline = offline_reason()  # CCL_OFFLINE=1 / HF_HUB_OFFLINE=1: no attempt, one line
    if offline:
        raise DownloadError(f"{what} not downloaded from {url} ({offline}). Download it elsewhere "
                            f"and set {config_key} to its local path.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        ):
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {what} from {url} ({err}). If this machine is offline, "
            f"download it elsewhere and set {config_key} to its local path."
        ) from err
    return dest


def extract_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` (refusing members that would land outside it)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for name in zf.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise RecordError(f"{archive}: member {name!r} would unpack outside {dest}")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise RecordError(f"{archive}: not a zip archive ({err}); delete it and retry") from err
    return dest
