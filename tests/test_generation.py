"""Generation engines: batched greedy decoding equals one-by-one, stops, engine choice."""

from __future__ import annotations

import importlib.util
import inspect
import json
import random
import re

import pytest
import torch

from ccl.config import InferConfig
from ccl.data.prompts import document_example
from ccl.generation import engine as engine_mod
from ccl.generation.engine import GenerationEngine, make_engine
from ccl.generation.hf_engine import HFEngine
from ccl.generation.vllm_engine import VLLM_HINT, VLLMEngine, adapter_max_lora_rank

WORDS = [
    "patient",
    "diabetes",
    "mellitus",
    "type",
    "hypertension",
    "essential",
    "chronic",
    "kidney",
    "disease",
    "denies",
    "pain",
    "history",
    "of",
    "asthma",
]
DESCRIBE = {"I10": "Essential (primary) hypertension"}.get
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, random_tiny_llm):
    """A tiny Llama whose weights are re-drawn large enough that its output depends on the prompt.

    (Freshly initialised, std 0.02, it emits one constant token whatever the
    prompt, which would let a padding bug pass unnoticed.)
    """
    rng = random.Random(0)
    notes = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in (3, 40, 7, 90, 15, 60, 1, 25)]
    exs = [document_example("evidence", n, [], ["I10"], DESCRIBE) for n in notes]
    return random_tiny_llm(tmp_path_factory.mktemp("cache"), notes, exs)


@pytest.fixture(scope="module")
def reference(tiny):
    model, tok, prompts = tiny
    return HFEngine(model, tok, batch_size=1).generate_ids(prompts, NEW_TOKENS)


def test_batched_greedy_equals_one_by_one(tiny, reference):
    model, tok, prompts = tiny
    assert len({tuple(r) for r in reference}) == len(prompts)  # outputs differ, so order is checked
    assert len({len(p) for p in prompts}) == len(prompts)  # and prompts need padding in a batch
    for batch_size in (3, 8):
        assert (
            HFEngine(model, tok, batch_size=batch_size).generate_ids(prompts, NEW_TOKENS)
            == reference
        )
    texts = HFEngine(model, tok, batch_size=8).generate(prompts, NEW_TOKENS)
    assert texts == tok.batch_decode(reference, skip_special_tokens=True)


@pytest.mark.parametrize("static_cache", [True, False])
@pytest.mark.parametrize(("shared_prefix", "row_prefill"), [(True, True), (True, False), (False, True), (False, False)])
def test_shared_prefix_and_row_prefill_keep_greedy_equal_to_one_by_one(
    tiny, reference, static_cache, shared_prefix, row_prefill
):
    """The prompt prefix every row shares is computed once; each row's own tokens, one row at a time."""
    model, tok, prompts = tiny
    for batch_size in (3, 8):
        engine = HFEngine(model, tok, batch_size, static_cache=static_cache, shared_prefix=shared_prefix,
                          row_prefill=row_prefill)
        assert engine.generate_ids(prompts, NEW_TOKENS) == reference
        assert (engine.shared_tokens > 0) == shared_prefix  # the prefix path was taken
    assert HFEngine(model, tok).row_prefill  # the default on a CPU


def test_row_prefill_without_a_shared_prefix_and_with_one_token_prompts(tiny):
    model, tok, _ = tiny
    prompts = ["of", "diabetes type chronic kidney disease", "pain", "history of asthma denies pain"]
    one = HFEngine(model, tok, batch_size=1).generate_ids(prompts, 6)
    engine = HFEngine(model, tok, batch_size=4, row_prefill=True)
    assert engine.generate_ids(prompts, 6) == one
    assert engine.shared_tokens == 0


def test_shared_prefix_through_a_lora_model(tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok, prompts = tiny
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    one = HFEngine(lora, tok, batch_size=1).generate_ids(prompts, NEW_TOKENS)
    for row_prefill in (True, False):
        engine = HFEngine(lora, tok, batch_size=8, row_prefill=row_prefill)
        assert engine.generate_ids(prompts, NEW_TOKENS) == one
        assert engine.shared_tokens > 0


def test_stops_at_stop_token_and_honours_max_new_tokens(tiny, reference):
    model, tok, prompts = tiny
    assert all(len(r) == NEW_TOKENS for r in reference)
    first = reference[0]
    k = next(k for k in range(2, NEW_TOKENS) if first[k] not in first[:k])
    engine = HFEngine(model, tok, batch_size=4, stop_token_ids=[first[k]])
    assert engine.generate_ids(prompts[:1], NEW_TOKENS) == [first[:k]]
    assert engine.generate(prompts[:1], NEW_TOKENS) == [
        tok.decode(first[:k], skip_special_tokens=True)
    ]
    assert HFEngine(model, tok).generate_ids(prompts[:2], 5) == [r[:5] for r in reference[:2]]


def test_generation_leaves_training_mode_as_it_was(tiny):
    model, tok, prompts = tiny
    model.train()
    HFEngine(model, tok).generate(prompts[:2], 3)
    assert model.training
    model.eval()


def test_make_engine_hf(tiny):
    model, tok, _ = tiny
    eng = make_engine(InferConfig(engine="hf", batch_size=5), model, tok)
    assert isinstance(eng, HFEngine) and isinstance(eng, GenerationEngine) and eng.batch_size == 5


@pytest.mark.skipif(
    engine_mod.vllm_unavailable_reason() is None, reason="vLLM can run here"
)
def test_make_engine_vllm_falls_back_to_hf_with_a_warning(tiny):
    model, tok, _ = tiny
    reason = engine_mod.vllm_unavailable_reason()
    match = rf"^infer.engine=vllm: {re.escape(reason)}; falling back to HF generate$"
    with pytest.warns(RuntimeWarning, match=match):
        eng = make_engine(InferConfig(engine="vllm", batch_size=256), model, tok)
    assert isinstance(eng, HFEngine) and eng.batch_size == engine_mod.HF_FALLBACK_BATCH


def test_make_engine_errors(tiny):
    model, tok, _ = tiny
    with pytest.raises(ValueError, match="unknown infer.engine 'tgi'"):
        make_engine(InferConfig(engine="tgi"), model, tok)
    with pytest.raises(ValueError, match="needs the loaded model"):
        make_engine(InferConfig(engine="hf"), None, None)
    # vLLM's engine is built from the run's directories by the predict stage, not from a
    # loaded model: tests/test_vllm_path.py runs that path against a vLLM stand-in.


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_engine_without_vllm_says_how_to_get_it(tmp_path):
    with pytest.raises(ImportError, match=r"pip install ccl\[gpu\]") as err:
        VLLMEngine(tmp_path)
    assert str(err.value) == VLLM_HINT


def test_adapter_max_lora_rank(tmp_path):
    def adapter(cfg: dict):
        (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
        return adapter_max_lora_rank(tmp_path)

    assert adapter({"r": 16}) == 16
    assert adapter({"r": 12}) == 16
    assert adapter({"r": 8, "rank_pattern": {"q_proj": 40}}) == 64
    with pytest.raises(ValueError, match="above vLLM's largest"):
        adapter({"r": 1000})
    with pytest.raises(ValueError, match="adapter_config.json: cannot read the LoRA rank"):
        adapter({"alpha": 3})
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        adapter_max_lora_rank(tmp_path / "missing")


# --- the repeated-line guard ----------------------------------------------------------------


def test_repeated_last_line_looks_at_complete_lines_of_one_section():
    from ccl.generation.guards import repeated_last_line

    assert not repeated_last_line("Evidence:\n- fever\n- cough\n- fever\n")  # mentioned twice: honest
    assert repeated_last_line("Evidence:\n- fever\n- cough\n- fever\n- fever\n")  # a third copy: a loop
    assert repeated_last_line("I10 - x\nI10 - x\n", in_codes=True)  # codes: the second copy
    assert not repeated_last_line("Evidence:\n- fever\n- cough\n- fever")  # line not finished
    assert not repeated_last_line("Evidence:\n- fever\n- fever cough\n- fever cough\n")
    assert not repeated_last_line("Evidence:\n- fever\n- fever\nCodes:\n- fever\n")  # other section
    assert repeated_last_line("Evidence:\n- a\nCodes:\nI10 - x\nI10 - x\n")
    assert not repeated_last_line("\n\n")  # blank lines are not evidence


def _scripted_decode(tok, script: str, in_codes: bool, steps: int) -> str:
    """Greedy decoding of a 'model' that always wants the next token of ``script``, guarded."""
    from ccl.generation.guards import RepeatedLineGuard

    want = tok.encode(script, add_special_tokens=False)
    prompt = [7, 7, 7]
    stop = tok.eos_token_id
    guard = RepeatedLineGuard(tok, prompt_width=len(prompt), in_codes=[in_codes], stop_id=stop)
    seq = list(prompt)
    for t in range(min(steps, len(want))):
        scores = torch.zeros(1, len(tok))
        scores[0, want[t]] = 10.0
        nxt = int(guard(torch.tensor([seq]), scores).argmax(-1))
        if nxt == stop:
            break
        seq.append(nxt)
    return tok.decode(seq[len(prompt) :])


def test_guard_ends_a_looping_evidence_section_with_the_codes_header(tiny):
    _, tok, _ = tiny
    loop = "Evidence:\n- fever\n- cough\n" + "- fever\n" * 6
    out = _scripted_decode(tok, loop, in_codes=False, steps=60)
    assert out.startswith("Evidence:\n- fever\n- cough\n- fever\n- fever\nCodes:\n")
    # unguarded, the same script never reaches the codes
    assert "Codes:" not in loop


def test_guard_stops_a_looping_codes_section(tiny):
    _, tok, _ = tiny
    out = _scripted_decode(tok, "I10 - x\nE11.9 - y\n" + "I10 - x\n" * 5, in_codes=True, steps=80)
    assert out == "I10 - x\nE11.9 - y\nI10 - x\n"
    out = _scripted_decode(tok, "Evidence:\n- a\nCodes:\nI10 - x\nI10 - x\nI10 - x\n", False, 80)
    assert out == "Evidence:\n- a\nCodes:\nI10 - x\nI10 - x\n"


def test_guarded_batched_decoding_equals_one_by_one(tiny):
    model, tok, prompts = tiny
    one = HFEngine(model, tok, batch_size=1, repeat_guard=True).generate_ids(prompts, NEW_TOKENS)
    assert HFEngine(model, tok, batch_size=8, repeat_guard=True).generate_ids(prompts, NEW_TOKENS) == one


def test_make_engine_guards_by_default(tiny):
    model, tok, _ = tiny
    assert make_engine(InferConfig(engine="hf"), model, tok).repeat_guard
    assert not make_engine(InferConfig(engine="hf", stop_repeated_lines=False), model, tok).repeat_guard


def test_periodic_tail_finds_a_loop_inside_a_line():
    from ccl.generation.guards import periodic_tail

    assert periodic_tail([5, 1, 2, 1, 2, 1, 2, 1, 2])
    assert periodic_tail([9] * 4) and not periodic_tail([9] * 3)
    assert not periodic_tail([1, 2, 3, 1, 2, 3, 1, 2, 3])  # three copies only
    assert not periodic_tail(list(range(40)))


def test_guard_ends_a_line_that_loops_inside(tiny):
    _, tok, _ = tiny
    script = "Evidence:\n- pain," + " pain," * 12 + "\n- fever\n"
    assert len(tok.encode(" pain,", add_special_tokens=False)) <= 8  # a loop the guard can see
    out = _scripted_decode(tok, script, in_codes=False, steps=80)
    first, second = out.split("\n")[1:3]
    assert first.startswith("- pain,") and first.count("pain") <= 6
    assert "pain" in second  # the script goes on after the cut line


def test_repetition_penalty_is_explicit_not_inherited_from_the_model(tiny):
    """HF generate would apply a penalty the model ships in generation_config; vLLM would not."""
    model, tok, prompts = tiny
    plain = make_engine(InferConfig(engine="hf", stop_repeated_lines=False), model, tok).generate_ids(prompts, 24)
    before = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 5.0
    try:
        shipped = make_engine(InferConfig(engine="hf", stop_repeated_lines=False), model, tok).generate_ids(prompts, 24)
        penalised = make_engine(InferConfig(engine="hf", stop_repeated_lines=False, repetition_penalty=5.0),
                                model, tok).generate_ids(prompts, 24)
    finally:
        model.generation_config.repetition_penalty = before
    assert shipped == plain  # the model's own penalty is not applied
    assert penalised != plain  # the configured one is


def test_without_a_penalty_the_model_keeps_its_own(tiny):
    """repetition_penalty=None (the expansion backend): the generation_config's penalty applies,
    as it did when the expansion backend called generate itself."""
    model, tok, prompts = tiny
    before = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 5.0
    try:
        own = HFEngine(model, tok, batch_size=3, repetition_penalty=None).generate_ids(prompts, 24)
        explicit = HFEngine(model, tok, batch_size=3, repetition_penalty=5.0).generate_ids(prompts, 24)
        none = HFEngine(model, tok, batch_size=3).generate_ids(prompts, 24)
    finally:
        model.generation_config.repetition_penalty = before
    assert own == explicit != none


def test_complete_reports_answers_cut_by_the_bound(tiny):
    model, tok, prompts = tiny
    engine = HFEngine(model, tok, batch_size=3)
    short = engine.complete(prompts, 2)
    long = engine.complete(prompts, 64)
    for s, g in zip(short, long, strict=True):
        assert s.truncated == (len(g.token_ids) >= 2)  # a 2-token answer is cut unless it stopped
        assert g.truncated == (len(g.token_ids) == 64)
        assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
    assert [g.text for g in long] == engine.generate(prompts, 64)


def test_cache_keyword_follows_the_installed_transformers(tiny):
    """transformers 5.24 renamed forward's ``past_key_values`` to ``cache``; pyproject admits both."""
    from ccl.generation.hf_engine import cache_keyword

    model, _, _ = tiny
    assert cache_keyword(model) in inspect.signature(type(model).forward).parameters

    class Older(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    assert cache_keyword(Older()) == "past_key_values"


def test_sampling_with_a_vanishing_top_p_is_greedy(tiny, reference):
    """``top_p`` reaches generate: a nucleus of (almost) zero mass keeps only the top token, so
    sampling at a high temperature gives the greedy answer; without ``top_p`` it does not."""
    model, tok, prompts = tiny
    torch.manual_seed(0)
    nucleus = HFEngine(model, tok, batch_size=8, temperature=5.0, top_p=1e-9).generate_ids(prompts, NEW_TOKENS)
    assert nucleus == reference
    torch.manual_seed(0)
    assert HFEngine(model, tok, batch_size=8, temperature=5.0).generate_ids(prompts, NEW_TOKENS) != reference
