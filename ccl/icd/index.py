"""Parser for the CDC ICD-10-CM Alphabetic Index XML family.

One parser reads the four files of the CDC "table and index" zip, which share
the ``ICD10CM.index`` schema: the Index to Diseases and Injuries (``index``),
the External Cause index (``eindex``), the Table of Drugs and Chemicals
(``drug``) and the Neoplasm Table (``neoplasm``); the tables add an
``indexHeading`` and ``cell col=N`` elements. Every term path that carries a
code becomes an :class:`IndexEntry`.

Phrase rule (how ``IndexEntry.phrase`` is built from the path of titles):

* Titles are cleaned first: parenthesised text and the coding words ``NEC`` and
  ``NOS`` are removed, and a comma-separated spelling variant of the first word
  is dropped (``Diabetes, diabetic`` -> ``Diabetes``; a variant is a single
  word sharing its first four letters with the head). Other comma parts stay.
* The main term is the head. The first sub-term goes before it, unless it
  opens with a connector (``with``, ``without``, ``in``, ``due to``, ...);
  deeper sub-terms follow, comma-separated as the Tabular List writes
  qualifiers: ``Burn > ankle > right`` -> ``ankle burn, right``. From the
  first connector on, sub-terms follow with plain spaces:
  ``Diabetes, diabetic > type 2 > with > neuropathy`` ->
  ``type 2 diabetes with neuropathy``. A title ending in a connector takes what
  follows as its object: ``Struck by > hockey > stick`` ->
  ``struck by hockey stick``; ``Gas > incomplete combustion of`` ->
  ``incomplete combustion of gas``.
* The head's first letter is lower-cased when the file writes that word in
  lower case more often than capitalised inside titles, or, for a word it has
  no other use of, when the head is not the phrase's first word; names,
  acronyms and possessives keep it (``Diabetes`` -> ``diabetes``;
  ``Aarskog's syndrome``, ``Amsterdam dwarfism``, ``HIV``, ``Down syndrome``
  stay).
* Neoplasm Table: the site is the path below ``Neoplasm, neoplastic`` in index
  order, joined with commas as the Tabular List writes sites, inside the
  column's wording: ``malignant neoplasm of abdomen, wall``.
* Drug table: the substance phrase (rule above) inside the column's wording:
  ``poisoning by 1-propanol, accidental (unintentional)``,
  ``adverse effect of X``, ``underdosing of X``.

``see`` references are resolved within the same file (see :func:`resolve_see`)
and give the referring term the target's codes (role ``"see"``); ``manif``
codes give entries of role ``"manifestation"``, ``seecat``/``subcat`` ones of
role ``"category"`` (never billable). Codes are checked against a Tabular List
year by :func:`validate_entries`; :func:`load_valid_entries` does it all from
the ``icd`` config, with a cache.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ccl.icd.codes import canonical_code
from ccl.icd.download import resolve_index_files
from ccl.icd.tabular import TabularList
from ccl.icd.terms import strip_modifiers
from ccl.utils.atomic import pickle_intact, write_pickle_atomic
from ccl.utils.gc_pause import gc_paused
from ccl.utils.hashing import hash_file

SOURCES = ("index", "eindex", "drug", "neoplasm")
ROLES = ("code", "manifestation", "category", "see")

# Words that open a prepositional sub-term: it and its children follow the head.
CONNECTORS = frozenset(
    [
        "with",
        "without",
        "in",
        "due",
        "following",
        "from",
        "of",
        "to",
        "by",
        "during",
        "after",
        "complicating",
        "complicated",
        "involving",
        "affecting",
        "on",
        "at",
        "as",
        "for",
        "not",
        "resulting",
        "caused",
        "associated",
        "causing",
        "producing",
        "requiring",
        "except",
        "via",
        "under",
        "into",
        "within",
        "between",
        "than",
        "like",
    ]
)
_CODE_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{0,4})?\.?-?$")
_WORD = re.compile(r"[a-z]+")
_LETTERS = re.compile(r"[^\W\d_]+")
_EMPTY_CELLS = frozenset({"", "-", "--", "\u2014", "\u2013"})
_MAX_EXAMPLES = 5

# Neoplasm Table column headings (lower-cased) -> phrase with {site}.
_NEOPLASM_WORDING = {
    "malignant primary": "malignant neoplasm of {site}",
    "malignant secondary": "secondary malignant neoplasm of {site}",
    "ca in situ": "carcinoma in situ of {site}",
    "benign": "benign neoplasm of {site}",
    "uncertain behavior": "neoplasm of uncertain behavior of {site}",
    "unspecified behavior": "neoplasm of unspecified behavior of {site}",
}


class IndexFormatError(ValueError):
    """An index XML file is unreadable or breaks the schema; the message names the file."""


@dataclass(frozen=True)
class IndexEntry:
    """One coded path of the index: ``path`` of titles (without nemod) -> ``code``."""

    path: tuple[str, ...]
    phrase: str
    nonessential: tuple[str, ...]
    code: str
    raw_code: str
    source: str
    column: str | None
    role: str = "code"


@dataclass
class _Node:
    """A title in the term tree, for resolving ``see`` targets."""

    path: tuple[str, ...]
    nonessential: tuple[str, ...] = ()
    children: dict[str, list[_Node]] = field(default_factory=dict)
    entries: list[IndexEntry] = field(default_factory=list)
    see: str | None = None

    def add_child(self, child: _Node) -> None:
        title = child.path[-1]
        keys = {_match_key(title), _match_key(title.split(",")[0])}
        for key in keys:
            self.children.setdefault(key, []).append(child)


@dataclass
class IndexParse:
    """Everything read from one index file."""

    entries: list[IndexEntry]
    see: list[tuple[tuple[str, ...], str]]
    see_also: list[tuple[tuple[str, ...], str]]
    stats: dict[str, Any]
    source: str = "index"
    file: Path | None = None
    file_hash: str = ""
    version: str | None = None
    columns: dict[int, str] = field(default_factory=dict)
    case_votes: dict[str, int] | None = field(default=None, repr=False)
    _root: _Node = field(default_factory=lambda: _Node(()), repr=False)


# ---------------------------------------------------------------- phrases


@functools.lru_cache(maxsize=1 << 17)
def _match_key(text: str) -> str:
    """Loose key for matching ``see`` targets against titles."""
    text = strip_modifiers(text, fill=" ", square=False).lower()
    return " ".join(text.split()).strip(" ,;:")


@functools.lru_cache(maxsize=1 << 17)  # titles repeat along every path
def _clean(title: str) -> str:
    text = strip_modifiers(title, fill=" ", square=False)
    text = " ".join(text.split()).strip(" ,;:")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) < 2:
        return text
    head = parts[0].lower()
    kept = [parts[0]]
    for part in parts[1:]:
        low = part.lower()
        n = min(4, len(head), len(low))
        if " " not in part and low[:n] == head[:n]:
            continue  # spelling/derivational variant: "Diabetes, diabetic"
        kept.append(part)
    return ", ".join(kept)


@functools.lru_cache(maxsize=1 << 17)
def _is_connector(text: str) -> bool:
    words = _WORD.findall(text.lower())
    return bool(words) and words[0] in CONNECTORS


@functools.lru_cache(maxsize=1 << 17)
def _ends_with_connector(text: str) -> bool:
    words = _WORD.findall(text.lower())
    return bool(words) and words[-1] in CONNECTORS


def _lower_head(text: str, case_votes: Mapping[str, int] | None, mid: bool) -> str:
    """Lower-case the first letter of a main term unless it is a name or an acronym.

    Always kept: a first word with inner capitals (``HIV``) or a possessive
    (``Aarskog's``). With ``case_votes`` (see :func:`count_case_votes`) the word is
    lowered when the file writes it in lower case more often than capitalised;
    a word the file has no vote on is lowered only inside a phrase (``mid``),
    so ``Amsterdam dwarfism`` keeps its capital. Without votes it is lowered.
    """
    words = _LETTERS.findall(text)
    if not words or not words[0][0].isupper() or any(c.isupper() for c in words[0][1:]):
        return text
    first = text.split(" ", 1)[0]
    if "'" in first or "\u2019" in first:
        return text
    if case_votes is not None:
        vote = case_votes.get(words[0].lower())
        if (vote is None and not mid) or (vote is not None and vote <= 0):
            return text
    return text[0].lower() + text[1:]


def count_case_votes(main_titles: Iterable[str], sub_titles: Iterable[str]) -> dict[str, int]:
    """Per word: lower-case uses minus capitalised uses inside titles.

    A main term's first word is capitalised by convention and not counted;
    ``disease`` scores high, ``Down`` (``Syndrome > Down``) below zero.
    """
    votes: Counter[str] = Counter()
    for titles, skip in ((main_titles, 1), (sub_titles, 0)):
        for title in titles:
            for w in _LETTERS.findall(title)[skip:]:
                votes[w.lower()] += -1 if w[0].isupper() else 1
    return dict(votes)


def term_phrase(path: Sequence[str], case_votes: Mapping[str, int] | None = None) -> str:
    """Readable phrase for an index path (main term, sub-terms); see the module rule."""
    if not path:
        return ""
    head = _clean(path[0])
    prefix = ""
    tail = ""
    post = _ends_with_connector(head)  # "Struck by" > "hockey stick"
    first = True
    for title in path[1:]:
        text = _clean(title)
        if not text:
            continue
        if post or _is_connector(text):
            tail += " " + text
            post = True
        elif first:
            prefix = text
        else:
            tail += ", " + text
        first = False
        post = post or _ends_with_connector(text)
    head = _lower_head(head, case_votes, mid=bool(prefix))
    return f"{prefix} {head}{tail}" if prefix else f"{head}{tail}"


def site_phrase(path: Sequence[str]) -> str:
    """Neoplasm site from the sub-terms below the main term, comma-joined in index order."""
    out = ""
    for title in path:
        text = _clean(title)
        if not text:
            continue
        if not out:
            out = text
        else:
            out += (" " if _is_connector(text) else ", ") + text
    return out


def entry_phrase(
    path: Sequence[str],
    source: str,
    column: str | None,
    case_votes: Mapping[str, int] | None = None,
) -> str:
    """Phrase for an entry: the term phrase, wrapped in the table column's wording."""
    if column is None:
        return term_phrase(path, case_votes)
    if source == "neoplasm":
        site = site_phrase(path[1:])
        wording = _NEOPLASM_WORDING.get(column, f"neoplasm of {{site}} ({column})")
        return wording.format(site=site) if site else wording.replace(" of {site}", "")
    thing = term_phrase(path, case_votes)
    if column.startswith("poisoning"):
        qualifier = column[len("poisoning") :].strip()
        return f"poisoning by {thing}, {qualifier}" if qualifier else f"poisoning by {thing}"
    if column in ("adverse effect", "underdosing"):
        return f"{column} of {thing}"
    return f"{thing} ({column})"


def split_nonessential(text: str) -> tuple[str, ...]:
    """Top-level parenthesised items: ``"(-astasia) (hysterical)"`` -> ``("-astasia", "hysterical")``.

    Nested parentheses stay inside their item (``"(degenerative (primary))"``);
    text outside any parentheses is an item of its own.
    """
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            if depth == 0:
                items.append("".join(current))
                current = []
            else:
                current.append(ch)
            depth += 1
        elif ch == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                items.append("".join(current))
                current = []
            else:
                current.append(ch)
        else:
            current.append(ch)
    items.append("".join(current))
    return tuple(i for i in (" ".join(x.split()) for x in items) if i)


# ---------------------------------------------------------------- parsing


def _text(elem: ET.Element) -> str:
    """Element text, skipping the ``old`` parts of addenda ``diff`` markup."""
    parts = [elem.text or ""]
    for child in elem:
        if child.tag != "old":
            parts.append(_text(child))
        parts.append(child.tail or "")
    return " ".join("".join(parts).split())


def _title(elem: ET.Element, where: str) -> tuple[str, tuple[str, ...]]:
    node = elem.find("title")
    if node is None:
        node = elem.find("diff")
    if node is None:
        raise IndexFormatError(f"{where}: <{elem.tag}> without <title>")
    title_parts = [node.text or ""]
    nemods: list[str] = []
    for child in node:
        if child.tag == "nemod":
            nemods.extend(split_nonessential(_text(child)))
        elif child.tag != "old":
            title_parts.append(_text(child))
        title_parts.append(child.tail or "")
    return " ".join("".join(title_parts).split()), tuple(nemods)


def _detect_source(root: ET.Element, file: str) -> str:
    heading = root.find("indexHeading")
    if heading is not None:
        first = " ".join(_text(h) for h in heading.findall("head") if h.get("col") == "1").lower()
        if "neoplasm" in first:
            return "neoplasm"
        if "substance" in first or "drug" in first:
            return "drug"
        raise IndexFormatError(f"{file}: table with unknown first column {first!r}")
    title = root.find("title")
    text = _text(title).lower() if title is not None else ""
    return "eindex" if "external cause" in text else "index"


def _columns(root: ET.Element, file: str) -> dict[int, str]:
    heading = root.find("indexHeading")
    if heading is None:
        return {}
    columns: dict[int, str] = {}
    for head in heading.findall("head"):
        col = head.get("col", "")
        if not col.isdigit():
            raise IndexFormatError(f"{file}: <head> with a bad col attribute {col!r}")
        columns[int(col)] = _text(head).lower()
    return columns


class _Walker:
    """Depth-first walk of one file, filling entries, references and stats."""

    def __init__(self, parse: IndexParse, file: str):
        self.p = parse
        self.file = file
        self.stats: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def example(self, kind: str, text: str) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < _MAX_EXAMPLES:
            bucket.append(text)

    def code_entry(self, node: _Node, raw: str, role: str, column: str | None) -> None:
        raw = raw.strip()
        if not _CODE_SHAPE.match(raw.upper()):
            self.stats["malformed_codes"] += 1
            self.example("malformed_codes", f"{raw!r} at {' > '.join(node.path)}")
            return
        if raw.endswith("-"):
            self.stats["incomplete_dash"] += 1
        entry = IndexEntry(
            path=node.path,
            phrase=entry_phrase(node.path, self.p.source, column, self.p.case_votes),
            nonessential=node.nonessential,
            code=canonical_code(raw),
            raw_code=raw,
            source=self.p.source,
            column=column,
            role=role,
        )
        node.entries.append(entry)
        self.p.entries.append(entry)

    def walk(self, elem: ET.Element, parent: _Node, level: int) -> None:
        where = f"{self.file}: {' > '.join(parent.path) or 'top level'}"
        title, nemods = _title(elem, where)
        nonessential = tuple(dict.fromkeys(parent.nonessential + nemods))
        node = _Node(parent.path + (title,), nonessential)
        parent.add_child(node)
        self.stats["main_terms" if level == 0 else "terms"] += 1
        if nemods:
            self.stats["nemod"] += 1
        if not title:  # e.g. "<title><nemod>(gastro)</nemod></title>" in the rebuilt 2025 copy
            self.stats["empty_titles"] += 1
            self.example("empty_titles", " > ".join(node.path))
        if level and elem.get("level") not in (None, str(level)):
            self.stats["level_mismatch"] += 1
        for child in elem:
            tag = child.tag
            if tag == "code":
                self.code_entry(node, _text(child), "code", None)
            elif tag == "manif":
                text = _text(child)
                if _CODE_SHAPE.match(text.upper()):
                    self.stats["manif"] += 1
                    self.code_entry(node, text, "manifestation", None)
                else:  # the 2026 Neoplasm Table has one manif holding a site text
                    self.stats["manif_not_code"] += 1
                    self.example("manif_not_code", f"{text!r} at {' > '.join(node.path)}")
            elif tag in ("seecat", "subcat"):
                self.stats[tag] += 1
                self.code_entry(node, _text(child), "category", None)
            elif tag == "see":
                node.see = _text(child)
                self.p.see.append((node.path, node.see))
            elif tag == "seeAlso":
                self.p.see_also.append((node.path, _text(child)))
            elif tag == "cell":
                self.cell(child, node)
            elif tag == "term":
                self.walk(child, node, level + 1)

    def cell(self, elem: ET.Element, node: _Node) -> None:
        col = elem.get("col", "")
        if not col.isdigit() or int(col) not in self.p.columns:
            raise IndexFormatError(
                f"{self.file}: {' > '.join(node.path)}: <cell col={col!r}> has no matching <head>"
            )
        self.stats["cells"] += 1
        text = _text(elem)
        if text in _EMPTY_CELLS:
            self.stats["empty_cells"] += 1
            return
        if int(col) == 1:  # the term column itself never holds a code
            self.stats["first_column_cells"] += 1
            return
        self.code_entry(node, text, "code", self.p.columns[int(col)])


def parse_index_xml(
    path: str | Path, source: str | None = None, resolve: bool = True
) -> IndexParse:
    """Parse one CDC index XML file; ``source`` is detected from the file when ``None``.

    With ``resolve`` the entries of resolved ``see`` references (role ``"see"``)
    are appended; see :func:`resolve_see`.
    """
    with gc_paused():
        return _parse_index_xml(Path(path), source, resolve)


def _parse_index_xml(path: Path, source: str | None, resolve: bool) -> IndexParse:
    start = time.perf_counter()
    if not path.is_file():
        raise IndexFormatError(f"{path}: file not found")
    if source is not None and source not in SOURCES:
        raise ValueError(f"{path}: source {source!r} is not one of {SOURCES}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise IndexFormatError(f"{path}: not well-formed XML: {e}") from None
    if root.tag != "ICD10CM.index":
        raise IndexFormatError(f"{path}: root element is <{root.tag}>, expected <ICD10CM.index>")
    version = root.find("version")
    parse = IndexParse(
        entries=[],
        see=[],
        see_also=[],
        stats={},
        source=source or _detect_source(root, str(path)),
        file=path,
        file_hash=hash_file(path, n=None),
        version=_text(version) if version is not None else None,
        columns=_columns(root, str(path)),
    )
    if parse.source in ("drug", "neoplasm") and not parse.columns:
        raise IndexFormatError(f"{path}: a {parse.source} table needs an <indexHeading>")
    parse.case_votes = count_case_votes(
        (_text(t) for m in root.iter("mainTerm") for t in m.findall("title")),
        (_text(t) for m in root.iter("term") for t in m.findall("title")),
    )
    walker = _Walker(parse, str(path))
    letters = root.findall("letter")
    if not letters:
        raise IndexFormatError(f"{path}: no <letter> elements")
    for letter in letters:
        for main in letter.findall("mainTerm"):
            walker.walk(main, parse._root, 0)
    stats: dict[str, Any] = {"source": parse.source, "letters": len(letters)}
    stats.update(walker.stats)
    stats["see"] = len(parse.see)
    stats["see_also"] = len(parse.see_also)
    if resolve:
        extra, see_stats = resolve_see(parse)
        parse.entries.extend(extra)
        stats.update(see_stats)
    stats["entries"] = len(parse.entries)
    stats["codes"] = len({e.code for e in parse.entries})
    stats["examples"] = walker.examples
    stats["seconds"] = round(time.perf_counter() - start, 3)
    parse.stats = stats
    return parse


# ---------------------------------------------------------------- see references


def _find(node: _Node, pieces: list[str], i: int = 0) -> _Node | None:
    """Walk ``pieces`` (a comma-split target) down the tree, trying multi-piece titles first."""
    if i == len(pieces):
        return node
    for k in range(len(pieces) - i, 0, -1):
        key = _match_key(", ".join(pieces[i : i + k]))
        for child in node.children.get(key, ()):
            found = _find(child, pieces, i + k)
            if found is not None:
                return found
    return None


def find_term(parse: IndexParse, target: str) -> tuple[str, ...] | None:
    """Path of the term a ``see`` text such as ``"Pain, abdominal"`` names, or ``None``."""
    pieces = [p for p in (s.strip() for s in target.split(",")) if p]
    node = _find(parse._root, pieces) if pieces else None
    return node.path if node is not None else None


def resolve_see(parse: IndexParse, max_hops: int = 3) -> tuple[list[IndexEntry], dict[str, Any]]:
    """Entries for terms whose ``see`` target (main term and sub-term path) has a code.

    The referring term gets the target's codes with ``role="see"``, its own
    path and phrase, and the target's table column. Chains of ``see`` are
    followed up to ``max_hops``. ``seeAlso`` targets are resolved and counted
    only: they point to related terms, not synonyms, so they yield no entries.
    """
    root = parse._root
    extra: list[IndexEntry] = []
    stats: Counter[str] = Counter()
    unresolved: list[str] = []
    for path, target in parse.see:
        node = _find(root, [p for p in (s.strip() for s in target.split(",")) if p])
        if node is None:
            if len(unresolved) < _MAX_EXAMPLES:
                unresolved.append(f"{' > '.join(path)} -> {target}")
            continue
        stats["see_resolved"] += 1
        hops = 0
        while not node.entries and node.see and hops < max_hops:
            nxt = _find(root, [p for p in (s.strip() for s in node.see.split(",")) if p])
            if nxt is None or nxt is node:
                break
            node, hops = nxt, hops + 1
        targets = [e for e in node.entries if e.role in ("code", "manifestation")]
        if targets:
            stats["see_resolved_with_code"] += 1
        for e in targets:
            extra.append(
                replace(
                    e,
                    path=path,
                    phrase=entry_phrase(path, parse.source, e.column, parse.case_votes),
                    nonessential=(),
                    role="see",
                )
            )
    for _path, target in parse.see_also:
        if _find(root, [p for p in (s.strip() for s in target.split(",")) if p]) is not None:
            stats["see_also_resolved"] += 1
    out: dict[str, Any] = {
        "see_resolved": stats["see_resolved"],
        "see_resolved_with_code": stats["see_resolved_with_code"],
        "see_also_resolved": stats["see_also_resolved"],
        "see_entries": len(extra),
        "see_unresolved_examples": unresolved,
    }
    return extra, out


# ---------------------------------------------------------------- validation


def _complete(code: str, seventh: str, tab: TabularList) -> str | None:
    """``code`` padded with placeholder X to six characters plus ``seventh``, if billable."""
    bare = code.replace(".", "")
    if len(bare) > 6:
        return None
    candidate = canonical_code(bare.ljust(6, "X") + seventh)
    return candidate if candidate in tab and tab.is_billable(candidate) else None


def validate_entries(
    parse: IndexParse | Iterable[IndexEntry],
    tab: TabularList,
    seventh: str | None = None,
) -> tuple[list[IndexEntry], dict[str, Any]]:
    """Keep the entries whose code is valid and billable in ``tab``; report the others.

    Never completes a code silently. Entries are counted as *incomplete* when
    the index writes a trailing ``-`` or the code exists but is not billable,
    and *invalid* when the code is not in the Tabular List year at all.
    ``seventh`` (e.g. ``"A"``, initial encounter) is an explicit option: a code
    without a trailing ``-`` that is not billable is padded with the placeholder
    ``X`` to six characters and given this 7th character, and kept only when the
    Tabular List has the result as a billable code (``T51.3X1`` -> ``T51.3X1A``,
    ``X58`` -> ``X58.XXXA``). Such entries are counted as *completed*.
    """
    if seventh is not None and not re.fullmatch(r"[A-Z0-9]", seventh):
        raise ValueError(f"seventh must be one upper-case letter or digit, got {seventh!r}")
    entries = parse.entries if isinstance(parse, IndexParse) else list(parse)
    kept: list[IndexEntry] = []
    per_source: dict[str, dict[str, Any]] = {}
    memo: dict[tuple[str, bool], tuple[str, str]] = {}
    for e in entries:
        r = per_source.setdefault(
            e.source,
            {
                "entries": 0,
                "valid": 0,
                "completed": 0,
                "incomplete": 0,
                "invalid": 0,
                "_codes": set(),
                "_valid_codes": set(),
                "examples": {"incomplete": [], "invalid": [], "completed": []},
            },
        )
        r["entries"] += 1
        r["_codes"].add(e.code)
        memo_key = (e.code, e.raw_code.endswith("-"))
        if memo_key not in memo:
            memo[memo_key] = _classify(e, tab, seventh)
        outcome, code = memo[memo_key]
        r[outcome] += 1
        if outcome in ("valid", "completed"):
            r["_valid_codes"].add(code)
            kept.append(e if code == e.code else replace(e, code=code))
        if outcome != "valid" and len(r["examples"][outcome]) < _MAX_EXAMPLES:
            shown = f"{e.raw_code} -> {code}" if outcome == "completed" else e.raw_code
            r["examples"][outcome].append(f"{shown} ({' > '.join(e.path)})")
    for r in per_source.values():
        r["distinct_codes"] = len(r.pop("_codes"))
        r["valid_codes"] = len(r.pop("_valid_codes"))
    report: dict[str, Any] = {
        "tabular_year": getattr(tab, "year", None),
        "seventh": seventh,
        "kept": len(kept),
        "sources": per_source,
    }
    for key in ("entries", "valid", "completed", "incomplete", "invalid"):
        report[key] = sum(r[key] for r in per_source.values())
    return kept, report


def _classify(e: IndexEntry, tab: TabularList, seventh: str | None) -> tuple[str, str]:
    code = e.code
    if e.raw_code.endswith("-"):
        return "incomplete", code
    if code in tab and tab.is_billable(code):
        return "valid", code
    completed = _complete(code, seventh, tab) if seventh else None
    if completed:
        return "completed", completed
    # A list that omits 6-character stems (T51.3X1) still shows they need a 7th character.
    if code in tab or _complete(code, "A", tab):
        return "incomplete", code
    return "invalid", code


# ---------------------------------------------------------------- config entry point

# Bump when parsing, phrases or validation change, so cached entries are rebuilt.
INDEX_VERSION = 1


def load_valid_entries(
    icd_cfg: Any, tab: TabularList, cache_dir: str | Path, seventh: str | None = "A"
) -> tuple[list[IndexEntry], dict[str, Any]]:
    """Entries of every available index file that are billable in ``tab``, and a report.

    Files come from :func:`ccl.icd.download.resolve_index_files` (config paths,
    cache, download). With none, the result is ``[]`` and the report says
    ``fallback: True`` with a plain-language ``message``. ``seventh`` is passed
    to :func:`validate_entries` (``"A"``: codes needing a 7th character get the
    initial-encounter one). Validated entries are pickled under
    ``cache_dir/index`` keyed by the files' hashes, the tabular hash and ``seventh``.
    """

    files = resolve_index_files(icd_cfg, cache_dir)
    report: dict[str, Any] = {
        "fallback": files.fallback,
        "message": files.message,
        "origin": files.origin,
        "seventh": seventh,
        "files": {
            k: {"path": str(p), "sha256": hash_file(p)} for k, p in files.paths.items()
        },
    }
    if not files.paths:
        return [], report
    key = hashlib.sha256(
        repr(
            (INDEX_VERSION, sorted((k, v["sha256"]) for k, v in report["files"].items()),
             tab.content_hash(), seventh)
        ).encode()
    ).hexdigest()[:16]
    pickle_path = Path(cache_dir) / "index" / f"entries-{key}.pkl"
    if pickle_intact(pickle_path):  # its bytes match their recorded sha256
        try:
            with pickle_path.open("rb") as f, gc_paused():
                entries, cached = pickle.load(f)
            report.update(cached)
            return entries, report
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
            pass  # damaged or stale: rebuild below
    entries: list[IndexEntry] = []
    details: dict[str, Any] = {"parse": {}, "validation": {}}
    for kind, path in files.paths.items():
        parse = parse_index_xml(path)
        if parse.source != kind:
            raise IndexFormatError(
                f"{path}: given as the {kind} file (icd.{kind}_xml) but it is the {parse.source} file"
            )
        kept, validation = validate_entries(parse, tab, seventh=seventh)
        entries.extend(kept)
        details["parse"][kind] = parse.stats
        details["validation"][kind] = validation
    details["entries"] = len(entries)
    write_pickle_atomic(pickle_path, (entries, details))
    report.update(details)
    return entries, report
