"""Code each evidence phrase again with the span prompt (``infer.span_recode``; beyond the paper).

The document answer lists evidence, then codes. A model trained on span pairs (Table 3
rows 4-5) can map a phrase to its code under the span prompt ("ICD-10-CM code for this
evidence: CAD" -> ``I25.10``) even when its document-level code list leaves that code out:
the codes section of a document answer carries the prior of the training documents' code
lists, in which unseen codes never occur (issue 12: row 5 copies "CAD" as evidence and
writes no I25.10). This step asks the span question for every distinct evidence phrase
of a batch of predictions, in one batched generation, and adds each phrase's first code
to its document's codes. Scores (``code_scores``) of added codes are their
log-probabilities under the span prompt when the engine records them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ccl.data.prompts import span_prompt
from ccl.generation.chat import render_prompt
from ccl.predict.parser import parse_output
from ccl.predict.scores import code_scores


@contextmanager
def progress_unit(engine: Any, unit: str) -> Iterator[None]:
    """Have ``engine``'s progress count ``unit`` (e.g. ``evidence phrases``) while inside;
    engines without progress ignore it."""
    before = getattr(engine, "progress_unit", "documents")
    try:
        engine.progress_unit = unit
    except AttributeError:  # an engine object that takes no new attribute
        yield
        return
    try:
        yield
    finally:
        engine.progress_unit = before


SPAN_ANSWER_TOKENS = 24  # one "CODE - description" line; the code comes first


def recode_phrases(engine: Any, tokenizer: Any, phrases: Sequence[str], use_chat_template: bool,
                   allowed: set[str] | None = None) -> dict[str, tuple[str, float | None]]:
    """``phrase -> (code, log-probability or None)`` for each phrase the model codes.

    One batched ``engine.complete`` over the span prompts of ``phrases``; a phrase whose
    answer holds no code (or, with ``allowed``, none of them) is left out.
    """
    phrases = list(dict.fromkeys(p for p in phrases if p.strip()))
    if not phrases:
        return {}
    prompts = [render_prompt(tokenizer, span_prompt(p), use_chat_template) for p in phrases]
    out: dict[str, tuple[str, float | None]] = {}
    with progress_unit(engine, "evidence phrases"):
        generations = engine.complete(prompts, SPAN_ANSWER_TOKENS)
    for phrase, gen in zip(phrases, generations, strict=True):
        codes = [c for c in parse_output(gen.text).codes if allowed is None or c in allowed]
        if not codes:
            continue
        score = None
        if getattr(gen, "logprobs", None) is not None:
            score = code_scores(tokenizer, gen.token_ids, gen.logprobs, codes[:1]).get(codes[0])
        out[phrase] = (codes[0], score)
    return out


def add_span_codes(rows: list[dict[str, Any]], coded: dict[str, tuple[str, float | None]]) -> int:
    """Append to each prediction row the codes of its evidence phrases (in place); returns
    the number of codes added. A row's ``span_codes`` lists them."""
    added = 0
    for row in rows:
        extra = [coded[p] for p in row.get("evidence", []) if p in coded]
        new = list(dict.fromkeys(c for c, _ in extra if c not in row["codes"]))
        row["codes"] = [*row["codes"], *new]
        row["span_codes"] = new
        if "code_scores" in row:
            for code, score in extra:
                if code in new and score is not None:
                    row["code_scores"][code] = max(score, row["code_scores"].get(code, score))
        added += len(new)
    return added
