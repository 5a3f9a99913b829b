"""The GPU path's decisions, on the CPU: device placement, the answer bound, launches, planning."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from test_run import compose_cfg, quiet

from ccl.config import TrainConfig, compose_config
from ccl.generation.record import answer_length_stats, answer_token_bound, finish_reason
from ccl.run import run
from ccl.stages import predict as predict_mod
from ccl.utils import distributed


def test_inference_device_follows_the_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert predict_mod.inference_device(TrainConfig(accelerator="auto")).type == "cuda"
    assert predict_mod.inference_device(TrainConfig(accelerator="gpu")).type == "cuda"
    assert predict_mod.inference_device(TrainConfig(accelerator="cpu")).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert predict_mod.inference_device(TrainConfig(accelerator="auto")).type == "cpu"


def test_flash_attention_is_switched_off_on_the_cpu():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    model.config._attn_implementation = "flash_attention_2"
    placed = predict_mod.place_model(model, torch.device("cpu"))
    assert placed.config._attn_implementation == "sdpa"
    assert next(placed.parameters()).device.type == "cpu"


def test_predict_stage_places_the_model_on_the_inference_device(tmp_path, monkeypatch):
    seen = []

    def device(train_cfg):
        seen.append(str(train_cfg.accelerator))
        return torch.device("cpu")

    monkeypatch.setattr(predict_mod, "inference_device", device)
    placed = []
    place = predict_mod.place_model
    monkeypatch.setattr(predict_mod, "place_model", lambda m, d: placed.append(d) or place(m, d))
    run(compose_cfg(tmp_path, "+experiment=ablation_row4", "train.accelerator=cpu"), tmp_path / "run", quiet())
    assert seen == ["cpu"] and placed == [torch.device("cpu")]


def test_answer_bound_is_the_99th_percentile_plus_a_margin():
    lengths = list(range(1, 101))  # 1..100 tokens
    stats = answer_length_stats(lengths)
    assert stats["p99"] == 99 and stats["max"] == 100 and stats["p50"] == 50
    assert stats["bound"] == answer_token_bound(99) == 131  # max(ceil(1.25 * 99), 99 + 32)
    assert answer_token_bound(400) == 500
    with pytest.raises(ValueError, match="no training answers"):
        answer_length_stats([])
    assert finish_reason([5, 6, 2], {2}, 3) == "stop"
    assert finish_reason([5, 6, 7], {2}, 3) == "length"
    assert finish_reason([5], {2}, 3) == "stop"


def test_the_run_records_the_bound_and_decodes_to_it(tmp_path, monkeypatch):
    """max_new_tokens null: the train stage records the training answers' bound; predict uses it."""
    used = []
    complete = predict_mod.predict_documents

    def spy(*args, **kwargs):
        used.append(kwargs["max_new_tokens"])
        return complete(*args, **kwargs)

    monkeypatch.setattr(predict_mod, "predict_documents", spy)
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer.max_new_tokens=null")
    metrics = run(cfg, tmp_path / "run", quiet())
    meta = json.loads((tmp_path / "run" / "model" / "ccl_model.json").read_text())
    stats = meta["answer_tokens"]
    assert stats["n"] == 16 and stats["p99"] <= stats["max"] < stats["bound"]
    assert used == [stats["bound"]]
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n_truncated_answers"] == sum(r["truncated"] for r in rows)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_truncated_answers"] >= 0


def test_warmup_ratio_plans_warmup_from_the_planned_steps(tmp_path):
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "train.max_steps=0", "train.max_epochs=1",
                      "train.warmup_ratio=0.5", "stage=data+train")
    run(cfg, tmp_path / "run", quiet())
    meta = json.loads((tmp_path / "run" / "model" / "ccl_model.json").read_text())
    assert meta["world_size"] == 1 and meta["warmup_steps"] == -(-meta["steps"] // 2)


def test_planned_world_size_is_lightnings():
    assert distributed.planned_world_size(TrainConfig(accelerator="cpu", devices=1)) == 1
    assert distributed.planned_world_size(TrainConfig(accelerator="cpu", devices=2, strategy="ddp")) == 2


def test_multirun_of_multi_device_jobs_is_refused_unless_torchrun_started_them(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "_hydra_multirun", lambda: True)
    monkeypatch.delenv("RANK", raising=False)
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "train.devices=2", "train.strategy=ddp",
                      "train.accelerator=cpu")
    with pytest.raises(ValueError, match="re-run the whole sweep in every child"):
        run(cfg, tmp_path / "run", quiet())
    assert not (tmp_path / "run" / "data_manifest.json").exists()
    distributed.check_launch(OmegaConf.structured(TrainConfig(devices=1)))  # one device: fine
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.check_launch(cfg.train)  # torchrun started every rank: fine


def test_rank0_decision_is_the_value_in_a_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.rank0_decision(True) is True and distributed.rank0_decision(False) is False


def test_guard_is_part_of_the_predict_key_under_both_engines(tmp_path):
    # Issue 22: the guard runs under vLLM too (ccl.generation.vllm_guard), so it shapes both keys.
    from ccl.stages.keys import predict_key

    hf_on = compose_cfg(tmp_path, "infer=hf", "infer.stop_repeated_lines=true")
    hf_off = compose_cfg(tmp_path, "infer=hf", "infer.stop_repeated_lines=false")
    v_on = compose_cfg(tmp_path, "infer=vllm", "infer.stop_repeated_lines=true")
    v_off = compose_cfg(tmp_path, "infer=vllm", "infer.stop_repeated_lines=false")
    assert predict_key(hf_on, "t") != predict_key(hf_off, "t")
    from ccl.generation.engine import guard_applies

    assert guard_applies(hf_on.infer) and guard_applies(v_on.infer) and not guard_applies(v_off.infer)
    assert predict_key(v_on, "t") != predict_key(v_off, "t")


def test_gpu_preset_composes(tmp_path):
    cfg = compose_cfg(tmp_path, "backbone=qwen3_4b", "train=lora_gpu", "infer=vllm")
    t = cfg.train
    assert (t.lr, t.warmup_ratio, t.max_epochs, t.precision) == (1e-4, 0.1, 3, "bf16-mixed")
    assert t.gradient_checkpointing and t.lora.top_layers is None and t.packing
    assert cfg.infer.repetition_penalty == 1.0 and cfg.infer.gpu_memory_utilization < 0.9
    for engine in ("hf", "vllm"):  # answers bounded by the training answers unless overridden
        assert compose_config([f"infer={engine}"]).infer.max_new_tokens is None


def test_both_engine_presets_decode_alike():
    # Issue 22: infer=hf and infer=vllm decode by the same rules (the guard included); only
    # engine settings (batch size, vLLM's memory and context) may differ.
    hf, vllm = (OmegaConf.to_container(compose_config([f"infer={e}"]).infer, enum_to_str=True) for e in ("hf", "vllm"))
    engine_only = {"engine", "batch_size", "gpu_memory_utilization", "max_model_len"}
    shared = (set(hf) | set(vllm)) - engine_only
    assert {k: hf.get(k) for k in shared} == {k: vllm.get(k) for k in shared}
    assert vllm["stop_repeated_lines"] is True
