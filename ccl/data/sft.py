"""Turn :class:`~ccl.data.prompts.Example` records into tokenised SFT examples.

An example is ``prompt ids + answer ids + [eos]``; ``labels`` are ``-100`` over
the prompt, so the loss covers the answer and its end token only.

Prompt text and ids come from :mod:`ccl.generation.chat` (:func:`render_prompt`: the
chat template when asked and present, else the plain ``### System / ### User /
### Assistant`` format; :func:`encode_prompts`: BOS exactly once), the functions both
prediction engines use, so the model sees the same ids in training and prediction. The
answer is tokenised on its own, as the model will write it after the prompt.

Truncation. When ``prompt + answer + eos`` exceeds ``max_length``, the note is
cut, never the instruction or the answer: the text after the last ``Note:\\n``
of the user message (the whole user message when there is no such marker)
loses tokens from its end until the example fits, and the prompt is rendered
again from the shortened note, so a truncated prompt is exactly the prompt of
a shorter note. The answer is left as it is; evidence quoted from the cut tail
then has no support in the prompt, which is why truncations are counted
(:class:`TokenizeStats`) and should stay rare. An answer that cannot fit even
with an empty note is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ccl.data.prompts import Example, Message, document_example, span_example
from ccl.generation.chat import encode_prompts, render_prompt

# Label of a position the loss skips (PyTorch's cross_entropy ignore_index); the one definition.
IGNORE_INDEX = -100
NOTE_MARKER = "Note:\n"  # the document templates of ccl.data.prompts end with "Note:\n{note}"
_MAX_TRUNCATION_ROUNDS = 8


@dataclass
class TokenizeStats:
    """Counts from one :func:`tokenize_examples` call."""

    examples: Counter = field(default_factory=Counter)  # per kind
    truncated: Counter = field(default_factory=Counter)  # per kind
    tokens_removed: int = 0  # note tokens cut by truncation
    tokens: int = 0  # prompt + answer tokens kept
    loss_tokens: int = 0  # labelled (answer + eos) tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": dict(self.examples),
            "truncated": dict(self.truncated),
            "tokens_removed": self.tokens_removed,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
        }


def _split_note(messages: Sequence[Message]) -> tuple[int, str, str]:
    """(index of the last user message, text before the note, the note)."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("cannot truncate a prompt without a user message")
    content = messages[users[-1]]["content"]
    k = content.rfind(NOTE_MARKER)
    if k < 0:
        return users[-1], "", content
    cut = k + len(NOTE_MARKER)
    return users[-1], content[:cut], content[cut:]


def _with_note(messages: Sequence[Message], index: int, head: str, note: str) -> list[Message]:
    out = [dict(m) for m in messages]
    out[index]["content"] = head + note
    return out


def _note_token_starts(tokenizer: Any, prompt: str, head: str, note: str) -> tuple[np.ndarray, int]:
    """Character starts of the prompt tokens lying wholly inside the note, and the note's start."""
    found = prompt.rfind(head + note)
    if found < 0:
        raise ValueError("the chat template altered the user message; cannot locate the note to truncate")
    start = found + len(head)
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= start + len(note)) & (offsets[:, 1] > offsets[:, 0])
    return offsets[inside, 0], start


def truncate_note(
    tokenizer: Any, messages: Sequence[Message], use_chat_template: bool, budget: int
) -> tuple[list[int], int]:
    """Prompt ids of ``messages`` with the note cut from its end to fit ``budget`` tokens.

    Returns the ids and the number of prompt tokens removed. Raises ``ValueError``
    when even an empty note does not fit.
    """
    _, ids, removed = fit_prompt(tokenizer, messages, use_chat_template, budget)
    return ids, removed


def fit_prompt(
    tokenizer: Any, messages: Sequence[Message], use_chat_template: bool, budget: int
) -> tuple[str, list[int], int]:
    """Rendered prompt text, its ids and the tokens removed, the note cut to fit ``budget``.

    The one truncation rule of training and inference (module docstring): the
    text after the last ``Note:\\n`` loses tokens from its end; the text returned
    is the prompt of the shortened note, so encoding it with
    :func:`encode_prompts` gives exactly the ids returned. Raises ``ValueError``
    when even an empty note does not fit.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("note truncation needs a fast (tokenizers-backed) tokenizer for offsets")
    index, head, note = _split_note(messages)
    original = len(encode_prompts(tokenizer, [render_prompt(tokenizer, messages, use_chat_template)])[0])
    ids: list[int] = []
    # Re-tokenising the shortened text can merge tokens differently at the cut, so a
    # second round may be needed; each round only shortens the note.
    for _ in range(_MAX_TRUNCATION_ROUNDS):
        prompt = render_prompt(tokenizer, _with_note(messages, index, head, note), use_chat_template)
        ids = encode_prompts(tokenizer, [prompt])[0]
        excess = len(ids) - budget
        if excess <= 0:
            return prompt, ids, original - len(ids)
        if not note:
            break
        starts, note_start = _note_token_starts(tokenizer, prompt, head, note)
        keep = len(starts) - excess
        note = prompt[note_start : int(starts[keep])] if keep > 0 else ""
    raise ValueError(
        f"prompt needs {len(ids)} tokens even with the note cut to {len(note)} characters, "
        f"over the budget of {budget}: raise backbone.max_length"
    )


class TokenizedExamples(Sequence):
    """Tokenised examples stored once, compactly: every example's ids in one ``int32`` array
    (with offsets), the prompt lengths, kinds, tiers and truncation flags in arrays.

    A span tier over the full code space is ~245k examples, of which a training plan draws
    a fraction of a percent; as Python lists of ints they took ~6 GB (issue 24), here
    4 bytes a token. Indexing builds the example dict :func:`tokenize_examples` documents
    (``input_ids``, ``labels``, ``length``, ``prompt_length``, ``kind``, ``tier``,
    ``truncated``), so the collators and the plan see exactly what they saw before.
    """

    def __init__(self) -> None:
        self._pending: list[np.ndarray] = []  # ids appended since the last seal
        self._sealed = np.empty(0, dtype=np.int32)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._lengths: list[int] = []
        self._prompt: list[int] = []
        self._kind: list[str] = []
        self._tier: list[str | None] = []
        self._truncated: list[bool] = []

    def append(self, ids: Sequence[int], prompt_length: int, kind: str, tier: str | None, truncated: bool) -> None:
        """Add one example: its ids (prompt + answer + eos) and the length of its prompt."""
        self._pending.append(np.asarray(ids, dtype=np.int32))
        self._lengths.append(len(ids))
        self._prompt.append(int(prompt_length))
        self._kind.append(kind)
        self._tier.append(tier)
        self._truncated.append(bool(truncated))

    def seal(self) -> TokenizedExamples:
        """Join the appended ids into the one array (done by :func:`tokenize_examples`)."""
        if self._pending:
            self._sealed = np.concatenate([self._sealed, *self._pending])
            self._pending = []
            self._offsets = np.concatenate([[0], np.cumsum(self._lengths, dtype=np.int64)])
        return self

    def __len__(self) -> int:
        return len(self._lengths)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same example dicts (a list of them included)."""
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    @property
    def lengths(self) -> list[int]:
        """Tokens of each example (prompt + answer + eos)."""
        return self._lengths

    @property
    def tiers(self) -> list[str | None]:
        return self._tier

    @property
    def targets(self) -> list[int]:
        """Target tokens of each example as the causal-LM loss counts them (labels after the
        one-token shift that are not ``-100``): ``length - max(prompt_length, 1)``; the same
        count as :func:`ccl.data.datamodule.answer_targets` on the example's dict."""
        return [n - max(p, 1) for n, p in zip(self._lengths, self._prompt, strict=True)]

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]  # type: ignore[return-value]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.seal()
        ids = self._sealed[self._offsets[i] : self._offsets[i + 1]].tolist()
        p = self._prompt[i]
        return {
            "input_ids": ids,
            "labels": [IGNORE_INDEX] * p + ids[p:],
            "length": len(ids),
            "prompt_length": p,
            "kind": self._kind[i],
            "tier": self._tier[i],
            "truncated": self._truncated[i],
        }


TOKENIZE_CHUNK = 4096  # examples rendered and tokenised per batched tokenizer call


def tokenize_examples(
    tokenizer: Any, examples: Sequence[Example], use_chat_template: bool, max_length: int
) -> tuple[TokenizedExamples, TokenizeStats]:
    """Tokenise many examples with batched tokenizer calls; see the module docstring.

    Each result (``out[i]``, a :class:`TokenizedExamples`) has ``input_ids``, ``labels``
    (lists of ints), ``length``, ``prompt_length``, ``kind``, ``tier`` and ``truncated``.
    Examples are tokenised :data:`TOKENIZE_CHUNK` at a time, so no list of all their ids
    is ever held.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; SFT answers must end with an end token")
    stats = TokenizeStats()
    out = TokenizedExamples()
    for start in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[start : start + TOKENIZE_CHUNK]
        prompts = [render_prompt(tokenizer, ex.messages, use_chat_template) for ex in chunk]
        prompt_ids = encode_prompts(tokenizer, prompts)
        answer_ids = tokenizer([ex.answer for ex in chunk], add_special_tokens=False)["input_ids"]
        for i, (ex, p, a) in enumerate(zip(chunk, prompt_ids, answer_ids, strict=True), start=start):
            answer = list(a) + [eos]
            truncated = len(p) + len(answer) > max_length
            if truncated:
                try:
                    p, removed = truncate_note(tokenizer, ex.messages, use_chat_template, max_length - len(answer))
                except ValueError as e:
                    raise ValueError(
                        f"example {i} ({ex.kind}): answer of {len(answer)} tokens does not fit "
                        f"max_length={max_length}: {e}"
                    ) from None
                stats.truncated[ex.kind] += 1
                stats.tokens_removed += removed
            stats.examples[ex.kind] += 1
            stats.tokens += len(p) + len(answer)
            stats.loss_tokens += len(answer)
            out.append(p + answer, len(p), ex.kind, ex.tier, truncated)
    return out.seal(), stats


def tokenize_example(tokenizer: Any, example: Example, use_chat_template: bool, max_length: int) -> dict[str, Any]:
    """One example; prefer :func:`tokenize_examples` for many (batched tokenizer calls)."""
    return tokenize_examples(tokenizer, [example], use_chat_template, max_length)[0][0]


# ---------------------------------------------------------------- a run's examples


def build_examples(cfg: Any, bundle: Any) -> tuple[list[Example], list[Example], list[Example]]:
    """Document examples (train, val) for ``cfg.task`` and span examples from all tiers of
    ``bundle`` (a :class:`ccl.stages.data.DataBundle`: ``docs``, ``span_pairs()``, ``describe``)."""
    task = str(cfg.task)
    describe = bundle.describe

    def docs(split: str) -> list[Example]:
        return [document_example(task, d.text, [s.text for s in d.spans], d.codes, describe)
                for d in bundle.docs.get(split, [])]

    return docs("train"), span_examples(cfg, bundle), docs("val")


def span_examples(cfg: Any, bundle: Any) -> list[Example]:
    """Span pairs as training examples, in the format(s) ``mix.span_template`` names."""
    fmt = str(cfg.mix.span_template)
    if fmt not in ("span", "document", "both"):
        raise ValueError(f"mix.span_template={fmt!r}: expected span, document or both")
    task, describe = str(cfg.task), bundle.describe
    out: list[Example] = []
    for p in bundle.span_pairs():
        if fmt in ("span", "both"):
            out.append(replace(span_example(p.evidence, p.code, describe), tier=p.tier))
        if fmt in ("document", "both"):
            note = f"Assessment: {p.evidence}."
            out.append(replace(document_example(task, note, [p.evidence], [p.code], describe),
                               kind="span", tier=p.tier))
    return out


def training_answer_lengths(cfg: Any, bundle: Any, tokenizer: Any) -> list[int]:
    """Token lengths (EOS included) of the training documents' answers, as training tokenises them."""
    doc_ex, _, _ = build_examples(cfg, bundle)
    ids = tokenizer([ex.answer for ex in doc_ex], add_special_tokens=False)["input_ids"]
    return [len(a) + 1 for a in ids]
