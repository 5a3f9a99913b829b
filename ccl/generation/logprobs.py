"""The log-probability of every generated token, recorded during HF ``generate``.

:class:`TokenLogprobRecorder` is the last ``LogitsProcessor`` of a generate call: at each
step it sees the final (processed) scores, and at the next step the token that was
chosen from them, and records that token's log-probability under the processed
distribution (with restricted decoding, renormalised over the allowed tokens; a token
forced by the repeat guard gets 0). No score tensors are kept beyond one step.
:mod:`ccl.predict.scores` turns these into per-code scores.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


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
