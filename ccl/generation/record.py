"""What an engine returns per prompt, and the answer-length bound both engines decode to.

Both engines (:class:`~ccl.generation.hf_engine.HFEngine`,
:class:`~ccl.generation.vllm_engine.VLLMEngine`) return one :class:`Generation` per
prompt from ``complete``: the text, its token ids, and why decoding ended, in vLLM's
words (``CompletionOutput.finish_reason``: ``"stop"`` when a stop token ended it,
``"length"`` when ``max_new_tokens`` did). A ``"length"`` answer was cut by the bound:
its codes (written after the evidence) may be missing, so runs count these
(``n_truncated_answers`` in ``metrics.json``).

The bound itself is derived from the training answers (:func:`answer_token_bound`):
their 99th-percentile length in tokens plus a margin, so a model that writes answers
like the ones it was trained on is not cut, while a looping one is stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]

ANSWER_QUANTILE = 0.99  # share of training answers the bound holds before its margin
ANSWER_MARGIN = 1.25  # the bound is this many times that quantile ...
ANSWER_MIN_EXTRA = 32  # ... and at least this many tokens above it


@dataclass
class Generation:
    """One prompt's output: ``text`` decoded from ``token_ids`` (stop token excluded).

    ``logprobs``: when the engine records them (issue 16's per-code scores), the
    log-probability of each token of ``token_ids`` (same length), else None.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    logprobs: list[float] | None = None

    @property
    def truncated(self) -> bool:
        """Decoding hit the length bound before a stop token."""
        return self.finish_reason == "length"


def answer_length_stats(lengths: Sequence[int]) -> dict[str, Any]:
    """Summary of training answer lengths (tokens, EOS included) and the bound derived from them.

    Returns ``{"n", "p50", "p99", "max", "bound"}``; ``bound`` is
    ``max(ceil(ANSWER_MARGIN * p99), p99 + ANSWER_MIN_EXTRA)``. The quantile is the
    nearest-rank one (an observed length). Raises ``ValueError`` on no lengths.
    """
    if not lengths:
        raise ValueError("no training answers to derive the answer-length bound from")
    ordered = sorted(int(n) for n in lengths)

    def rank(q: float) -> int:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    p99 = rank(ANSWER_QUANTILE)
    return {"n": len(ordered), "p50": rank(0.5), "p99": p99, "max": ordered[-1],
            "bound": answer_token_bound(p99)}


def answer_token_bound(p99: int) -> int:
    """``max_new_tokens`` for answers whose 99th-percentile length is ``p99`` tokens."""
    return max(math.ceil(ANSWER_MARGIN * p99), int(p99) + ANSWER_MIN_EXTRA)


def finish_reason(new_ids: Sequence[int], stop_ids: set[int], max_new_tokens: int) -> FinishReason:
    """``"stop"`` when a stop token ended ``new_ids`` (or it is shorter than the bound), else ``"length"``."""
    if any(t in stop_ids for t in new_ids) or len(new_ids) < int(max_new_tokens):
        return "stop"
    return "length"
