"""A score for each generated code: the log-probability of its tokens, from the same generation.

:class:`TokenLogprobRecorder` is the last ``LogitsProcessor`` of a generate call: at each
step it sees the final (processed) scores, and at the next step the token that was
chosen from them, and records that token's log-probability under the processed
distribution (with restricted decoding, renormalised over the allowed tokens; a token
forced by the repeat guard gets 0). No score tensors are kept beyond one step.

:func:`code_scores` maps the parsed codes back onto the generated text and sums the
log-probabilities of the tokens that overlap each code's characters (with
``backbone.code_tokens=true`` a code is one token, and its score is that token's). A
code is located at its first occurrence after the last ``Codes:`` header (anywhere when
there is no header), the way the parser reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from ccl.data.prompts import CODES_HEADER
from ccl.icd.codes import CODE_PATTERN, canonical_code, is_well_formed


class TokenLogprobRecorder(LogitsProcessor):
    """Records the log-probability of every chosen token; see the module doc.

    After generate, call :meth:`finish` with the last generated token of each row;
    ``logprobs[row]`` then holds one value per generated token.
    """

    def __init__(self, rows: int, prompt_width: int) -> None:
        self.width = int(prompt_width)
        self.logprobs: list[list[float]] = [[] for _ in range(rows)]
        self._prev: torch.Tensor | None = None  # (rows, vocab) log-softmax of the last step

    def _take(self, chosen: torch.Tensor) -> None:
        assert self._prev is not None
        values = self._prev.gather(1, chosen.view(-1, 1).to(self._prev.device)).view(-1).tolist()
        for row, v in enumerate(values):
            self.logprobs[row].append(float(v))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev is not None and input_ids.shape[1] > self.width:
            self._take(input_ids[:, -1])
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> list[list[float]]:
        """Record the final step's chosen tokens; return the per-row log-probabilities."""
        if self._prev is not None:
            self._take(last_tokens)
            self._prev = None
        return self.logprobs


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

    ``generations`` are the document's :class:`~ccl.inference.generation.Generation` objects
    (one per prompt; several when the note was coded in windows, ``infer.long_notes=window``),
    ``window_codes`` the codes parsed from each, ``codes`` the document's merged codes. A
    code's score is its :func:`code_scores` value in each generation that wrote it, and the
    highest of these over the windows (the most confident window decides, as
    :func:`ccl.inference.parser.merge_outputs` keeps a code any window wrote). Returns None
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
