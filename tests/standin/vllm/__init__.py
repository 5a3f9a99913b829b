"""Test stand-in for vLLM's offline API (see tests/standin/README.md); generation by HF transformers."""

from vllm.entrypoints import LLM
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import SamplingParams

__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams"]
