"""``vllm.outputs.RequestOutput`` / ``CompletionOutput`` (the fields CCL reads, as in vLLM)."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Logprob:
    """``vllm.logprobs.Logprob``: one token's log-probability and its rank in the distribution."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None
    lora_request: Any = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True
    lora_request: Any = None
