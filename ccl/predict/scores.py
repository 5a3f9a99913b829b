"""A score for each generated code: the log-probability of its tokens, from the same generation.

The engines record the log-probability of every generated token
(:class:`ccl.generation.logprobs.TokenLogprobRecorder` under HF generate, ``logprobs=0``
under vLLM) in each :class:`~ccl.generation.record.Generation`.

:func:`code_scores` maps the parsed codes back onto the generated text and sums the
log-probabilities of the tokens that overlap each code's characters (with
``backbone.code_tokens=true`` a code is one token, and its score is that token's). A
code is located at its first occurrence after the last ``Codes:`` header (anywhere when
there is no header), the way the parser reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccl.icd.codes import CODE_PATTERN, canonical_code, is_well_formed
from ccl.records import CODES_HEADER


def token_char_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """End offset (in the decoded text of ``ids``) of each token: len(decode(ids[:k+1]))."""
    ends, best = [], 0
    for k in range(len(ids)):
        best = max(best, len(tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True)))
        ends.append(best)
    return ends


def code_spans(text: str, codes: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Character span of each code's first occurrence after the last codes header."""
    at = text.rfind(CODES_HEADER)
    start = at + len(CODES_HEADER) if at >= 0 else 0
    spans: dict[str, tuple[int, int]] = {}
    wanted = {canonical_code(c) for c in codes}
    for base in ((start, 0) if start else (0,)):
        for m in CODE_PATTERN.finditer(text, base):
            head, after_dot, tail = m.groups()
            code = canonical_code(head + (after_dot if after_dot is not None else (tail or "")))
            if code in wanted and code not in spans and is_well_formed(code):
                spans[code] = (m.start(), m.end())
    return spans


def code_scores(
    tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float], codes: Sequence[str]
) -> dict[str, float]:
    """``code -> summed log-probability`` of its tokens (codes not found in the text are left out).

    ``ids`` are the generated token ids (cut at the stop token) and ``logprobs`` one value
    per id.
    """
    if len(ids) != len(logprobs):
        raise ValueError(f"{len(ids)} token ids but {len(logprobs)} log-probabilities")
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    ends = token_char_ends(tokenizer, ids)
    out: dict[str, float] = {}
    for code, (s, e) in code_spans(text, codes).items():
        total, begin = 0.0, 0
        for end, lp in zip(ends, logprobs, strict=True):
            if begin < e and end > s:
                total += lp
            begin = end
        out[code] = round(total, 6)
    return out


def attach_code_scores(engine: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> bool:
    """Add ``code_scores`` (code -> log-probability) to each prediction row from the engine's
    last call; False (rows unchanged) when the engine recorded no log-probabilities."""
    ids, lps = getattr(engine, "last_ids", None), getattr(engine, "last_logprobs", None)
    if not ids or not lps or len(ids) != len(rows):
        return False
    for row, i, lp in zip(rows, ids, lps, strict=True):
        row["code_scores"] = code_scores(tokenizer, i, lp, row["codes"])
    return True


def document_code_scores(
    tokenizer: Any, generations: Sequence[Any], window_codes: Sequence[Sequence[str]], codes: Sequence[str]
) -> dict[str, float] | None:
    """``code -> log-probability`` for one document coded by one or more generations.

    ``generations`` are the document's :class:`~ccl.generation.record.Generation` objects
    (one per prompt; several when the note was coded in windows, ``infer.long_notes=window``),
    ``window_codes`` the codes parsed from each, ``codes`` the document's merged codes. A
    code's score is its :func:`code_scores` value in each generation that wrote it, and the
    highest of these over the windows (the most confident window decides, as
    :func:`ccl.predict.parser.merge_outputs` keeps a code any window wrote). Returns None
    when a generation carries no log-probabilities (the engine did not record them).
    """
    if not generations or any(getattr(g, "logprobs", None) is None for g in generations):
        return None
    best: dict[str, float] = {}
    for gen, found in zip(generations, window_codes, strict=True):
        for code, lp in code_scores(tokenizer, gen.token_ids, gen.logprobs, found).items():
            best[code] = max(lp, best.get(code, lp))
    wanted = {canonical_code(c) for c in codes}
    return {c: v for c, v in best.items() if c in wanted}
