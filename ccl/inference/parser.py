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
  In a codes section, a ``CODE - description`` line (a code, then a dash, colon
  or parenthesis and text, or a code then a word that is not code-shaped) yields
  only the codes that start one of its comma- or semicolon-separated items, so
  code-shaped words in descriptions ("vitamin B12", "T9-T10 vertebra", "T2DM")
  are not read as codes. Other lines yield every code in them ("E11.9, I10").

:func:`parse_output` never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ccl.data.prompts import CODES_HEADER, EVIDENCE_HEADER, NO_EVIDENCE
from ccl.icd.codes import CODE_PATTERN, extract_codes

# Bump when parsing changes: it is part of the predict stage's key.
PARSER_VERSION = "1"

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
_DESCRIPTION_SEPARATOR = re.compile(r"[ \t]*[-–—:(][ \t]*\w")


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


def _line_codes(line: str) -> list[str]:
    item = _BULLET.sub("", line.strip(), count=1)
    if not _starts_with_description(item):
        return extract_codes(item)
    codes: list[str] = []
    for piece in _ITEM_SPLIT.split(item):
        head = CODE_PATTERN.match(_BULLET.sub("", piece.strip(), count=1))
        if head is not None:
            codes.extend(extract_codes(head.group(0)))
    return codes


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
        codes = extract_codes(prefix + text)
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
