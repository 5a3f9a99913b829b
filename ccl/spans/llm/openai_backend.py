"""Any OpenAI-compatible ``/chat/completions`` endpoint, over the standard library.

Works with a served vLLM (``vllm serve ... --port 8000``: ``base_url:
http://localhost:8000/v1``) and with commercial APIs. The key is read from the
environment variable named by ``api_key_env`` and never stored. 429, 5xx and
network errors are retried with exponential back-off (honouring
``Retry-After``); other 4xx answers stop the run at once, since retrying a bad
key or model name cannot help. An optional client-side limit spaces request
starts to ``requests_per_minute``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ccl.config import BackendConfig
from ccl.spans.llm.base import (
    Conversation,
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    apply_stop,
    is_local_url,
)

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 60.0


class RateLimiter:
    """Spaces call starts at least ``60 / per_minute`` seconds apart (thread-safe)."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {per_minute}")
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend(LLMBackend):
    """Chat completions from ``base_url`` (``.../v1``) for ``model``."""

    name = "openai"

    @classmethod
    def from_config(cls, cfg: BackendConfig, cache_dir: Any = None) -> OpenAIBackend:
        """``llm=openai``: ``llm.base_url`` and ``llm.model``, with the rate and retry settings."""
        if not cfg.base_url or not cfg.model:
            raise LLMBackendError("llm=openai needs llm.base_url and llm.model")
        return cls(
            cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
            requests_per_minute=cfg.requests_per_minute, concurrency=cfg.concurrency,
            structured=cfg.structured,
        )

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        requests_per_minute: float | None = None,
        concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        structured: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # A served vLLM decodes under a grammar sent as ``structured_outputs`` (its extension of
        # the chat API; started with --structured-outputs-config.backend guidance for
        # llguidance's Lark dialect); other APIs refuse the field, hence off by default.
        self.supports_grammar = bool(structured)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self.limiter = RateLimiter(requests_per_minute, sleep=sleep)
        self._sleep = sleep
        self.attempts = 0  # HTTP requests sent, retries included
        self._count_lock = threading.Lock()

    @property
    def is_local(self) -> bool:
        return is_local_url(self.base_url)

    @property
    def endpoint(self) -> str:
        return self.base_url

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif not self.is_local:
            raise LLMBackendError(
                f"llm=openai: no API key for {self.base_url}: set the environment variable "
                f"{self.api_key_env} (llm.api_key_env names it)"
            )
        return headers

    def _payload(self, conversation: Conversation, params: GenerationParams,
                 grammar: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in conversation],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        return body

    def _post_once(self, body: bytes, headers: dict[str, str]) -> str:
        with self._count_lock:
            self.attempts += 1
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code in RETRY_STATUS:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                try:
                    wait = float(retry_after) if retry_after else None
                except ValueError:
                    wait = None
                raise _Retryable(f"HTTP {err.code}: {detail}", wait) from err
            raise LLMBackendError(
                f"llm=openai: {self.base_url}/chat/completions answered HTTP {err.code} "
                f"for model {self.model!r}: {detail}"
            ) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            raise _Retryable(f"network error: {err}") from err
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise _Retryable(f"unreadable response body: {raw[:200]!r}") from err
        return content if isinstance(content, str) else ""

    def _call(self, conversation: Conversation, params: GenerationParams,
              grammar: str | None = None) -> str:
        headers = self._headers()
        body = json.dumps(self._payload(conversation, params, grammar)).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            try:
                return apply_stop(self._post_once(body, headers), params.stop)
            except _Retryable as err:
                last = str(err)
                if attempt == self.max_retries:
                    break
                delay = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
                if err.retry_after is not None:
                    delay = min(max(delay, err.retry_after), MAX_BACKOFF_S)
                self._sleep(delay)
        raise LLMBackendError(
            f"llm=openai: {self.base_url} failed {self.max_retries + 1} times (last: {last}); "
            "finished calls are cached, rerun to resume"
        )

    def generate(self, batch: Sequence[Conversation], params: GenerationParams,
                 grammars: Sequence[str | None] | None = None) -> list[str]:
        """One completion per conversation, in order; ``grammars`` (with ``structured``) go
        to the server as vLLM's ``structured_outputs`` field."""
        grammars = list(grammars) if grammars is not None and self.supports_grammar else [None] * len(batch)
        jobs = list(zip(batch, grammars, strict=True))
        if len(batch) <= 1 or self.concurrency == 1:
            return [self._call(c, params, g) for c, g in jobs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch))) as pool:
            return list(pool.map(lambda job: self._call(job[0], params, job[1]), jobs))
