"""Clinician-style phrases from ICD-10-CM terms.

Tabular List titles carry coding qualifiers ("Gout, unspecified"); notes say
"gout". :func:`natural_phrase` strips those qualifiers. The gold tier offers the
result as its own source (``tabular:short``) and the demo world writes notes with
it, so a phrase seen in a note can be learned from span data.
"""

from __future__ import annotations

import re

_BRACKETS = re.compile(r"\s*[\[(][^\])]*[\])]")
_NOS = re.compile(r"\s+(NOS|NEC)\b")
_LEADING_UNSPECIFIED = re.compile(r"^unspecified\s+", re.IGNORECASE)
_TRAILING_UNSPECIFIED = re.compile(r",?\s+unspecified$", re.IGNORECASE)
_VAGUE_CLAUSE = re.compile(
    r"unspecified|not elsewhere classified|not specified|uncomplicated|\bwithout\b", re.IGNORECASE
)
_TRAILING_WITHOUT = re.compile(r"\s+without\s.*$", re.IGNORECASE)
_LEADING_OTHER = re.compile(r"^other\s+", re.IGNORECASE)
_UNSPECIFIED_PART = re.compile(r"\bunspecified (part|site) of ", re.IGNORECASE)
_OF_UNSPECIFIED = re.compile(r"\bof unspecified ", re.IGNORECASE)
_PROPER = frozenset({"Clostridium", "Escherichia", "Staphylococcus", "Streptococcus"})


def natural_phrase(term: str) -> str:
    """Turn an ICD-10-CM term into the way a clinician would write it.

    Drops nonessential modifiers in parentheses, bracketed abbreviations, "NOS"
    and "NEC", comma clauses that only say what is unspecified, trailing
    "without ..." qualifiers, "of unspecified" sites and a leading "Unspecified"
    or "Other"; lower-cases the first word unless it is a name or an acronym.
    ``"Pneumonia, unspecified organism"`` -> ``"pneumonia"``.
    """
    text = _NOS.sub("", _BRACKETS.sub("", term))
    clauses = [c.strip() for c in text.split(",")]
    kept = [clauses[0]]
    for clause in clauses[1:]:
        if not _VAGUE_CLAUSE.search(clause):
            kept.append(clause)
            continue
        if clause.lower().endswith(" unspecified"):  # "stage 3 unspecified" -> "stage 3"
            kept.append(clause[: -len(" unspecified")])
        break
    text = ", ".join(kept)
    text = _TRAILING_WITHOUT.sub("", _TRAILING_UNSPECIFIED.sub("", text))
    text = _OF_UNSPECIFIED.sub("of ", _UNSPECIFIED_PART.sub("", text))
    text = _LEADING_OTHER.sub("", _LEADING_UNSPECIFIED.sub("", text.strip()))
    text = " ".join(text.split())
    return _lower_first(text)


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    stem = first.split("-", 1)[0]  # "Non-ST" is lowered, "COVID-19" is not
    if not first or first in _PROPER or first.endswith("'s") or not stem[1:].islower():
        return text
    return text[0].lower() + text[1:]
