"""Grammars that constrain the silver tier's LLM answers (structured decoding).

The grammars are written in llguidance's Lark dialect
(https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md), which both
generating backends that run on this machine understand: ``llm=hf`` applies them with
llguidance as a logits processor (:class:`ccl.spans.llm.hf_backend.GrammarProcessor`),
``llm=vllm`` passes them as structured outputs (``StructuredOutputsParams(grammar=...)``
on vLLM's ``guidance`` backend, the same library).

* Extraction (:func:`extraction_grammar`): one JSON object whose keys are exactly the
  note's codes, in order, each with a list of at most ``max_spans`` strings. Every string
  is a run of whole words copied from the note (llguidance's ``substring_words`` lexeme)
  of at most ``max_words`` words, so an answer can only cite text the note has; it is
  located in the note afterwards (:func:`locate_copy`).
* Refinement (:func:`refinement_grammar`): a JSON list of at most ``k`` strings, each one
  of the candidate phrases verbatim.

The note enters the grammar in a JSON-safe form (:func:`json_safe`): quotes, backslashes
and control characters become spaces, one character for one, so a copied span has the
same offsets in the note as in the safe text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

MAX_SPANS_PER_CODE = 2  # strings per code in a constrained extraction answer
MAX_WORDS_PER_SPAN = 8  # words per copied span (the prompt asks for 1 to 8)
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f\u2028\u2029\s]')


def json_safe(text: str) -> str:
    """``text`` with every character a JSON string would escape, and every whitespace
    character, replaced by one space (same length, same offsets)."""
    return _UNSAFE.sub(" ", text)


def _literal(text: str) -> str:
    """A Lark string literal matching ``text`` exactly."""
    return json.dumps(text)


def _span_list(rule: str, max_items: int) -> str:
    more = f' (", " {rule}){{0,{max_items - 1}}}' if max_items > 1 else ""
    return f'"[" ({rule}{more})? "]"'


def extraction_grammar(
    note: str,
    codes: Sequence[str],
    max_spans: int = MAX_SPANS_PER_CODE,
    max_words: int = MAX_WORDS_PER_SPAN,
) -> str:
    """The Lark grammar of an extraction answer for ``note`` and its ``codes``:
    ``{"CODE": ["span", ...], ...}`` with the codes in order, each span whole words of the
    note (at most ``max_words``), at most ``max_spans`` per code. Raises ``ValueError`` for
    no codes or a limit below 1."""
    if not codes:
        raise ValueError("extraction_grammar: a note without codes has nothing to extract")
    if max_spans < 1 or max_words < 1:
        raise ValueError(f"extraction_grammar: max_spans={max_spans} and max_words={max_words} must be >= 1")
    fields = ' ", " '.join(f'{_literal(json.dumps(c, ensure_ascii=False) + ": ")} spans' for c in dict.fromkeys(codes))
    words = json.dumps({"substring_words": json_safe(note)})
    return "\n".join([
        f'start: "{{" {fields} "}}"',
        f"spans: {_span_list('span', max_spans)}",
        'span: "\\"" COPY "\\""',
        f"COPY: %regex {words} & /[^ ]+( +[^ ]+){{0,{max_words - 1}}}/",
        "",
    ])


def refinement_grammar(candidates: Sequence[str], k: int) -> str:
    """The Lark grammar of a refinement answer: a JSON list of at most ``k`` of the
    ``candidates``, each copied verbatim. Raises ``ValueError`` for no candidates or ``k < 1``."""
    unique = list(dict.fromkeys(candidates))
    if not unique or k < 1:
        raise ValueError(f"refinement_grammar: needs candidates and k >= 1 (got {len(unique)}, k={k})")
    choices = " | ".join(_literal(json.dumps(c, ensure_ascii=False)) for c in unique)
    return "\n".join([f"start: {_span_list('choice', k)}", f"choice: {choices}", ""])


def locate_copy(span: str, note: str) -> tuple[int, int] | None:
    """Where a copied ``span`` is in ``note`` (first occurrence): exactly, else ignoring case
    and runs of whitespace (the note's own spacing is kept in the offsets). ``None`` when the
    span is not a copy."""
    words = span.split()
    if not words:
        return None
    i = note.find(span)
    if i >= 0:
        return i, i + len(span)
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, note, flags=re.IGNORECASE)
    if m is None:
        safe = json_safe(note)  # a span copied from the JSON-safe text (quotes became spaces)
        m = re.search(pattern, safe, flags=re.IGNORECASE)
    return (m.start(), m.end()) if m else None
