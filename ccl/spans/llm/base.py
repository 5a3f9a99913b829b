"""The span-tier LLM interface: generation parameters, backends, the privacy guard.

The ``llm`` config schema (:class:`ccl.config.LLMConfig`: backend settings apart from
mining settings) lives with the rest of the schema in :mod:`ccl.config`.

A backend turns a batch of chat conversations into a batch of completions
(:meth:`LLMBackend.generate`). Backends do no caching; wrap them in
:class:`ccl.spans.llm.cache.CachedLLM`, which every tier uses. The
``lexical`` choice of ``llm.backend`` is not a text generator: it mines spans directly
(:mod:`ccl.spans.lexical`, beside the tiers), so :data:`BACKENDS` leaves it out and
:func:`make_backend` refuses it with a pointer to the generating ones.
"""

from __future__ import annotations

import importlib
import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ccl.config import LLM_BACKENDS, BackendConfig

# The schema lives in ccl/config.py; these names stay importable from here.
from ccl.config import LLMConfig as LLMConfig
from ccl.config import as_llm_config as as_llm_config
from ccl.config import llm_config as llm_config
from ccl.generation.chat import Conversation as Conversation
from ccl.generation.chat import Message as Message

# The backends make_backend builds: every llm.backend choice but ``lexical``, which generates no text.
BACKENDS = tuple(b for b in LLM_BACKENDS if b != "lexical")
# Sources whose text is under a PhysioNet credentialed data use agreement.
CREDENTIALED_SOURCES = frozenset({"mimic3", "mimic4", "mdace"})
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def generation_settings(llm: BackendConfig) -> dict[str, Any]:
    """The LLM settings that change what a tier builder generates (part of its cache key)."""
    return {"backend": llm.backend, "model": llm.model, "base_url": llm.base_url,
            "temperature": llm.temperature, "top_p": llm.top_p, "seed": llm.seed,
            "max_new_tokens": llm.max_new_tokens}


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; part of every cache key."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, cfg: BackendConfig, **overrides: Any) -> GenerationParams:
        """The sampling settings of ``llm`` (:class:`ccl.config.BackendConfig`), ``overrides`` on top."""
        base = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "seed": cfg.seed}
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (``stop`` as a list), for cache keys."""
        return {**asdict(self), "stop": list(self.stop)}


class LLMError(RuntimeError):
    """Base class of span-tier LLM errors."""


class LLMBackendError(LLMError):
    """A backend cannot run (missing package, no GPU, bad endpoint or key)."""


class PrivacyError(LLMError, PermissionError):
    """Credentialed text would leave the machine."""


class LLMBackend(ABC):
    """Batched chat completion. Subclasses set :attr:`name` and :attr:`model` and implement
    :meth:`generate`."""

    name: str = "abstract"
    model: str = ""  # the served name, local path or package model name of llm.model
    # True: generate() takes ``grammars=`` (one llguidance grammar or None per conversation,
    # ccl.spans.llm.grammar) and decodes each answer under its grammar.
    supports_grammar: bool = False

    @property
    def model_id(self) -> str:
        """The model as it enters cache keys (a served name or a local path): :attr:`model`."""
        return self.model

    @property
    def is_local(self) -> bool:
        """True when prompts never leave this machine (or its loopback interface)."""
        return True

    @property
    def endpoint(self) -> str:
        """Where prompts go, for messages."""
        return "this machine"

    @classmethod
    def from_config(cls, cfg: BackendConfig, cache_dir: Path) -> LLMBackend:
        """The backend ``cfg`` (the ``llm`` group) describes; ``cache_dir`` holds downloaded
        models. Raises :class:`LLMBackendError` naming the ``llm.*`` key that is missing."""
        raise NotImplementedError(f"{cls.__name__} is not built from a config")

    @abstractmethod
    def generate(self, batch: Sequence[Conversation], params: GenerationParams) -> list[str]:
        """One completion per conversation, in order. Raise :class:`LLMBackendError` to stop.
        A backend with :attr:`supports_grammar` also takes ``grammars=`` (one per conversation)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines or sessions."""


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut at the first stop string."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def is_local_url(url: str | None) -> bool:
    """True for loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if not url:
        return False
    host = (urlparse(url if "//" in url else f"//{url}").hostname or "").lower()
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_credentialed(source: str | None) -> bool:
    """Whether ``source`` (a docs source name) is credentialed PhysioNet text."""
    return (source or "").lower() in CREDENTIALED_SOURCES


def check_privacy(backend: LLMBackend, credentialed: bool, allow_remote: bool) -> None:
    """Refuse to send credentialed text to a non-local endpoint unless explicitly allowed."""
    if not credentialed or backend.is_local or allow_remote:
        return
    raise PrivacyError(
        f"refusing to send credentialed clinical text (MIMIC-III/IV, MDACE) to "
        f"{backend.endpoint}, which is not on this machine. These notes are released under the "
        "PhysioNet Credentialed Health Data Use Agreement, which forbids sharing the data with "
        "third parties; PhysioNet's guidance names online services such as commercial LLM APIs. "
        "Serve a model locally instead (llm=vllm, llm=hf, or llm=openai with a base_url on "
        "localhost). If your agreement and provider allow it (e.g. a deployment approved for "
        "this data with no retention), set llm.allow_credentialed_remote=true."
    )


# llm.backend -> the class that generates with it, as ``module:Class``. Imported when chosen:
# each backend loads its own engine (hf: torch + transformers; vllm: an optional extra), and
# each class builds itself from the config (:meth:`LLMBackend.from_config`).
BACKEND_CLASSES = {
    "hf": "ccl.spans.llm.hf_backend:HFBackend",
    "openai": "ccl.spans.llm.openai_backend:OpenAIBackend",
    "vllm": "ccl.spans.llm.vllm_backend:VLLMBackend",
}


def make_backend(cfg: BackendConfig, cache_dir: str | Path = ".cache/ccl") -> LLMBackend:
    """The generating backend named by ``cfg.backend`` (its module is imported when chosen:
    :data:`BACKEND_CLASSES`). Raises :class:`LLMBackendError` for ``lexical`` (it generates no
    text), an unknown backend, or a config the backend cannot run with."""
    if cfg.backend == "lexical":
        raise LLMBackendError(
            "llm=lexical does not generate text; it mines spans directly "
            f"(ccl.spans.lexical.LexicalMiner). Pick one of {', '.join(f'llm={b}' for b in BACKENDS)}."
        )
    if cfg.backend not in BACKEND_CLASSES:
        raise LLMBackendError(f"llm.backend={cfg.backend!r}: choose one of {BACKENDS}")
    module, name = BACKEND_CLASSES[cfg.backend].split(":")
    return getattr(importlib.import_module(module), name).from_config(cfg, Path(cache_dir))
