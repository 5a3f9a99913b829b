"""Benchmarks: FLOPs by hand, and every command run small, end to end, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ccl.bench import cli as bench
from ccl.bench import gpu as bench_gpu
from ccl.bench.common import attention_flops, train_flops

ICD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icd10cm"
SMALL_TINY = [
    "backbone=tiny", "backbone.tiny.hidden_size=32", "backbone.tiny.num_layers=1", "backbone.tiny.num_heads=2",
    "backbone.tiny.intermediate_size=64", "backbone.tiny.vocab_size=400", "icd.download=false",
    "docs.demo.n_train=6", "docs.n_val=2", "docs.demo.n_test=4", "docs.demo.n_codes=6", "docs.demo.corpus_size=10",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return f"paths.cache_dir={tmp_path_factory.mktemp('cache')}"


def test_flops_by_hand():
    # per layer and unit width: n(n+1)/2 pairs x 2 matmuls x 2 FLOPs x 3 (fwd + bwd)
    assert attention_flops([2, 3], n_layers=1, attn_width=1) == 12 * (3 + 6)
    assert attention_flops([4], n_layers=2, attn_width=8) == 12 * 10 * 2 * 8
    assert train_flops([2, 3], n_params=10, n_layers=1, attn_width=1) == {
        "tokens": 5.0, "dense": 300.0, "attention": 108.0, "total": 408.0}
    assert train_flops([2, 3], 10, None, None)["attention"] == 0.0


def test_gpu_peak_table():
    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_gpu.peak_tflops("NVIDIA H200") == 989.0
    assert bench_gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench_gpu.peak_tflops("Tesla T4") is None


def test_gpu_script_small_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = bench_gpu.main(["--small", "--steps", "2", "--warmup", "1", "--peak-tflops", "0.0001", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    packed, padded = result["arms"]["packed"], result["arms"]["padded"]
    assert packed["real_share"] == 1.0 and padded["real_share"] < 1.0  # one packed row: no padding at all
    assert packed["real_tokens"] == padded["real_tokens"] and packed["examples"] == padded["examples"]
    assert packed["model_flops_6n"] == padded["model_flops_6n"]  # same useful work
    for arm in (packed, padded):
        assert arm["mfu_6n"] == pytest.approx(arm["model_flops_6n"] / (1e8 * arm["seconds"]), rel=1e-3)
        assert arm["hfu_4n"] < arm["mfu_6n"]
    assert result["architecture"]["num_hidden_layers"] == 2 and result["lora_rank"] == 16
    assert result["parameters"] == n_params(bench_gpu.SMALL)  # LoRA not counted
    assert 0 < result["trainable_parameters"] < result["parameters"]


def n_params(arch: dict) -> int:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**arch))
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def test_qwen3_4b_config_has_4b_parameters():
    # embeddings 151,936 x 2,560 (tied) + 36 layers of ~100.9 M: Qwen3-4B's 4.02 B
    assert n_params(bench_gpu.QWEN3_4B) == pytest.approx(4.022e9, rel=1e-3)


def test_gpu_script_refuses_the_4b_model_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench_gpu.main([])


def test_cli_rejects_what_is_neither_an_option_nor_an_override(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["train", "tiny"])
    assert "key=value" in capsys.readouterr().err
    args, overrides = bench.parse_args(["cost", "--sft-docs", "5", "docs=demo", "spans=[gold]"])
    assert args.sft_docs == 5 and overrides == ["docs=demo", "spans=[gold]"]


def test_train_bench_small(tmp_path, cache):
    out = tmp_path / "train.json"
    result = bench.main(["train", "--examples", "8", "--rounds", "2", "--batch-size", "4", "--out", str(out),
                         *SMALL_TINY, cache])
    assert json.loads(out.read_text())["command"].startswith("python -m ccl.bench train --examples 8")
    arms = result["arms"]
    assert set(arms) == {"packed", "packed_mask", "padded"}
    assert len({a["real_tokens"] for a in arms.values()}) == 1  # the same examples in every arm
    assert all(a["examples"] == 8 for a in arms.values())
    assert arms["packed"]["real_share"] == 1.0
    assert arms["padded"]["real_share"] < arms["packed_mask"]["real_share"] <= 1.0
    assert set(result["real_token_throughput_vs_padded"]) == {"packed", "packed_mask"}
    assert {"cpu", "cores", "torch"} <= set(result["machine"])


def test_predict_bench_small(cache):
    result = bench.main(["predict", "--docs", "4", "--max-new-tokens", "4", "--batch-sizes", "2",
                         "--rounds", "1", *SMALL_TINY, cache])
    assert set(result["arms"]) == {"batched_2", "batched_2_padded_prefill", "batched_2_dynamic_cache", "single"}
    assert all(a["identical_to_single"] for a in result["arms"].values())
    assert all(a["prefill_cpu_seconds"] > 0 for a in result["arms"].values())
    assert result["documents"] == 4 and result["max_new_tokens"] == 4
    assert result["shared_prefix_tokens"] > 8 and result["repeat_guard"]


def test_cost_bench_small(cache):
    base = bench.main(["cost", *SMALL_TINY, cache])
    sft, ccl = base["recipes"]["document SFT"], base["recipes"]["CCL"]
    assert sft["examples"] == 6  # docs.demo.n_train
    assert ccl["examples"] == 6 + base["span_examples_per_epoch"] and base["span_examples_per_epoch"] == 6
    assert base["flops_ratio"] == round(sft["total"] / ccl["total"], 2)
    assert sft["dense"] == pytest.approx(6 * base["n_params"] * sft["tokens"])
    assert base["layers"] == 1 and base["attention_width"] == 32
    doubled = bench.main(["cost", "--sft-docs", "12", *SMALL_TINY, cache])
    assert doubled["recipes"]["document SFT"]["tokens"] == 2 * sft["tokens"]
    assert doubled["recipes"]["CCL"] == ccl
    scaled = bench.main(["cost", "--sft-doc-tokens", "1000", *SMALL_TINY, cache])
    assert np.isclose(scaled["recipes"]["document SFT"]["mean_tokens"], 1000, atol=1)


@pytest.mark.slow
@pytest.mark.skipif(not ICD_DIR.is_dir(), reason=f"{ICD_DIR} (the shared ICD-10-CM index files) is absent")
def test_data_bench_on_the_real_index(tmp_path):
    result = bench.main(["data", "--icd-dir", str(ICD_DIR), "--out", str(tmp_path / "data.json")])
    assert set(result["files"]) == {"index", "eindex", "drug", "neoplasm"}
    assert result["gold_pairs"] > 100_000
    assert result["index_plus_gold_tier_s"] <= 30 and result["tabular_cached_s"] <= 1


def test_trl_peer_arms_train_ccls_examples_with_ccls_lora(cache):
    """TRL's SFTTrainer arms beside CCL's default step: same tokens, same answer tokens, same LoRA."""
    pytest.importorskip("trl", reason="the peer arms need: pip install -e '.[peers]'")
    overrides = [o for o in SMALL_TINY if not o.startswith("backbone.tiny.num_layers")]
    result = bench.main(["train", "--arms", "after,trl_fast,trl_default", "--examples", "8", "--rounds", "2",
                         "--held-out", "2", *overrides, "backbone.tiny.num_layers=2", "train.lora.top_layers=1", cache])
    arms = result["arms"]
    after, fast, default = arms["after"], arms["trl_fast"], arms["trl_default"]
    # The same examples: every real token and every answer (loss) token of CCL's arm, no more.
    for key in ("real_tokens", "answer_tokens"):
        assert fast[key] == default[key] == after[key] > 0, key
    assert result["examples"]["doc"] + result["examples"]["span"] == 8
    assert fast["computed_tokens"] == fast["real_tokens"]  # packed, padding-free: one flat row
    assert fast["resolved"]["padding_free"] and not default["resolved"]["padding_free"]
    assert default["computed_tokens"] > default["real_tokens"]  # padded to the longest
    assert default["steps"] == 2  # SFTConfig's default 8 per step: one step per round of 4
    # CCL's LoRA: the same rank, modules and top layer, so the same trainable LoRA parameters,
    # and without gradient checkpointing backward stops at that layer as in CCL's arm.
    assert fast["lora_parameters"] == default["lora_parameters"] == after["lora_parameters"] > 0
    assert fast["layers_reached_by_backward"] == after["layers_reached_by_backward"] == [1]
    losses = [a["held_out_loss"] for a in arms.values()]
    assert all(np.isfinite(losses)) and max(losses) - min(losses) < 0.5
    assert result["vs_best_peer"]["peer"] in ("trl_fast", "trl_default")
