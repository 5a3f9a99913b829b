"""ICD-10-CM term cleaning: the one home of the rules that turn coding wording into the
words of a note (parenthesised and bracketed modifiers, "NOS"/"NEC", "unspecified" and
"without" clauses, a leading "Other").

Three uses need three strengths of the same rules (the regular expressions are shared; on
the 109,977 terms of the April 2026 Tabular List natural_phrase's output did not change when
it took them over from its own older copies):

* :func:`strip_modifiers` -- modifiers and coding words only (index titles, synthetic evidence);
* :func:`natural_phrase` -- the one phrase a clinician writes for a term (gold ``tabular:short``
  pairs and the demo world's notes);
* :func:`plain_forms` -- every qualifier-free form a note may use, for finding terms in notes
  (the lexical silver miner adds abbreviations and roman numerals on top).
"""

from __future__ import annotations

import re

# Nonessential modifiers: "(acute)", "[ADHD]" (innermost pair; its leading space goes with it).
MODIFIERS = re.compile(r"\s*[(\[][^()\[\]]*[)\]]")
# Index titles keep square brackets (they carry the abbreviation a note writes: "[MGUS]").
ROUND_MODIFIERS = re.compile(r"\s*\([^()]*\)")
CODING_WORDS = re.compile(r"\b(?:NOS|NEC)\b")
_SPACES = re.compile(r"\s+")
# Cuts of "Other"/"Unspecified" at the start, "unspecified" at the end, a "without ..." tail.
_LEADING = re.compile(r"^(?:other|unspecified)\s+", re.IGNORECASE)
_TRAILING_UNSPECIFIED = re.compile(r"\s+unspecified$", re.IGNORECASE)
_ANY_WITHOUT = re.compile(r"(?<=\w)\s+without\s.*$", re.IGNORECASE)


def strip_modifiers(text: str, fill: str = "", square: bool = True) -> str:
    """``text`` without bracketed modifiers and the words NOS/NEC, each replaced by ``fill``.

    ``square=False`` keeps square-bracketed text (round parentheses only: index titles).
    Spaces are left as they fall: ``"Gout (acute) NOS"`` -> ``"Gout "``.
    """
    return CODING_WORDS.sub(fill, (MODIFIERS if square else ROUND_MODIFIERS).sub(fill, text))


def tidy(text: str) -> str:
    """Runs of white space folded to one space; edge spaces and ``,;:.`` removed."""
    return _SPACES.sub(" ", text).strip(" ,;:.")


# natural_phrase's own cuts: a comma clause saying only what is unspecified, and sites.
_NP_VAGUE_CLAUSE = re.compile(
    r"unspecified|not elsewhere classified|not specified|uncomplicated|\bwithout\b", re.IGNORECASE
)
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
    text = strip_modifiers(term)
    clauses = [c.strip() for c in text.split(",")]
    kept = [clauses[0]]
    for clause in clauses[1:]:
        if not _NP_VAGUE_CLAUSE.search(clause):
            kept.append(clause)
            continue
        if clause.lower().endswith(" unspecified"):  # "stage 3 unspecified" -> "stage 3"
            kept.append(clause[: -len(" unspecified")])
        break
    text = ", ".join(kept)
    text = _ANY_WITHOUT.sub("", _TRAILING_UNSPECIFIED.sub("", text))
    text = _OF_UNSPECIFIED.sub("of ", _UNSPECIFIED_PART.sub("", text))
    text = _LEADING.sub("", text.strip())
    text = " ".join(text.split())
    return _lower_first(text)


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    stem = first.split("-", 1)[0]  # "Non-ST" is lowered, "COVID-19" is not
    if not first or first in _PROPER or first.endswith("'s") or not stem[1:].islower():
        return text
    return text[0].lower() + text[1:]


# Comma clauses of ICD wording that notes leave out (the matching forms of plain_forms).
_VAGUE_CLAUSE = re.compile(
    r"^(?:unspecified\b.*|.*\bunspecified|not elsewhere classified|not otherwise specified|"
    r"uncomplicated|without complications?|(?:initial|subsequent) encounter\b.*|sequela)$",
    re.IGNORECASE,
)
_TRAILING_WITHOUT = re.compile(
    r"\s+without\s+(?:complications?|mention\b.*|.*\bunspecified)$", re.I
)
_UNSPECIFIED_PIECES = re.compile(
    r"\b(?:unspecified (?:part|site|type) of|of unspecified site)\s*", re.I
)
_UNSPECIFIED_WORD = re.compile(r"\bunspecified\s+", re.IGNORECASE)


def plain_forms(term: str) -> list[str]:
    """The forms of ``term`` a note may use, for matching (not deduplicated; some may be empty).

    In order: the term tidied, without modifiers, with vague comma clauses and "without"
    qualifiers dropped, without a leading "Other"/"Unspecified", without the word
    "unspecified", and without any "without ..." tail ("without X" marks the default: notes
    omit it).
    """
    base = tidy(term)
    plain = tidy(strip_modifiers(base))
    clauses = [c.strip() for c in plain.split(",")]
    kept = [clauses[0]]
    for clause in clauses[1:]:
        stripped = _TRAILING_UNSPECIFIED.sub("", clause)
        if stripped != clause and not _VAGUE_CLAUSE.match(stripped):
            kept.append(stripped)  # "stage 3 unspecified" -> "stage 3"
            break
        if _VAGUE_CLAUSE.match(clause):
            break
        kept.append(clause)
    short = ", ".join(kept)
    short = _TRAILING_WITHOUT.sub("", short)
    default = tidy(_ANY_WITHOUT.sub("", short))
    short = tidy(_UNSPECIFIED_PIECES.sub("", short))
    short = tidy(_LEADING.sub("", short))
    return [base, plain, short, tidy(_LEADING.sub("", plain)), tidy(_UNSPECIFIED_WORD.sub("", short)), default]
