"""Decoding restricted to valid codes (``infer.restrict_codes``).

At a *code position* — the start of a line in the codes section (after the
``Codes:`` header, or from the first token in human-evidence mode, whose prompt ends
with the header) — the model may write only one of the allowed codes (billable codes
of the model's code vocabulary, :func:`allowed_codes`), the end of the answer or a
newline. Inside a code, only its continuations; once a code is complete, no token that
would extend it (a token starting with a letter, digit or dot). The rest of the line
(`` - description``) and the evidence section are free.

HF generate: :class:`CodeTrieProcessor`, a ``LogitsProcessor`` walking a prefix trie
over the codes' token ids (with ``backbone.code_tokens=true`` each code is one token,
and the trie is a mask over the code-token ids). Codes are tokenised alone; the
byte-level BPE pre-tokenisers of the tiny backbone and SmolLM2 split a code from the
newline before it and the `` -`` after it, so that is how it is tokenised in the
answers the model was trained on (tested).

vLLM: :func:`answer_regex` builds the same grammar as a regular expression for
vLLM's structured outputs (:func:`vllm_structured_outputs`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from ccl.generation.guards import starts_in_codes
from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList
from ccl.records import CODES_HEADER, EVIDENCE_HEADER

_CONTINUES_CODE = re.compile(r"^[A-Za-z0-9.]")
_SHARED: dict[tuple, tuple] = {}  # see CodeTrieProcessor.__init__


def allowed_codes(codes: Iterable[str], tab: TabularList) -> list[str]:
    """The billable codes among ``codes`` (canonical, sorted): what restricted decoding may write."""
    return sorted({canonical_code(c) for c in codes if tab.is_billable(c)})


class _Trie:
    """Token-id prefix trie; node 0 is the root; ``terminal`` nodes end a code."""

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.terminal: set[int] = set()
        for seq in sequences:
            node = 0
            for t in seq:
                nxt = self.children[node].get(int(t))
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][int(t)] = nxt
                    self.children.append({})
                node = nxt
            self.terminal.add(node)

    def step(self, node: int, token: int) -> int | None:
        return self.children[node].get(int(token))


class CodeTrieProcessor(LogitsProcessor):
    """Masks the logits at code positions to the allowed codes' token paths; see the module doc.

    ``prompt_width`` is the padded prompt length of the batch (generated tokens follow it);
    ``in_codes`` tells per row whether generation starts in the codes section.
    """

    def __init__(
        self,
        tokenizer: Any,
        codes: Sequence[str],
        prompt_width: int,
        in_codes: Sequence[bool],
        stop_ids: Sequence[int],
    ) -> None:
        if not codes:
            raise ValueError("infer.restrict_codes: no allowed codes (the label space has no billable code)")
        self.width = int(prompt_width)
        self.tokenizer = tokenizer
        self.stop_ids = sorted({int(i) for i in stop_ids})
        self.in_codes = [bool(x) for x in in_codes]
        # The trie, token texts and masks are built once per (tokenizer, codes, stops) and
        # shared by the processors of every batch (a 49k-token vocabulary takes seconds).
        key = (id(tokenizer), tuple(codes), tuple(self.stop_ids))
        if key not in _SHARED:
            _SHARED.clear()
            # The tokenizer is kept with its entry, so its id cannot be reused by another one.
            _SHARED[key] = (_Trie(tokenizer.encode(c, add_special_tokens=False) for c in codes), {}, {}, [None],
                            tokenizer)
        self.trie, self._text, self._allowed, self._free, _ = _SHARED[key]
        self.masked_steps = 0  # (row, step) pairs the processor restricted, for reports

    def _tok(self, t: int) -> str:
        if t not in self._text:
            self._text[t] = self.tokenizer.decode([t])
        return self._text[t]

    def _node_mask(self, node: int, vocab: int, device: torch.device) -> torch.Tensor:
        """Boolean mask of the tokens allowed at a trie node (True: allowed)."""
        if node not in self._allowed:
            mask = torch.zeros(vocab, dtype=torch.bool)
            if node in self.trie.terminal:
                if self._free[0] is None:
                    free = torch.ones(vocab, dtype=torch.bool)
                    for t in range(vocab):
                        text = self._tok(t)
                        if text and _CONTINUES_CODE.match(text):
                            free[t] = False
                    self._free[0] = free
                mask |= self._free[0]
            ids = list(self.trie.children[node])
            if node == 0:
                ids += [*self.stop_ids, *self.tokenizer.encode("\n", add_special_tokens=False)]
            mask[[i for i in ids if i < vocab]] = True
            self._allowed[node] = mask.to(device)
        return self._allowed[node]

    def _state(self, tokens: list[int], starts_in_codes: bool) -> int | None:
        """Trie node for the next token, or None when the next token is free."""
        text = "".join(self._tok(t) for t in tokens)
        if starts_in_codes:
            start = 0
        else:
            at = text.rfind(CODES_HEADER)
            if at < 0 or "\n" not in text[at:]:
                return None
            start = at
        # The tokens of the current line: after the last token ending with a newline.
        line: list[int] = []
        pos, line_start_char = 0, None
        for t in tokens:
            piece = self._tok(t)
            pos += len(piece)
            if pos <= start:
                continue
            if piece.endswith("\n"):
                line, line_start_char = [], pos
            elif "\n" in piece:
                line, line_start_char = [t], None  # a line started mid-token: leave it free
            else:
                line.append(t)
        if line_start_char is None and not starts_in_codes:
            return None
        node = 0
        for t in line:
            nxt = self.trie.step(node, t)
            if nxt is None:
                return None  # past the code (its description), or off the trie: free
            node = nxt
        return node

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.width :].tolist()
        low = torch.finfo(scores.dtype).min
        for row, tokens in enumerate(generated):
            if tokens and tokens[-1] in self.stop_ids:
                continue
            node = self._state(tokens, self.in_codes[row])
            if node is None:
                continue
            mask = self._node_mask(node, scores.shape[-1], scores.device)
            scores[row] = scores[row].masked_fill(~mask, low)
            self.masked_steps += 1
        return scores


def answer_regex(codes: Sequence[str], task: str = "evidence", human_evidence: bool = False) -> str:
    """A regular expression of the answers restricted decoding allows (for vLLM).

    ``evidence``: the evidence section (``- phrase`` lines), then ``Codes:`` and one
    ``CODE`` or ``CODE - description`` a line; ``codes_only``: the codes section alone;
    human-evidence mode: the code lines alone (the prompt ends with the header). Codes
    are alternatives of the allowed codes, escaped. ``cot`` (free reasoning) is refused.
    """
    if not codes:
        raise ValueError("answer_regex: no allowed codes")
    alt = "|".join(re.escape(canonical_code(c)) for c in sorted(set(codes)))
    lines = rf"(?:(?:{alt})(?: - [^\n]*)?\n)*(?:(?:{alt})(?: - [^\n]*)?)?"
    if human_evidence:
        return lines
    codes_part = re.escape(CODES_HEADER) + r"\n" + lines
    if task == "codes_only":
        return codes_part
    if task == "evidence":
        return re.escape(EVIDENCE_HEADER) + r"\n(?:- [^\n]*\n)*" + codes_part
    raise ValueError(f"infer.restrict_codes: task {task!r} has no fixed answer format (use evidence or codes_only)")


def vllm_structured_outputs(regex: str) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for guided decoding with ``regex``.

    vLLM >= 0.11: ``structured_outputs=StructuredOutputsParams(regex=...)``; older
    releases: ``guided_decoding=GuidedDecodingParams(regex=...)``.
    """
    try:
        from vllm.sampling_params import StructuredOutputsParams  # type: ignore[attr-defined]

        return {"structured_outputs": StructuredOutputsParams(regex=regex)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # type: ignore[attr-defined]

        return {"guided_decoding": GuidedDecodingParams(regex=regex)}


def configure_engine(
    engine: Any, tokenizer: Any, codes: Sequence[str] | None, task: str, human_evidence: bool
) -> bool:
    """Switch restricted decoding on for ``engine`` (HF or vLLM); False when it cannot apply.

    ``codes`` None or empty leaves the engine as it is. HF engines get a
    :class:`CodeTrieProcessor` per batch; vLLM engines the :func:`answer_regex` grammar.
    """
    if not codes:
        return False
    if hasattr(engine, "extra_processors"):
        stop_ids = list(getattr(engine, "stop_ids", []))

        def factory(prompts: list[str], width: int) -> list[LogitsProcessor]:
            return [CodeTrieProcessor(tokenizer, codes, width, [starts_in_codes(p) for p in prompts], stop_ids)]

        engine.extra_processors = factory
        return True
    if hasattr(engine, "sampling_kwargs"):
        engine.sampling_kwargs.update(vllm_structured_outputs(answer_regex(codes, task, human_evidence)))
        return True
    return False
