"""A decoding guard against the loops of small or briefly trained models.

Greedy decoding of an undertrained model often falls into a loop: the same
evidence line again and again until ``max_new_tokens`` runs out, so the answer
never reaches its codes (seen on SmolLM2-135M after a few dozen CPU steps).
The parser keeps each evidence phrase and code once, so copies add nothing.
:class:`RepeatedLineGuard` reads each row's generated text as it grows, and when
a line loops it ends that section: the third copy of an evidence line (a phrase
the note mentions twice is honestly listed twice) forces the codes header next,
the second copy of a code line forces a stop token. The copy stays in the output. A loop inside one line ("unspecified,
unspecified, unspecified, ...": the same few tokens :data:`PERIOD_REPEATS` times
in a row) ends that line with a newline.

Each row is guarded on its own, so batched and one-at-a-time decoding still
give the same output. The rule (:class:`LineLoopRule`) is engine-free: HF generate runs
it as a logits processor (:class:`RepeatedLineGuard`), vLLM as a per-request logits
processor (:mod:`ccl.generation.vllm_guard`), so both engines cut at the same token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from ccl.records import CODES_HEADER

# The guard under vLLM (ccl/generation/vllm_guard.py, which imports vLLM): the class vLLM loads by
# name (LLM(logits_processors=[...])) and the SamplingParams.extra_args key that switches it on.
VLLM_GUARD_FQCN = "ccl.generation.vllm_guard:RepeatedLineProcessor"
GUARD_ARG = "ccl_repeat_guard"  # {"in_codes": bool, "stop_id": int}
GUARD_VERSION = "2"  # part of the predictions' cache key: a change here redoes them
EVIDENCE_COPIES = 3  # copies of one evidence line that count as a loop
PERIOD_REPEATS = 4  # copies of the same token chunk in a row that count as a loop
MAX_PERIOD = 8  # longest chunk (in tokens) checked


def periodic_tail(tokens: Sequence[int], repeats: int = PERIOD_REPEATS, max_period: int = MAX_PERIOD) -> bool:
    """Whether ``tokens`` ends with one chunk of 1..``max_period`` tokens ``repeats`` times in a row."""
    for p in range(1, max_period + 1):
        if len(tokens) < p * repeats:
            break
        chunk = list(tokens[-p:])
        if all(list(tokens[-(k + 1) * p : len(tokens) - k * p]) == chunk for k in range(1, repeats)):
            return True
    return False


def starts_in_codes(prompt: str) -> bool:
    """Whether generation after ``prompt`` starts in the codes section (human-evidence mode)."""
    return prompt.rstrip().endswith(CODES_HEADER)


def repeated_last_line(text: str, in_codes: bool = False) -> bool:
    """Whether the last complete line of ``text`` is a loop in its section.

    Codes are a set: a code line written twice is a loop. An evidence phrase may
    honestly be listed twice (a note that mentions it twice; 30-40% of demo notes
    do), never three times: the third copy of a line is a loop.
    """
    if not text.endswith("\n"):
        return False
    codes = in_codes or CODES_HEADER in text
    section = text.rsplit(CODES_HEADER, 1)[-1] if CODES_HEADER in text else text
    lines = [line.strip() for line in section.split("\n")[:-1]]
    last = lines[-1] if lines else ""
    return bool(last) and lines[:-1].count(last) >= (1 if codes else EVIDENCE_COPIES - 1)


class LineLoopRule:
    """The guard's rule for one answer: which token (if any) it forces next.

    The same rule runs under HF generate (:class:`RepeatedLineGuard`, one per row) and
    vLLM (:mod:`ccl.generation.vllm_guard`, one per request), so both engines cut a loop
    at the same token. ``in_codes``: generation starts in the codes section
    (:func:`starts_in_codes`); ``stop_id``: the token that ends an answer.
    """

    def __init__(self, tokenizer: Any, in_codes: bool, stop_id: int) -> None:
        self.tokenizer = tokenizer
        self.in_codes = bool(in_codes)
        self.stop_id = int(stop_id)
        self.header_ids = tokenizer.encode(f"{CODES_HEADER}\n", add_special_tokens=False)
        self.newline_ids = tokenizer.encode("\n", add_special_tokens=False)
        self.queue: list[int] = []  # tokens still to force
        self.fired = 0  # how often this answer was cut (for reports)

    def _newline_ended(self, token: int) -> bool:
        return self.tokenizer.decode([token]).endswith("\n")

    def next_forced(self, generated: Sequence[int]) -> int | None:
        """The token forced after ``generated`` (the answer's token ids so far), or None.

        Call once per decoding step, in order: the rule keeps the rest of a forced
        sequence (the codes header) between calls.
        """
        if not generated:
            return None
        token = int(generated[-1])
        if not self.queue and not self._newline_ended(token):
            if periodic_tail(list(generated[-PERIOD_REPEATS * MAX_PERIOD :])):
                self.queue = list(self.newline_ids)
                self.fired += 1
        elif not self.queue:
            text = self.tokenizer.decode(list(generated), skip_special_tokens=True)
            if repeated_last_line(text, self.in_codes):
                codes = self.in_codes or CODES_HEADER in text
                self.queue = [self.stop_id] if codes else list(self.header_ids)
                self.fired += 1
        return self.queue.pop(0) if self.queue else None


def vllm_guard_args(in_codes: bool, stop_id: int) -> dict[str, Any]:
    """``SamplingParams.extra_args`` switching the guard on for one vLLM request."""
    return {GUARD_ARG: {"in_codes": bool(in_codes), "stop_id": int(stop_id)}}


def guard_fires(tokenizer: Any, token_ids: Sequence[int], in_codes: bool, stop_id: int,
                stopped: bool = False) -> int:
    """How often the guard cut the answer ``token_ids`` (without its stop token; ``stopped``: it
    ended with one rather than at the length bound). Replayed: the rule is a function of the
    tokens so far, so the cuts of an engine that ran it elsewhere (vLLM's engine core) are
    counted here; a cut after the last token counts only if the answer then stopped."""
    rule = LineLoopRule(tokenizer, in_codes, stop_id)
    for k in range(1, len(token_ids) + (1 if stopped else 0)):
        rule.next_forced(token_ids[:k])
    return rule.fired


class RepeatedLineGuard(LogitsProcessor):
    """HF generate's logits processor: :class:`LineLoopRule` per row; see the module doc."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_width: int,
        in_codes: Sequence[bool],
        stop_id: int,
        finished_ids: Sequence[int] = (),
    ) -> None:
        self.width = int(prompt_width)
        self.rules = [LineLoopRule(tokenizer, c, stop_id) for c in in_codes]
        self.finished_ids = {int(i) for i in finished_ids} | {int(stop_id)}  # rows that ended

    @property
    def fired(self) -> list[int]:
        """How often each row was cut."""
        return [rule.fired for rule in self.rules]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.width :]
        if generated.shape[1] == 0:
            return scores
        for row, tokens in enumerate(generated.tolist()):
            if tokens[-1] in self.finished_ids:  # generate pads a finished row; nothing to guard
                continue
            forced = self.rules[row].next_forced(tokens)
            if forced is not None:
                scores[row] = torch.finfo(scores.dtype).min
                scores[row, forced] = 0.0
        return scores
