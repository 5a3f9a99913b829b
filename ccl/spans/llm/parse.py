"""Defensive parsing of LLM answers: JSON objects and lists, with lenient fallbacks.

Models wrap JSON in code fences, add prose around it, leave trailing commas,
use single quotes, or answer with a bullet list. Every parser here returns
``None`` instead of raising, so the caller counts the answer as malformed and
moves on.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ccl.icd.codes import canonical_code, is_well_formed

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")
_CODE_LINE = re.compile(r"^\s*[-*]?\s*\"?([A-Za-z][0-9A-Za-z.]{2,8})\"?\s*[:=-]\s*(.*)$")
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")


def _decode(fragment: str) -> Any:
    for attempt in (fragment, _TRAILING_COMMA.sub(r"\1", fragment)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, ValueError):
            pass
        try:
            value = ast.literal_eval(attempt)  # single-quoted "JSON" from Python-minded models
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (dict, list)):
            return value
    return None


def _candidates(text: str, opener: str) -> list[str]:
    """Substrings from each ``opener`` to its matching closer (string-aware bracket count)."""
    closer = "}" if opener == "{" else "]"
    out = []
    start = text.find(opener)
    while start >= 0 and len(out) < 8:
        depth, quote, escaped = 0, "", False
        for i in range(start, len(text)):
            ch = text[i]
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch in "\"'" and (ch == '"' or text[i - 1] in "[{,: "):
                quote = ch
            elif ch == opener:
                depth += 1
            elif ch == closer:
                depth -= 1
                if depth == 0:
                    out.append(text[start : i + 1])
                    break
        start = text.find(opener, start + 1)
    return out


def parse_json(text: str, kind: type) -> Any:
    """The first ``dict`` or ``list`` (``kind``) found in ``text``, or ``None``."""
    if not isinstance(text, str):
        return None
    pieces = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    opener = "{" if kind is dict else "["
    for piece in pieces:
        whole = _decode(piece.strip())
        if isinstance(whole, kind):
            return whole
        for fragment in _candidates(piece, opener):
            value = _decode(fragment)
            if isinstance(value, kind):
                return value
    return None


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    return [" ".join(v.split()) for v in value if isinstance(v, str) and v.strip()]


def parse_string_list(text: str) -> tuple[list[str] | None, bool]:
    """A list of strings from a JSON list, else from bullet lines; ``(items, lenient)``.

    ``items`` is ``None`` when nothing usable was found. ``lenient`` is True
    when the bullet-line fallback was used.
    """
    value = parse_json(text, list)
    if value is None:
        obj = parse_json(text, dict)
        if obj is not None and len(obj) == 1:
            value = next(iter(obj.values()))  # {"phrases": [...]}
    items = _strings(value) if value is not None else None
    if items is not None:
        return items, False
    if not isinstance(text, str):
        return None, False
    bullets = [
        m.group(1).strip().strip('"').strip() for m in map(_BULLET.match, text.splitlines()) if m
    ]
    bullets = [b for b in bullets if b]
    return (bullets, True) if bullets else (None, False)


def parse_code_spans(text: str) -> tuple[dict[str, list[str]] | None, bool]:
    """``{code: [spans]}`` from a JSON object, else from ``CODE: "a", "b"`` lines.

    Codes are canonicalised; values that are not strings or lists of strings
    are dropped. Returns ``(mapping, lenient)``; mapping is ``None`` when
    nothing usable was found.
    """
    obj = parse_json(text, dict)
    lenient = False
    if obj is None and isinstance(text, str):
        obj = {}
        for line in text.splitlines():
            m = _CODE_LINE.match(line)
            if m:
                quoted = [a or b for a, b in _QUOTED.findall(m.group(2))]
                obj[m.group(1)] = quoted or [p.strip() for p in m.group(2).split(";") if p.strip()]
        lenient = bool(obj)
        if not obj:
            return None, False
    if obj is None:
        return None, False
    if not obj:
        return {}, lenient  # the model said: no evidence for any code
    out: dict[str, list[str]] = {}
    for key, value in obj.items():
        code = canonical_code(str(key))
        spans = _strings(value)
        if is_well_formed(code) and spans is not None:
            out.setdefault(code, []).extend(spans)
    if not out and obj:
        return None, lenient
    return out, lenient
