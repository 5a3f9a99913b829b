"""Canonical ICD-10-CM code strings and extraction of codes from free text.

The canonical form is upper case with the dot after the category: ``E11.9``,
``S72.001A``, ``T51.3X1A``. Models write codes many ways (``e119``,
``E11.9 -``, ``E119``); :func:`canonical_code` maps all of them to one form.
"""

from __future__ import annotations

import re

# The paper extracts codes with "a letter, then digits, then the rest of the code".
# ICD-10-CM: letter, digit, digit or letter (or, since 2026, letter-letter-digit as in QA0), then up to four
# alphanumerics (after an optional dot). Word boundaries keep us off words like "B12vitamin".
CODE_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z](?:[0-9][0-9A-Za-z]|[A-Za-z][0-9]))(?:\.([0-9A-Za-z]{1,4}))?"
    r"(?:([0-9A-Za-z]{1,4}))?(?![A-Za-z0-9])"
)
_STRIP = re.compile(r"[\s.\-]")
_WELL_FORMED = re.compile(r"^[A-Z](?:[0-9][0-9A-Z]|[A-Z][0-9])(\.[0-9A-Z]{1,4})?$")


def canonical_code(code: str) -> str:
    """Return ``code`` in canonical dotted upper-case form.

    Spaces, dots and trailing dashes are dropped first, then a dot is put after
    the third character when the code is longer than three. No validity check:
    use :func:`is_well_formed` or the Tabular List for that.
    """
    bare = _STRIP.sub("", code).upper()
    return f"{bare[:3]}.{bare[3:]}" if len(bare) > 3 else bare


def is_well_formed(code: str) -> bool:
    """True when ``code`` (canonical form) has the shape of an ICD-10-CM code."""
    return bool(_WELL_FORMED.match(code))


def extract_codes(text: str) -> list[str]:
    """All code-shaped strings in ``text``, canonical, in order of first appearance.

    Never raises: any string in, a (possibly empty) list out.
    """
    seen: dict[str, None] = {}
    for match in CODE_PATTERN.finditer(text):
        head, after_dot, tail = match.groups()
        rest = after_dot if after_dot is not None else (tail or "")
        code = canonical_code(head + rest)
        if is_well_formed(code):
            seen.setdefault(code, None)
    return list(seen)
