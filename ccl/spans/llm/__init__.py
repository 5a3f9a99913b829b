"""Span-tier LLMs: one batched interface (hf, openai, vllm), a persistent call cache.

The lexical miner, which generates no text, sits beside the tiers (:mod:`ccl.spans.lexical`).

Imports here stay light (no torch, no vllm): backends load their heavy
dependencies when first used.
"""

from ccl.spans.llm.base import (
    BACKENDS,
    CREDENTIALED_SOURCES,
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    LLMConfig,
    LLMError,
    PrivacyError,
    as_llm_config,
    check_privacy,
    is_local_url,
    llm_config,
    make_backend,
)
from ccl.spans.llm.cache import CachedLLM, CallCache, CallStats, call_key

__all__ = [
    "BACKENDS",
    "CREDENTIALED_SOURCES",
    "CachedLLM",
    "CallCache",
    "CallStats",
    "GenerationParams",
    "LLMBackend",
    "LLMBackendError",
    "LLMConfig",
    "LLMError",
    "PrivacyError",
    "as_llm_config",
    "call_key",
    "check_privacy",
    "is_local_url",
    "llm_config",
    "make_backend",
]
