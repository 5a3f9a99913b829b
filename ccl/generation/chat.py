"""Chat prompts: the one place that turns messages into prompt text and prompt text into ids.

Two renderings, one per use:

* :func:`render_prompt` (training and prediction): with a chat template (and
  ``use_chat_template``) the messages go through
  ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; otherwise through
  the plain format of :func:`plain_prompt`::

      ### System:
      <system message>

      ### User:
      <user message>

      ### Assistant:
      <answer><eos>

* :func:`render_chat` (the span-tier LLMs): the chat template when the tokenizer has one,
  else :func:`render_plain`'s ``role: content`` turns ending in ``assistant:``.

Prompt ids. :func:`encode_prompts` tokenises prompt text without special tokens and then
puts the tokenizer's own prefix (BOS, for Llama-style tokenizers) in front unless the text
already starts with it (chat templates often write BOS themselves), so no prompt carries
BOS twice. Training (:mod:`ccl.data.sft`) and both prediction engines
(:mod:`ccl.generation.hf_engine`, :mod:`ccl.generation.vllm_engine`) share it, so the model
sees the same ids in all three.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

Message = dict[str, str]  # one turn: {"role": ..., "content": ...}
Conversation = Sequence[Message]  # {"role": "system" | "user" | "assistant", "content": ...} turns


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` ships a chat template (a non-empty ``chat_template``)."""
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(messages: Sequence[Message]) -> str:
    """The template-free prompt format of training and prediction (see the module docstring)."""
    parts = [f"### {m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages]
    return "".join(parts) + "### Assistant:\n"


def render_prompt(tokenizer: Any, messages: Sequence[Message], use_chat_template: bool) -> str:
    """Prompt text that the answer follows: chat template when asked and present, else plain.

    Warns (``UserWarning``) when ``use_chat_template`` is set but the tokenizer has no template.
    """
    if use_chat_template and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if use_chat_template:
        warnings.warn(
            "use_chat_template is set but the tokenizer has no chat template; using the plain "
            "'### System / ### User / ### Assistant' prompt format",
            stacklevel=2,
        )
    return plain_prompt(messages)


def render_plain(conversation: Conversation) -> str:
    """The span-tier LLMs' rendering for tokenizers without a template: ``role: content`` turns."""
    turns = [f"{m['role']}: {m['content']}" for m in conversation]
    return "\n\n".join(turns) + "\n\nassistant:"


def render_chat(tokenizer: Any, conversation: Conversation) -> str:
    """An span-tier conversation as prompt text: the tokenizer's chat template (which writes
    the special tokens; :func:`encode_prompts` adds no second BOS), else :func:`render_plain`."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [dict(m) for m in conversation], tokenize=False, add_generation_prompt=True
        )
    return render_plain(conversation)


def prompt_prefix_ids(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before a text when it adds special tokens (``[bos]`` or ``[]``)."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    n = len(full) - len(plain)
    return list(full[:n]) if n > 0 and list(full[n:]) == list(plain) else []


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of prompt texts (one list per prompt, in order), batched, with the
    tokenizer's BOS prefix exactly once."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    prefix = prompt_prefix_ids(tokenizer)
    if not prefix:
        return [list(x) for x in ids]
    k = len(prefix)
    return [list(x) if list(x[:k]) == prefix else prefix + list(x) for x in ids]
