"""The one document-prompt builder of training, prediction, ``ccl.cli.predict`` and the bench.

Training renders a document example's prompt with :func:`ccl.data.sft.tokenize_examples`;
prediction, ``python -m ccl.cli.predict`` and ``python -m ccl.bench predict`` render theirs
here, with the same messages (:func:`ccl.data.prompts.document_prompt`), the same
rendering (:func:`ccl.generation.chat.render_prompt`) and the same truncation rule
(:func:`ccl.data.sft.fit_prompt`): the note, never the instruction, loses tokens
from its end until *prompt + answer* fits ``backbone.max_length``. In training
the answer is the target; at prediction it is at most ``infer.max_new_tokens``
tokens, plus the answer prefix given in the prompt in human-evidence mode. So a
note that fills the context is cut at the same place in both, to the answer's
length, and the model never runs past the positions it was trained on
(``backbone=tiny`` has ``max_position_embeddings = max_length``).

Long notes (``infer.long_notes``):

* ``truncate`` (default, the paper's setting): one prompt per note, cut as above;
  the number of notes cut and tokens dropped are reported
  (:meth:`PromptPlan.summary`), in ``metrics.json`` under ``prompts``, and as a
  warning by ``ccl.cli.predict``;
* ``window`` (beyond the paper): the note is split into windows of whole tokens
  that each fill the prompt budget, neighbours sharing ``infer.window_overlap``
  tokens, and each window is coded as a note of its own; the predict stage merges
  the windows' evidence and codes in note order
  (:func:`ccl.predict.parser.merge_outputs`). Nothing is dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ccl.data.prompts import document_prompt
from ccl.data.sft import fit_prompt
from ccl.generation.chat import encode_prompts, render_prompt

LONG_NOTES = ("truncate", "window")
# Tokens kept free in a window's note budget: re-tokenising a window's text can merge or
# split a token at its edges; fit_prompt trims whatever still does not fit.
_WINDOW_SLACK = 4


@dataclass(frozen=True)
class PromptLimits:
    """How long a prompt may be. ``max_length=None``: no limit (the whole note is sent).

    ``answer_tokens`` is the room kept for the answer (``infer.max_new_tokens`` at
    prediction); ``long_notes`` and ``window_overlap`` as in the module docstring.
    """

    max_length: int | None
    answer_tokens: int = 0
    long_notes: str = "truncate"
    window_overlap: int = 64

    def __post_init__(self) -> None:
        if self.long_notes not in LONG_NOTES:
            raise ValueError(f"infer.long_notes={self.long_notes!r}: expected one of {LONG_NOTES}")
        if self.window_overlap < 0:
            raise ValueError(f"infer.window_overlap={self.window_overlap}: must be >= 0")
        if self.max_length is not None and self.answer_tokens >= self.max_length:
            raise ValueError(
                f"infer.max_new_tokens={self.answer_tokens} leaves no room for a prompt within "
                f"backbone.max_length={self.max_length}: lower infer.max_new_tokens or raise "
                "backbone.max_length"
            )


def limits_from_config(cfg: Any, answer_tokens: int | None = None) -> PromptLimits:
    """Prompt limits of a run config: ``backbone.max_length``, the answer room
    (``answer_tokens``, default ``infer.max_new_tokens``), ``infer.long_notes`` and
    ``infer.window_overlap`` (older configs: truncate, 64)."""
    infer = cfg.infer
    overlap = getattr(infer, "window_overlap", None)
    return PromptLimits(
        max_length=int(cfg.backbone.max_length),
        answer_tokens=int(answer_tokens if answer_tokens is not None else infer.max_new_tokens),
        long_notes=str(getattr(infer, "long_notes", None) or "truncate"),
        window_overlap=64 if overlap is None else int(overlap),
    )


@dataclass
class PromptPlan:
    """Prompts to generate from, and which document each belongs to.

    ``prompts[i]`` (rendered text, the answer prefix appended) and ``prefixes[i]``
    belong to document ``doc_index[i]``; per document, ``windows`` counts its prompts
    and ``note_tokens_cut`` the note tokens no prompt shows (truncate mode).
    """

    prompts: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    doc_index: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    note_tokens_cut: list[int] = field(default_factory=list)
    long_notes: str = "truncate"

    def summary(self) -> dict[str, Any]:
        """Counts for ``metrics.json``: notes cut and their tokens, windowed notes, prompts."""
        return {
            "long_notes": self.long_notes,
            "documents": len(self.windows),
            "prompts": len(self.prompts),
            "notes_cut": sum(n > 0 for n in self.note_tokens_cut),
            "note_tokens_cut": sum(self.note_tokens_cut),
            "notes_windowed": sum(n > 1 for n in self.windows),
        }


def _fit(
    tokenizer: Any, messages: list[dict[str, str]], use_chat: bool, budget: int, where: str
) -> tuple[str, int]:
    try:
        text, _, removed = fit_prompt(tokenizer, messages, use_chat, budget)
    except ValueError as err:
        raise ValueError(
            f"{where}: {err} (the prompt budget is backbone.max_length minus infer.max_new_tokens "
            "and any answer prefix)"
        ) from None
    return text, removed


def _windows(
    tokenizer: Any, task: str, note: str, use_chat: bool, budget: int, overlap: int, where: str
) -> list[str]:
    """Rendered prompts of overlapping windows of ``note``, each within ``budget`` tokens."""
    empty = encode_prompts(tokenizer, [render_prompt(tokenizer, document_prompt(task, ""), use_chat)])[0]
    room = budget - len(empty) - _WINDOW_SLACK
    if room < 8:
        raise ValueError(
            f"{where}: only {room} tokens are left for the note in a window (budget {budget}, "
            f"instruction {len(empty)}): raise backbone.max_length or lower infer.max_new_tokens"
        )
    stride = max(1, room - min(overlap, room // 2))
    body = note.strip()
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"] if o[1] > o[0]]
    prompts = []
    for start in range(0, max(1, len(offsets)), stride):
        end = min(start + room, len(offsets))
        piece = body[offsets[start][0] : offsets[end - 1][1]] if offsets else body
        text, _ = _fit(tokenizer, document_prompt(task, piece), use_chat, budget, where)
        prompts.append(text)
        if end >= len(offsets):
            break
    return prompts


def build_document_prompts(
    tokenizer: Any,
    notes: Sequence[str],
    task: str,
    use_chat_template: bool,
    limits: PromptLimits,
    prefixes: Sequence[str] | None = None,
) -> PromptPlan:
    """Prompts for whole notes under ``limits`` (see the module docstring).

    ``prefixes`` (human-evidence mode) are appended to each rendered prompt and
    count against the budget. Raises ``ValueError`` naming the note when even an
    empty note does not fit. A cut note is warned about once per call.
    """
    prefixes = list(prefixes) if prefixes is not None else [""] * len(notes)
    if len(prefixes) != len(notes):
        raise ValueError(f"{len(prefixes)} answer prefixes for {len(notes)} notes")
    use_chat = bool(use_chat_template)
    messages = [document_prompt(task, note) for note in notes]
    full = [render_prompt(tokenizer, m, use_chat) for m in messages]
    plan = PromptPlan(long_notes=limits.long_notes)
    if limits.max_length is None:
        for i, (text, prefix) in enumerate(zip(full, prefixes, strict=True)):
            plan.prompts.append(text + prefix)
            plan.prefixes.append(prefix)
            plan.doc_index.append(i)
            plan.windows.append(1)
            plan.note_tokens_cut.append(0)
        return plan
    lengths = [len(ids) for ids in encode_prompts(tokenizer, full)]
    prefix_tokens = [
        len(ids) for ids in tokenizer(prefixes, add_special_tokens=False)["input_ids"]
    ] if any(prefixes) else [0] * len(notes)
    for i, (note, text, n, prefix) in enumerate(zip(notes, full, lengths, prefixes, strict=True)):
        budget = limits.max_length - limits.answer_tokens - prefix_tokens[i]
        where = f"note {i + 1} of {len(notes)} ({len(note):,} characters)"
        if n <= budget:
            texts, cut = [text], 0
        elif limits.long_notes == "window":
            texts = _windows(tokenizer, task, note, use_chat, budget, limits.window_overlap, where)
            cut = 0
        else:
            shortened, cut = _fit(tokenizer, messages[i], use_chat, budget, where)
            texts = [shortened]
        for t in texts:
            plan.prompts.append(t + prefix)
            plan.prefixes.append(prefix)
            plan.doc_index.append(i)
        plan.windows.append(len(texts))
        plan.note_tokens_cut.append(cut)
    summary = plan.summary()
    if summary["notes_cut"]:
        warnings.warn(
            f"{summary['notes_cut']} of {len(notes)} notes were cut to fit backbone.max_length="
            f"{limits.max_length} with room for infer.max_new_tokens={limits.answer_tokens} "
            f"({summary['note_tokens_cut']:,} note tokens not shown to the model); "
            "infer.long_notes=window codes them in overlapping windows instead",
            stacklevel=2,
        )
    return plan
