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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ccl.data.prompts import Example, Message
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


def tokenize_examples(
    tokenizer: Any, examples: Sequence[Example], use_chat_template: bool, max_length: int
) -> tuple[list[dict[str, Any]], TokenizeStats]:
    """Tokenise many examples with batched tokenizer calls; see the module docstring.

    Each result has ``input_ids``, ``labels`` (lists of ints), ``length``,
    ``prompt_length``, ``kind``, ``tier`` and ``truncated``.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; SFT answers must end with an end token")
    prompts = [render_prompt(tokenizer, ex.messages, use_chat_template) for ex in examples]
    prompt_ids = encode_prompts(tokenizer, prompts)
    answer_ids = tokenizer([ex.answer for ex in examples], add_special_tokens=False)["input_ids"]
    stats = TokenizeStats()
    out = []
    for i, (ex, p, a) in enumerate(zip(examples, prompt_ids, answer_ids, strict=True)):
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
        out.append(
            {
                "input_ids": p + answer,
                "labels": [IGNORE_INDEX] * len(p) + answer,
                "length": len(p) + len(answer),
                "prompt_length": len(p),
                "kind": ex.kind,
                "tier": ex.tier,
                "truncated": truncated,
            }
        )
    return out, stats


def tokenize_example(tokenizer: Any, example: Example, use_chat_template: bool, max_length: int) -> dict[str, Any]:
    """One example; prefer :func:`tokenize_examples` for many (batched tokenizer calls)."""
    return tokenize_examples(tokenizer, [example], use_chat_template, max_length)[0][0]
