"""Parse a model's answer into evidence phrases and canonical ICD-10-CM codes.

The answer format (see :mod:`ccl.data.prompts`) is an ``Evidence:`` section,
one ``- phrase`` a line (``- none`` when empty), then a ``Codes:`` section, one
``CODE - description`` a line. Real outputs stray from it: no headers, bare code
lists, ``e119``, markdown headers, chatter, chain-of-thought text, truncation.

Rules, in order:

* A header is a line that starts (after optional markdown ``#``, ``*``, ``_``,
  ``>``) with ``Evidence`` or ``Codes`` (any case; ``Code`` and an
  ``ICD-10[-CM]`` qualifier allowed) and a colon. Text after the colon on the
  same line belongs to the section. Mid-line mentions are not headers.
* Evidence is read from every evidence section: one phrase a line, bullets
  (``-``, ``*``, ``•``, ``1.``, ``1)``) stripped, whitespace collapsed, empty
  lines and ``none`` dropped. No header, no evidence.
* Codes are read from every codes section when there is one, so codes quoted
  inside evidence or reasoning are not counted; otherwise from the whole text.
  Extraction is the paper's regular expression (:func:`ccl.icd.codes.extract_codes`).
* A line is read after its Markdown decoration is stripped (:func:`strip_markdown`:
  blockquote ``>``, heading ``#``, list markers ``-``/``*``/``+``/``•``/``1.``/``1)``
  and task boxes ``[ ]``, emphasis ``**``/``*``/``__``/``_``/``~~`` and backticks),
  and a short label before a code (``Code: E11.9``, ``ICD-10: E11.9``) is dropped.
  A *code line* then starts with a code. When a code line goes on with a
  description (the code, then a dash, colon, equals sign or parenthesis and
  text, or the code then a word that is not code-shaped), it yields only the
  codes that start one of its comma- or semicolon-separated items: text after
  a code's separator is never mined, so code-shaped words in descriptions
  ("vitamin B12", "T9-T10 vertebra", "T2DM") are not read as codes. This holds
  in a codes section and, without one, in the whole text. Other lines of a
  codes section yield every code in them ("E11.9, I10") except inside a
  parenthesis right after a code (``E11.9 (T2DM)``); other lines outside a codes
  section yield every code (the paper's regular expression).
* A Markdown table row (``| E11.65 | T2DM with hyperglycemia |``) yields the codes
  of its first cell that holds codes only (``E11.9, I10``), else those of its
  first cell that is a code line; separator rows (``|---|``) yield nothing.

:func:`parse_output` never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ccl.icd.codes import CODE_PATTERN, extract_codes
from ccl.records import CODES_HEADER, EVIDENCE_HEADER, NO_EVIDENCE

# Bump when parsing changes: it is part of the predict stage's key.
PARSER_VERSION = "2"  # 2: Markdown stripped, descriptions never mined (issue 14)

_EVIDENCE_WORD = re.escape(EVIDENCE_HEADER.rstrip(":").strip())
_CODES_WORD = re.escape(CODES_HEADER.rstrip(":").strip().rstrip("sS"))
_HEADER = re.compile(
    r"[ \t#*_>]*"
    rf"(?:(?P<evidence>{_EVIDENCE_WORD})|(?:icd[- ]?10(?:[- ]?cm)?[ \t]+)?(?P<codes>{_CODES_WORD}s?))"
    r"[ \t*_]*:[*_]*[ \t]*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^(?:[-*•–—]+|\d{1,3}[.)])(?:\s+|$)")
_NONE_WORD = NO_EVIDENCE.lstrip("-* ").strip().lower()
_ITEM_SPLIT = re.compile(r"[,;]")
_ALNUM_TOKEN = re.compile(r"[A-Za-z0-9]+")
_DESCRIPTION_SEPARATOR = re.compile(r"[ \t]*[-–—:(=][ \t]*\w")


@dataclass(frozen=True)
class ParsedOutput:
    """Evidence phrases in output order and canonical codes, deduplicated, in order."""

    evidence: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """Split ``text`` into (kind, lines) with kind in {"preamble", "evidence", "codes"}."""
    sections: list[tuple[str, list[str]]] = [("preamble", [])]
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header is None:
            sections[-1][1].append(line)
            continue
        kind = "evidence" if header.group("evidence") else "codes"
        rest = line[header.end():]
        sections.append((kind, [rest] if rest.strip() else []))
    return sections


def _evidence_phrase(line: str) -> str:
    phrase = " ".join(_BULLET.sub("", line.strip(), count=1).split())
    return "" if phrase.lower().rstrip(".") == _NONE_WORD else phrase


def _starts_with_description(line: str) -> bool:
    """True for ``CODE - description`` lines.

    That is a code, then a dash, colon or parenthesis and text ("E11.9 - T2DM":
    T2DM is code-shaped), or a code directly followed by a word that is not.
    """
    head = CODE_PATTERN.match(line)
    if head is None:
        return False
    if _DESCRIPTION_SEPARATOR.match(line, head.end()):
        return True
    token = _ALNUM_TOKEN.search(line, head.end())
    return token is not None and CODE_PATTERN.match(line, token.start()) is None


_MD_BLOCK = re.compile(r"^[ \t]*(?:>[ \t]*)*(?:#{1,6}(?:[ \t]+|$))?")
_MD_LIST = re.compile(r"^(?:[-*+•–—]+|\(?\d{1,3}[.)]|\[[ xX]\])(?:[ \t]+|$)")
_MD_EMPHASIS = re.compile(r"\*+|`+|~~|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9 ./-]{0,30}?[ \t]*[:=][ \t]*(?=[A-Za-z][0-9A-Za-z]{2})")
_PARENS = re.compile(r"\([^()]*\)")
_PAREN_AFTER_CODE = re.compile(r"(?<=[0-9A-Za-z])[ \t]*\([^()]*\)")
_TABLE_SEPARATOR = re.compile(r"^[ \t]*:?-{2,}:?[ \t]*$")
_CODE_WORD = CODE_PATTERN.pattern
_ONLY_CODES = re.compile(rf"^[ \t]*{_CODE_WORD}(?:[ \t]*[,;/ ][ \t]*{_CODE_WORD})*[ \t,;.]*$")


def strip_markdown(line: str) -> str:
    """``line`` without Markdown decoration: blockquote, heading, list markers, emphasis.

    ``"1. **E11.65** - T2DM"`` -> ``"E11.65 - T2DM"``; ``"> ### `I10`"`` -> ``"I10"``.
    Nested list markers (``- 1. [x] E11.9``) are all removed. Never raises.
    """
    text = _MD_BLOCK.sub("", line, count=1)
    for _ in range(4):  # "- 1. [ ] E11.9": a few nested markers at most
        stripped = _MD_LIST.sub("", text.lstrip(), count=1)
        if stripped == text.lstrip():
            break
        text = stripped
    return _MD_EMPHASIS.sub("", text).strip()


def _code_line(item: str) -> str:
    """``item`` without a short label in front of a code (``Code: E11.9`` -> ``E11.9``)."""
    if CODE_PATTERN.match(item) is not None:
        return item
    label = _LABEL.match(item)
    if label is not None and CODE_PATTERN.match(item, label.end()) is not None:
        return item[label.end():]
    return item


def _head_codes(item: str) -> list[str]:
    """Codes starting the comma- or semicolon-separated items of a code line with descriptions."""
    codes: list[str] = []
    for k, piece in enumerate(_ITEM_SPLIT.split(_PARENS.sub(" ", item))):
        piece = strip_markdown(piece)
        head = CODE_PATTERN.match(piece)
        if head is None:
            continue
        # A later item counts when it is a code alone or a code, a separator and text
        # ("E11.9 - T2DM, I10 - HTN"), not a description going on ("..., B12 deficiency").
        if k and piece[head.end():].strip() and not _DESCRIPTION_SEPARATOR.match(piece, head.end()):
            continue
        codes.extend(extract_codes(head.group(0)))
    return codes


def _table_codes(line: str) -> list[str]:
    cells = [strip_markdown(c) for c in line.strip().strip("|").split("|")]
    if all(_TABLE_SEPARATOR.match(c) or not c for c in cells):
        return []
    for cell in cells:
        if _ONLY_CODES.match(cell):
            return extract_codes(cell)
    for cell in cells:
        item = _code_line(cell)
        if CODE_PATTERN.match(item) is not None:
            return _head_codes(item) if _starts_with_description(item) else extract_codes(item)
    return []


def _line_codes(line: str, in_codes_section: bool = True) -> list[str]:
    """Codes of one line (module docstring): a table row, a code line, or other text."""
    if line.count("|") >= 2 or line.lstrip().startswith("|"):
        return _table_codes(line)
    item = _code_line(strip_markdown(line))
    if CODE_PATTERN.match(item) is not None and _starts_with_description(item):
        return _head_codes(item)
    if not in_codes_section:
        return extract_codes(line)
    return extract_codes(_PAREN_AFTER_CODE.sub("", item))


def _dedupe(codes: list[str]) -> list[str]:
    return list(dict.fromkeys(codes))


def parse_output(text: str, prefix: str = "") -> ParsedOutput:
    """Parse ``prefix + text`` (the prefix is the answer start given in the prompt).

    Never raises; ``None`` or non-string input is treated as text (``None`` as "").
    """
    text = "" if text is None else text if isinstance(text, str) else str(text)
    prefix = "" if prefix is None else prefix if isinstance(prefix, str) else str(prefix)
    sections = _sections(prefix + text)
    evidence = [
        phrase
        for kind, lines in sections
        if kind == "evidence"
        for phrase in map(_evidence_phrase, lines)
        if phrase
    ]
    code_sections = [lines for kind, lines in sections if kind == "codes"]
    if code_sections:
        codes = [code for lines in code_sections for line in lines for code in _line_codes(line)]
    else:
        codes = [code for line in (prefix + text).splitlines() for code in _line_codes(line, False)]
    return ParsedOutput(evidence=evidence, codes=_dedupe(codes))


def merge_outputs(parts: list[ParsedOutput]) -> ParsedOutput:
    """One note's result from the outputs of its windows (``infer.long_notes=window``).

    Evidence phrases and codes are concatenated in window (note) order and
    deduplicated: a phrase in the overlap of two windows counts once. One part
    is returned as it is.
    """
    if len(parts) == 1:
        return parts[0]
    evidence = list(dict.fromkeys(e for p in parts for e in p.evidence))
    return ParsedOutput(evidence=evidence, codes=_dedupe([c for p in parts for c in p.codes]))
