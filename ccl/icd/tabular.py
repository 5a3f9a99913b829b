"""The ICD-10-CM Tabular List, parsed from a CDC tabular XML file.

Codes are keyed in canonical dotted form (``E11.9``). The main map holds
categories, subcategories and the 7th-character *extended* codes generated from
``sevenChrDef`` (inherited from the nearest ancestor that defines one; the code
is padded with ``X`` to six characters first: ``S02.0`` -> ``S02.0XXA``).
Chapters and blocks are kept out of that map, in their own maps, because a
block id can equal a category code (the block ``B10`` holds the category
``B10``); reach them through :meth:`TabularList.chapter`,
:meth:`TabularList.block`, :meth:`TabularList.chapters`, :meth:`TabularList.blocks_in`
and :meth:`TabularList.categories_in`.

Notes are kept per XML element: an extended code has no inclusion terms or
excludes notes of its own (ask its parent). ``note`` children of
``sevenChrDef`` are ignored.

The default source is the April 2026 list shipped in the ``simple-icd-10-cm``
package. Parsed lists are cached as a pickle keyed by the file's content hash
and :data:`PARSER_VERSION`, and memoised in-process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pickle
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ccl.icd.codes import canonical_code
from ccl.utils.atomic import pickle_intact, write_pickle_atomic
from ccl.utils.gc_pause import gc_paused

# Bump when parsing changes, so stale cache pickles are not reused.
PARSER_VERSION = 2  # 2: codeFirst, useAdditionalCode and codeAlso notes kept
DEFAULT_XML_NAME = "icd10c-tabular-April-1-2026.xml"
# A whole Tabular List (any year since FY2016): see TabularList.check.
MIN_CHAPTERS = 21
MIN_BILLABLE = 60_000
KINDS = ("chapter", "block", "category", "subcategory", "extended")
# Looser than ccl.icd.codes.is_well_formed: 2026 added categories like QA0 (letter second).
_CODE_NAME = re.compile(r"^[A-Z][0-9A-Z]{2}(\.[0-9A-Z]{1,4})?$")
# 7th-character rules the XML states only in prose (a <notes> under the category):
# category -> (6th characters, 7th characters that do NOT apply to them).
# S06: "7th characters D and S do not apply to codes ... with 6th character 7 or 8".
_SEVENTH_EXCLUSIONS = {"S06": ("78", "DS")}


class TabularError(ValueError):
    """The tabular XML file is malformed; the message names the file."""


@dataclass(frozen=True)
class CodeInfo:
    """One code of the Tabular List (a category, subcategory or extended code)."""

    code: str
    description: str
    parent: str | None
    children: tuple[str, ...]
    billable: bool
    inclusion_terms: tuple[str, ...]
    excludes1: tuple[str, ...]
    excludes2: tuple[str, ...]
    chapter: str
    block: str
    kind: str
    # Instructional notes of the element itself (ask the ancestors too: they apply below).
    code_first: tuple[str, ...] = ()
    use_additional_code: tuple[str, ...] = ()
    code_also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grouping:
    """A chapter (id ``"4"``) or a block (id ``"E08-E13"``) and what it holds."""

    id: str
    title: str
    kind: str  # chapter | block
    chapter: str
    children: tuple[str, ...]  # block ids of a chapter, category codes of a block


class TabularList:
    """Read-only view of one Tabular List; every lookup is a dict lookup.

    Query methods take any spelling of a code (``e119``, ``E11.9``) and return an
    empty value (``""``, ``()``, ``[]``, ``None``, ``False``) for unknown codes.
    """

    def __init__(
        self,
        year: str,
        source: str,
        sha256: str,
        codes: dict[str, CodeInfo],
        chapters: dict[str, Grouping],
        blocks: dict[str, Grouping],
    ) -> None:
        self.year = year
        self.source = source
        self._sha256 = sha256
        self._codes = codes
        self._chapters = chapters
        self._blocks = blocks
        self._sorted = sorted(codes)
        self._pos = {c: i for i, c in enumerate(self._sorted)}
        self._end = _subtree_ends(self._sorted, codes)
        self._billable = [c for c in self._sorted if codes[c].billable]

    # -- membership and single-code queries ---------------------------------

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and self._key(code) in self._codes

    def __len__(self) -> int:
        return len(self._codes)

    def _key(self, code: str) -> str:
        return code if code in self._codes else canonical_code(code)

    def get(self, code: str) -> CodeInfo | None:
        return self._codes.get(self._key(code))

    def description(self, code: str) -> str:
        info = self.get(code)
        return info.description if info else ""

    def is_billable(self, code: str) -> bool:
        info = self.get(code)
        return bool(info and info.billable)

    def needs_more_characters(self, code: str) -> bool:
        """True when ``code`` exists but is not billable (more characters are needed)."""
        info = self.get(code)
        return bool(info and not info.billable)

    def parent(self, code: str) -> str | None:
        info = self.get(code)
        return info.parent if info else None

    def children(self, code: str) -> tuple[str, ...]:
        info = self.get(code)
        return info.children if info else ()

    def ancestors(self, code: str) -> list[str]:
        """Ancestor codes, nearest first, ending at the category (no block or chapter)."""
        out: list[str] = []
        parent = self.parent(code)
        while parent is not None:
            out.append(parent)
            parent = self._codes[parent].parent
        return out

    def chapter(self, code: str) -> str:
        info = self.get(code)
        return info.chapter if info else ""

    def block(self, code: str) -> str:
        info = self.get(code)
        return info.block if info else ""

    def inclusion_terms(self, code: str) -> tuple[str, ...]:
        info = self.get(code)
        return info.inclusion_terms if info else ()

    # -- whole-list views ----------------------------------------------------

    def billable_codes(self) -> list[str]:
        """Billable (leaf) codes, sorted."""
        return list(self._billable)

    def all_codes(self) -> list[str]:
        """Categories, subcategories and extended codes (no chapters or blocks), sorted."""
        return list(self._sorted)

    def check(self, min_chapters: int = MIN_CHAPTERS, min_billable: int = MIN_BILLABLE) -> dict[str, object]:
        """Is this a whole Tabular List? ``{"chapters", "billable", "complete", "problems"}``.

        Every fiscal year since FY2016 has 21 chapters (22 since FY2021, with
        chapter 22 "Codes for special purposes") and about 69,800 (FY2016) to
        74,700 (FY2026) billable codes; a file holding one chapter or a subset
        has fewer. ``problems`` says what is short, naming the file, for the
        manifest and the console; loaders stop on the labels such a list loses
        (``docs.max_dropped_label_share``).
        """
        billable = len(self._billable)
        problems = []
        if len(self._chapters) < min_chapters:
            problems.append(f"{len(self._chapters)} chapters (a whole Tabular List has at least {min_chapters})")
        if billable < min_billable:
            problems.append(f"{billable:,} billable codes (a whole Tabular List has at least {min_billable:,})")
        return {"chapters": len(self._chapters), "billable": billable, "complete": not problems,
                "problems": [f"{self.source} (Tabular List {self.year}): {p}" for p in problems]}

    def content_hash(self) -> str:
        """First 16 hex characters of the SHA-256 of the source file's bytes."""
        return self._sha256[:16]

    # -- chapters and blocks -------------------------------------------------

    def chapters(self) -> list[str]:
        """Chapter ids (``"1"`` .. ``"22"``) in Tabular order."""
        return list(self._chapters)

    def chapter_title(self, chapter: str) -> str:
        group = self._chapters.get(chapter)
        return group.title if group else ""

    def block_title(self, block: str) -> str:
        group = self._blocks.get(block)
        return group.title if group else ""

    def blocks_in(self, chapter: str) -> tuple[str, ...]:
        group = self._chapters.get(chapter)
        return group.children if group else ()

    def categories_in(self, block: str) -> tuple[str, ...]:
        group = self._blocks.get(block)
        return group.children if group else ()

    # -- code order (used by ccl.icd.nearest) --------------------------------

    def position(self, code: str) -> int:
        """Index of ``code`` in :meth:`all_codes`; KeyError if unknown.

        Sorted order is a pre-order walk of every category's tree, because a
        parent code is always a prefix of its children.
        """
        key = self._key(code)
        if key not in self._pos:
            raise KeyError(f"unknown ICD-10-CM code {code!r} (Tabular List {self.year})")
        return self._pos[key]

    def code_at(self, position: int) -> str:
        return self._sorted[position]

    def subtree_span(self, code: str) -> tuple[int, int]:
        """Positions ``[start, end)`` of ``code`` and all its descendants."""
        start = self.position(code)
        return start, self._end[start]


def _subtree_ends(ordered: list[str], codes: dict[str, CodeInfo]) -> list[int]:
    """For each position, the end (exclusive) of that code's subtree."""
    ends = [0] * len(ordered)
    pos = {c: i for i, c in enumerate(ordered)}
    for i in range(len(ordered) - 1, -1, -1):
        kids = codes[ordered[i]].children
        ends[i] = max((ends[pos[k]] for k in kids), default=i + 1)
    return ends


# -- parsing -----------------------------------------------------------------


def _text(elem: ET.Element | None) -> str:
    return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def _notes(elem: ET.Element, tag: str) -> tuple[str, ...]:
    return tuple(_text(n) for holder in elem.findall(tag) for n in holder.findall("note"))


def _extended_code(code: str, char: str) -> str:
    bare = code.replace(".", "")
    return canonical_code(bare.ljust(6, "X") + char)


def _seventh_applies(code: str, char: str) -> bool:
    rule = _SEVENTH_EXCLUSIONS.get(code[:3])
    if rule is None:
        return True
    sixth = code.replace(".", "").ljust(6, "X")[5]
    return not (sixth in rule[0] and char in rule[1])


class _Builder:
    """Walks the parsed tree once and fills the code, chapter and block maps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, CodeInfo] = {}
        self.chapters: dict[str, Grouping] = {}
        self.blocks: dict[str, Grouping] = {}

    def fail(self, problem: str) -> TabularError:
        return TabularError(f"{self.path}: {problem}")

    def build(self, root: ET.Element) -> None:
        if root.tag != "ICD10CM.tabular":
            raise self.fail(f"root element is <{root.tag}>, expected <ICD10CM.tabular>")
        for chap in root.iter("chapter"):
            number = _text(chap.find("name"))
            if not number:
                raise self.fail("a <chapter> has no <name>")
            block_ids = []
            for section in chap.findall("section"):
                block = section.get("id")
                if not block:
                    raise self.fail(f"a <section> in chapter {number} has no id")
                cats = tuple(
                    self.diag(d, None, number, block, None) for d in section.findall("diag")
                )
                self.blocks[block] = Grouping(
                    block, _text(section.find("desc")), "block", number, cats
                )
                block_ids.append(block)
            self.chapters[number] = Grouping(
                number, _text(chap.find("desc")), "chapter", number, tuple(block_ids)
            )
        if not self.codes:
            raise self.fail("no <chapter>/<section>/<diag> codes found")

    def diag(
        self,
        elem: ET.Element,
        parent: str | None,
        chapter: str,
        block: str,
        seventh: tuple[tuple[str, str], ...] | None,
    ) -> str:
        code = canonical_code(_text(elem.find("name")))
        if not _CODE_NAME.match(code):
            raise self.fail(f"<diag> with malformed code name {code!r} under {parent or block}")
        if code in self.codes:
            raise self.fail(f"code {code} appears twice")
        own = elem.find("sevenChrDef")
        if own is not None:
            seventh = tuple((e.get("char", ""), _text(e)) for e in own.findall("extension"))
        desc = _text(elem.find("desc"))
        kids = [self.diag(d, code, chapter, block, seventh) for d in elem.findall("diag")]
        if not kids and seventh:
            kids = [
                self.extended(code, desc, c, m, chapter, block)
                for c, m in seventh
                if _seventh_applies(code, c)
            ]
        kind = "category" if parent is None else "subcategory"
        self.codes[code] = CodeInfo(
            code, desc, parent, tuple(kids), not kids,
            _notes(elem, "inclusionTerm"), _notes(elem, "excludes1"), _notes(elem, "excludes2"),
            chapter, block, kind,
            _notes(elem, "codeFirst"), _notes(elem, "useAdditionalCode"), _notes(elem, "codeAlso"),
        )
        return code

    def extended(
        self, parent: str, desc: str, char: str, meaning: str, chapter: str, block: str
    ) -> str:
        code = _extended_code(parent, char)
        if code in self.codes:
            raise self.fail(f"extended code {code} appears twice")
        self.codes[code] = CodeInfo(
            code, f"{desc}, {meaning}", parent, (), True, (), (), (), chapter, block, "extended"
        )
        return code


def default_xml_path() -> Path:
    """The April 2026 Tabular List XML inside the installed simple-icd-10-cm package."""
    # find_spec locates the package without importing it (its import parses for ~1.5 s).
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "simple-icd-10-cm is not installed; pass the path of a CDC tabular XML file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / DEFAULT_XML_NAME


def parse_tabular(path: Path, data: bytes | None = None) -> TabularList:
    """Parse a CDC ICD-10-CM tabular XML file (no caching)."""
    if data is None:
        data = _read(path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise TabularError(f"{path}: not well-formed XML ({err})") from err
    builder = _Builder(path)
    with gc_paused():
        builder.build(root)
    year = _text(root.find("version"))
    return TabularList(
        year, str(path), hashlib.sha256(data).hexdigest(),
        builder.codes, builder.chapters, builder.blocks,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: ICD-10-CM tabular XML file not found") from err


def _load_cached(path: Path, cache_dir: Path | None) -> TabularList:
    data = _read(path)
    digest = hashlib.sha256(data).hexdigest()
    if cache_dir is None:
        return parse_tabular(path, data)
    pickle_path = cache_dir / "tabular" / f"tabular-{digest[:16]}-v{PARSER_VERSION}.pkl"
    if pickle_intact(pickle_path):  # its bytes match their recorded sha256
        try:
            with pickle_path.open("rb") as fh, gc_paused():
                tab = pickle.load(fh)
            if isinstance(tab, TabularList) and tab._sha256 == digest:
                tab.source = str(path)
                return tab
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            pass  # a stale or truncated cache entry: rebuild it below
    tab = parse_tabular(path, data)
    write_pickle_atomic(pickle_path, tab)  # an interrupted run leaves no half-written pickle
    return tab


@functools.lru_cache(maxsize=8)
def _load_memo(path: str, mtime_ns: int, size: int, cache_dir: str | None) -> TabularList:
    return _load_cached(Path(path), Path(cache_dir) if cache_dir is not None else None)


def load_tabular(
    xml_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> TabularList:
    """Load a Tabular List (default: April 2026 from simple-icd-10-cm).

    With ``cache_dir`` the parsed list is pickled under ``cache_dir/tabular``;
    without it the file is parsed (still memoised in this process). Raises
    FileNotFoundError or :class:`TabularError`, naming the file.
    """
    path = Path(xml_path) if xml_path is not None else default_xml_path()
    path = path.expanduser().resolve()
    try:
        stat = path.stat()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: ICD-10-CM tabular XML file not found") from err
    cache = str(Path(cache_dir).expanduser().resolve()) if cache_dir is not None else None
    return _load_memo(str(path), stat.st_mtime_ns, stat.st_size, cache)
