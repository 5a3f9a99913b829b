"""Shared test fixtures."""

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import torch

from ccl.icd.tabular import TabularList, default_xml_path, load_tabular


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Two shared cores: one torch thread per process runs these small models fastest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def xml_path() -> Path:
    """The Tabular List XML shipped with simple-icd-10-cm (skip when absent)."""
    try:
        path = default_xml_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    if not path.exists():
        pytest.skip(f"{path} is not shipped with this simple-icd-10-cm version")
    return path


@pytest.fixture(scope="session")
def tab(xml_path: Path) -> TabularList:
    """The April 2026 Tabular List (parsed once per process; read-only)."""
    return load_tabular(xml_path)


class FakeWeb:
    """``requests.get`` as pooch's downloader calls it (:func:`ccl.utils.downloads.fetch_url`),
    answered without a network: ``serve(url) -> bytes`` answers each URL (it may raise, e.g.
    ``requests.HTTPError``); the default refuses every URL as a machine without network does.
    ``calls`` lists the URLs asked for, in order, ``asked`` the ``(url, timeout)`` pairs."""

    OFFLINE = "Failed to resolve 'host' ([Errno -3] Temporary failure in name resolution)"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.asked: list[tuple[str, Any]] = []
        self.serve: Callable[[str], bytes] = self.refuse

    @classmethod
    def refuse(cls, url: str) -> bytes:
        raise requests.ConnectionError(cls.OFFLINE)

    def get(self, url: str, timeout: Any = None, **kwargs: Any) -> Any:
        self.calls.append(url)
        self.asked.append((url, timeout))
        body = self.serve(url)
        return SimpleNamespace(raise_for_status=lambda: None, headers={"content-length": str(len(body))},
                               iter_content=lambda chunk_size=1024: [body])


@pytest.fixture(autouse=True)
def web(monkeypatch: pytest.MonkeyPatch) -> FakeWeb:
    """Tests never download: every download of every test goes to a :class:`FakeWeb`,
    offline unless the test sets ``web.serve``."""
    fake = FakeWeb()
    monkeypatch.setattr(requests, "get", fake.get)
    return fake


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder (tiny backbones, tokenizers) shared by one test module's tests."""
    return tmp_path_factory.mktemp("cache")


def _random_tiny_llm(cache_dir: Path, notes: Sequence[str], examples: Sequence[Any]) -> tuple[Any, Any, list[str]]:
    """A tiny Llama (tokenizer trained on ``notes`` and ``examples``) whose 2-D weights are
    re-drawn large enough that its output depends on the prompt; and the examples' prompts.

    (Freshly initialised, std 0.02, it emits one constant token whatever the prompt,
    which would let a padding or masking bug pass unnoticed.)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ccl.config import BackboneConfig, TinyBackboneConfig
    from ccl.data.prompts import SYSTEM
    from ccl.data.sft import render_prompt
    from ccl.model.tiny import build_tiny

    cfg = BackboneConfig(name="tiny", kind="tiny", max_length=512,
        tiny=TinyBackboneConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=600))
    corpus = [*notes, SYSTEM, *(m["content"] for e in examples for m in e.messages),
              *(e.answer for e in examples)] * 3
    path = build_tiny(cfg, corpus, cache_dir)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model, tok, [render_prompt(tok, e.messages, use_chat_template=False) for e in examples]


@pytest.fixture(scope="session")
def random_tiny_llm() -> Callable[[Path, Sequence[str], Sequence[Any]], tuple[Any, Any, list[str]]]:
    """Builds a prompt-sensitive tiny Llama: ``random_tiny_llm(cache_dir, notes, examples)``."""
    return _random_tiny_llm


@pytest.fixture
def stand_in_llm() -> Callable[..., Any]:
    """A factory of stand-in span-tier LLMs: ``stand_in_llm(name, model_id, answer)`` is an
    :class:`ccl.spans.llm.base.LLMBackend` whose reply to each conversation is
    ``answer(last message's content, params)``; it records those messages in ``.prompts``."""
    from ccl.spans.llm.base import LLMBackend

    class StandIn(LLMBackend):
        def __init__(self, name: str, model_id: str, answer: Callable[[str, Any], str]) -> None:
            self.name, self._model_id, self.answer, self.prompts = name, model_id, answer, []

        @property
        def model_id(self) -> str:
            return self._model_id

        def generate(self, batch: Sequence[Any], params: Any) -> list[str]:
            prompts = [conv[-1]["content"] for conv in batch]
            self.prompts.extend(prompts)
            return [self.answer(p, params) for p in prompts]

    return StandIn


def pytest_collection_modifyitems(config, items):
    """Tests marked ``vllm`` need a vLLM that runs here (a GPU, or vLLM's CPU build): skipped,
    with the reason, elsewhere (the main venv), so ``pytest -m vllm`` in the vLLM venv runs them."""
    marked = [item for item in items if item.get_closest_marker("vllm")]
    if not marked:
        return
    from ccl.generation.vllm_engine import vllm_unavailable_reason

    reason = vllm_unavailable_reason()
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"needs vLLM: {reason}"))
