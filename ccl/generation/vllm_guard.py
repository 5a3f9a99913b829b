"""The repeated-line guard under vLLM: a per-request logits processor of vLLM's v1 engine.

vLLM (0.10+, checked against 0.32's ``vllm/v1/sample/logits_processor``) takes custom
logits processors as classes when the engine is built (``LLM(logits_processors=[cls])``)
and switches them on per request through ``SamplingParams(extra_args=...)``.
:class:`RepeatedLineProcessor` wraps :class:`ccl.generation.guards.LineLoopRule`
with vLLM's ``AdapterLogitsProcessor``: each request whose ``extra_args`` hold
:data:`GUARD_ARG` gets its own rule, called every step with the request's output token
ids, so a looping answer is cut at the token HF generate's guard cuts it at.

The processor runs where vLLM samples (the engine core, possibly another process), so
it loads the tokenizer itself from the engine's tokenizer folder and keeps no count
for the caller; :func:`ccl.generation.guards.guard_fires` recounts the cuts from the
output ids. It is not argmax-invariant (it changes greedy choices). A forced token that
the request's structured output (restricted decoding) masks is not forced: the
grammar has the last word, as a grammar must.

This module imports vLLM; import it only where vLLM is installed (the engine names it by
:data:`ccl.generation.guards.VLLM_GUARD_FQCN` and never imports it itself).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from ccl.generation.guards import GUARD_ARG, LineLoopRule


class RepeatedLineProcessor(AdapterLogitsProcessor):
    """vLLM logits processor running :class:`LineLoopRule` on the requests that ask for it."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        from transformers import AutoTokenizer

        model_config = vllm_config.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_config.tokenizer, trust_remote_code=bool(model_config.trust_remote_code))

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: Any) -> Any:
        spec = (params.extra_args or {}).get(GUARD_ARG)
        if not spec:
            return None
        rule = LineLoopRule(self.tokenizer, bool(spec["in_codes"]), int(spec["stop_id"]))

        def guard(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            forced = rule.next_forced(output_ids)
            if forced is None or not torch.isfinite(logits[forced]):
                return logits
            out = torch.full_like(logits, float("-inf"))
            out[forced] = 0.0
            return out

        return guard
