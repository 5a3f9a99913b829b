"""The prompt templates of CCL, named and versioned, and training targets.

Four families, after the paper's Appendix F:

* ``evidence``   document level: the model lists evidence (document order), then codes
* ``codes_only`` document level: codes only (Table 3, row 2)
* ``span``       span level: one evidence phrase -> its code
* ``cot``        zero-shot chain of thought (Table 3, row 1)

A prompt is a list of chat messages (``system`` + ``user``); the answer is the
assistant turn. Only the answer carries loss. Changing any template text must
bump :data:`PROMPT_VERSION`, which is part of every cache key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ccl.generation.chat import Message
from ccl.records import CODES_HEADER, EVIDENCE_HEADER, NO_EVIDENCE

PROMPT_VERSION = "ccl-prompts-v2"


# Kept short on purpose: every training example pays for these tokens.
SYSTEM = "You are an expert ICD-10-CM coder."

_DOC_EVIDENCE = (
    "List the exact phrases of the note that support a diagnosis, in note order, after "
    "'{ev}' (skip negated, ruled-out and family-history mentions), then the ICD-10-CM codes "
    "after '{co}' as 'CODE - description'.\n\nNote:\n{note}"
)
_DOC_CODES = (
    "List the ICD-10-CM codes of the note's diagnoses after '{co}' as "
    "'CODE - description'.\n\nNote:\n{note}"
)
_SPAN = "ICD-10-CM code for this evidence:\n{evidence}"
_COT = (
    "Read the clinical note. Think step by step: find each diagnosis the note supports "
    "(ignore negated, ruled-out and family-history mentions), quote its evidence after "
    "'{ev}', then give the ICD-10-CM codes after '{co}', one per line as "
    "'CODE - description'.\n\nNote:\n{note}"
)

Describe = Callable[[str], str]


@dataclass(frozen=True)
class Example:
    """One SFT example: chat messages for the prompt, the answer text, and its kind."""

    messages: list[Message]
    answer: str
    kind: str  # "doc" | "span"
    code_count: int = 0
    tier: str = ""  # span examples: the tier of their pair (gold, silver, synthetic); "" for documents


def _messages(user: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def code_line(code: str, describe: Describe) -> str:
    """``E11.9 - Type 2 diabetes mellitus without complications``."""
    desc = describe(code)
    return f"{code} - {desc}" if desc else code


def evidence_block(evidence: Sequence[str]) -> str:
    """The evidence section, one phrase a line; ``- none`` when empty."""
    lines = [f"- {' '.join(e.split())}" for e in evidence] or [NO_EVIDENCE]
    return "\n".join([EVIDENCE_HEADER, *lines])


def codes_block(codes: Sequence[str], describe: Describe) -> str:
    return "\n".join([CODES_HEADER, *(code_line(c, describe) for c in codes)])


def document_prompt(task: str, note: str) -> list[Message]:
    """Prompt messages for a whole note under ``task`` (evidence | codes_only | cot)."""
    template = {"evidence": _DOC_EVIDENCE, "codes_only": _DOC_CODES, "cot": _COT}.get(task)
    if template is None:
        raise ValueError(f"unknown task {task!r}: expected evidence, codes_only or cot")
    return _messages(template.format(ev=EVIDENCE_HEADER, co=CODES_HEADER, note=note.strip()))


def document_answer(task: str, evidence: Sequence[str], codes: Sequence[str], describe: Describe) -> str:
    """Training target for a whole note: evidence (document order) then codes."""
    if task == "codes_only":
        return codes_block(codes, describe)
    return evidence_block(evidence) + "\n" + codes_block(codes, describe)


def human_evidence_prefix(evidence: Sequence[str]) -> str:
    """Answer prefix for "CCL + human evidence": gold evidence given, codes generated."""
    return evidence_block(evidence) + "\n" + CODES_HEADER + "\n"


def span_prompt(evidence: str) -> list[Message]:
    return _messages(_SPAN.format(evidence=" ".join(evidence.split())))


def span_answer(code: str, describe: Describe) -> str:
    return code_line(code, describe)


def document_example(
    task: str, note: str, evidence: Sequence[str], codes: Sequence[str], describe: Describe
) -> Example:
    return Example(document_prompt(task, note), document_answer(task, evidence, codes, describe), "doc", len(codes))


def span_example(evidence: str, code: str, describe: Describe) -> Example:
    return Example(span_prompt(evidence), span_answer(code, describe), "span", 1)
