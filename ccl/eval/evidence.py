"""Evidence precision, recall and F1 of predicted phrases against gold spans.

Two deterministic matching rules, both one-to-one (a gold span and a predicted
phrase are matched at most once):

* **exact** - a predicted phrase matches a gold span when their normalised
  strings are equal. Normalisation: Unicode NFC (a note stored with decomposed
  accents, NFD, matches the composed text a tokenizer writes), lower case,
  whitespace runs collapsed to one space, leading and trailing punctuation
  (Unicode category P*) and whitespace stripped. Within a document,
  ``tp = sum over strings s of min(#pred s, #gold s)``.
* **overlap** - each predicted phrase is first located in the note: its
  normalised string is searched in the note put in NFC (each base character with
  its combining marks composed, mapped back to the note's offsets), lower-cased
  with whitespace runs collapsed, and it takes the first occurrence that does not overlap a range
  taken by an earlier phrase of the same document (if every occurrence does, the
  first occurrence). Phrases not found are false positives. Then, in document
  order of the located ranges (ties: output order), each phrase matches the first
  unmatched gold span, in document order, whose character range overlaps its own
  (half-open ranges sharing at least one character).

Gold spans are deduplicated by (start, end) within a document: one mention that
supports two codes is one evidence span; the same text at different offsets
counts separately. Phrases that normalise to the empty string never match.
Scores are micro-averaged over all phrases and spans of all documents; a rate
with a zero denominator is 0.0.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

GoldSpan = tuple[int, int, str]
EvidenceDoc = tuple[str, Sequence[GoldSpan], Sequence[str]]


def _is_edge_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


FORM = "NFC"


def _lower(text: str) -> str:
    # Per character, so that the note and the phrases are folded the same way
    # and every folded character maps back to one note offset.
    return "".join(ch.lower() for ch in text)


def _clusters(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each base character with the combining marks that follow it."""
    bounds: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if bounds and unicodedata.combining(ch):
            bounds[-1] = (bounds[-1][0], i + 1)
        else:
            bounds.append((i, i + 1))
    return bounds


def normalise(text: str) -> str:
    """NFC, lower case, whitespace collapsed, leading/trailing punctuation stripped."""
    collapsed = " ".join(_lower(unicodedata.normalize(FORM, text)).split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_junk(collapsed[start]):
        start += 1
    while end > start and _is_edge_junk(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _searchable(note: str) -> tuple[str, list[tuple[int, int]]]:
    """The note in NFC, lower-cased, whitespace runs collapsed, and each char's note range.

    Each character of the result maps back to the ``(start, end)`` note range of the
    base character and combining marks it was composed from.
    """
    chars: list[str] = []
    ranges: list[tuple[int, int]] = []
    for start, end in _clusters(note):
        piece = note[start:end]
        if piece.isspace():
            if chars and chars[-1] == " ":
                continue
            chars.append(" ")
            ranges.append((start, end))
            continue
        for folded in _lower(unicodedata.normalize(FORM, piece)):
            chars.append(folded)
            ranges.append((start, end))
    return "".join(chars), ranges


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def locate(note: str, phrases: Sequence[str]) -> list[tuple[int, int] | None]:
    """Note character range (start, end) of each phrase, ``None`` when not found."""
    haystack, ranges_of = _searchable(note)
    taken: list[tuple[int, int]] = []
    ranges: list[tuple[int, int] | None] = []
    for phrase in phrases:
        needle = normalise(phrase)
        first: tuple[int, int] | None = None
        free: tuple[int, int] | None = None
        at = haystack.find(needle) if needle else -1
        while at >= 0 and free is None:
            span = (ranges_of[at][0], ranges_of[at + len(needle) - 1][1])
            first = first or span
            if not any(_overlaps(span, t) for t in taken):
                free = span
            at = haystack.find(needle, at + 1)
        chosen = free or first
        if chosen is not None:
            taken.append(chosen)
        ranges.append(chosen)
    return ranges


def _gold_spans(doc_index: int, note: str, spans: Sequence[Any]) -> list[GoldSpan]:
    unique: dict[tuple[int, int], GoldSpan] = {}
    for span in spans:
        start, end, text = (span.start, span.end, span.text) if hasattr(span, "start") else span[:3]
        if not (0 <= start <= end <= len(note)):
            raise ValueError(
                f"evidence doc {doc_index}: gold span ({start}, {end}, {text!r}) is outside "
                f"the note of length {len(note)}"
            )
        unique.setdefault((start, end), (start, end, text))
    return sorted(unique.values(), key=lambda s: (s[0], s[1]))


def _exact_tp(gold: list[GoldSpan], phrases: Sequence[str]) -> int:
    gold_counts = Counter(normalise(text) for _, _, text in gold)
    pred_counts = Counter(normalise(p) for p in phrases)
    return sum(min(n, gold_counts[s]) for s, n in pred_counts.items() if s)


def _overlap_tp(note: str, gold: list[GoldSpan], phrases: Sequence[str]) -> int:
    located = [(r, i) for i, r in enumerate(locate(note, phrases)) if r is not None]
    unmatched = [(s, e) for s, e, _ in gold]
    tp = 0
    for rng, _ in sorted(located):
        hit = next((g for g in unmatched if _overlaps(rng, g)), None)
        if hit is not None:
            unmatched.remove(hit)
            tp += 1
    return tp


def _rates(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return precision, recall, f1


def evidence_metrics(docs: Sequence[EvidenceDoc]) -> dict[str, float | int]:
    """Micro exact and overlap P/R/F1 over ``(note, gold spans, predicted phrases)`` docs.

    Gold spans are ``(start, end, text)`` tuples or objects with those attributes
    (:class:`ccl.records.EvidenceSpan`). Keys: exact_{precision,recall,f1},
    overlap_{precision,recall,f1}, exact_tp, overlap_tp, n_pred, n_gold, n_docs.
    """
    exact_tp = overlap_tp = n_pred = n_gold = 0
    for i, (note, spans, phrases) in enumerate(docs):
        if isinstance(phrases, str):
            raise TypeError(f"evidence doc {i}: predicted evidence must be a list of strings, got a string")
        gold = _gold_spans(i, note, spans)
        exact_tp += _exact_tp(gold, phrases)
        overlap_tp += _overlap_tp(note, gold, phrases)
        n_pred += len(phrases)
        n_gold += len(gold)
    ep, er, ef = _rates(exact_tp, n_pred, n_gold)
    op, orr, of = _rates(overlap_tp, n_pred, n_gold)
    return {
        "exact_precision": ep,
        "exact_recall": er,
        "exact_f1": ef,
        "overlap_precision": op,
        "overlap_recall": orr,
        "overlap_f1": of,
        "exact_tp": exact_tp,
        "overlap_tp": overlap_tp,
        "n_pred": n_pred,
        "n_gold": n_gold,
        "n_docs": len(docs),
    }
