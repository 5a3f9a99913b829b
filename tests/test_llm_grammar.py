"""Structured decoding of the silver tier's answers (issue 24): the llguidance grammars, the
HF logits processor that applies them, span location, cache keys and the yield report.

Decoding is driven with random logits through :class:`GrammarProcessor` on a byte-level
tokenizer built here (no model, no download): whatever the scores, the answer must be
valid JSON whose spans are copies of the note.
"""

import json
import random

import pytest
import torch

from ccl.spans import silver
from ccl.spans.llm import cache as llm_cache
from ccl.spans.llm.base import GenerationParams
from ccl.spans.llm.cache import call_key
from ccl.spans.llm.grammar import (
    extraction_grammar,
    json_safe,
    locate_copy,
    refinement_grammar,
)
from ccl.spans.tiers import TierContext
from tests.test_silver import config, corpus

pytest.importorskip("llguidance")

NOTE = 'Pt has HTN and\nAFib. Says "tired" \\ denies chest pain; T2DM  on insulin.'
EOS = "<eos>"


@pytest.fixture(scope="module")
def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)


def _decode(tokenizer, grammar, seed, steps=600):
    """Greedy decoding of random logits under ``grammar``; returns the text."""
    from ccl.spans.llm.hf_backend import GrammarProcessor, grammar_tokenizer

    vocab = len(tokenizer)
    proc = GrammarProcessor(grammar_tokenizer(tokenizer, vocab), [grammar], 3, [tokenizer.eos_token_id])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros((1, 3), dtype=torch.long)  # three prompt columns
    for _ in range(steps):
        scores = proc(ids, torch.randn((1, vocab), generator=gen))
        nxt = int(scores.argmax(-1))
        if nxt == tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    else:
        pytest.fail("the grammar never let decoding stop")
    return tokenizer.decode(ids[0, 3:].tolist())


@pytest.mark.parametrize("seed", range(6))
def test_any_decoding_under_the_extraction_grammar_copies_the_note(byte_tokenizer, seed):
    codes = ["I10", "I48.91", "E11.9"]
    text = _decode(byte_tokenizer, extraction_grammar(NOTE, codes, max_spans=2, max_words=4), seed)
    answer = json.loads(text)  # always valid JSON
    assert list(answer) == codes  # every code, in order, nothing else
    for spans in answer.values():
        assert len(spans) <= 2
        for span in spans:
            assert 1 <= len(span.split()) <= 4
            assert span in json_safe(NOTE)  # whole words of the note, nothing made up
            start, end = locate_copy(span, NOTE)
            assert json_safe(NOTE)[start:end] == span


@pytest.mark.parametrize("seed", range(3))
def test_any_decoding_under_the_refinement_grammar_picks_candidates(byte_tokenizer, seed):
    candidates = ["HTN", 'chest "pain"', "élevated BP", "AFib"]
    text = _decode(byte_tokenizer, refinement_grammar(candidates, 2), seed)
    picked = json.loads(text)
    assert len(picked) <= 2 and set(picked) <= set(candidates)


def test_locate_copy_ignores_case_and_spacing_and_keeps_offsets():
    assert locate_copy("HTN and AFib.", NOTE) == (7, 20)  # the note has a newline between them
    assert NOTE[7:20] == "HTN and\nAFib."
    assert locate_copy("t2dm on INSULIN", NOTE) == (NOTE.index("T2DM"), len(NOTE) - 1)
    assert locate_copy("tired  ", NOTE) == (NOTE.index("tired"), NOTE.index("tired") + 5)
    assert locate_copy("heart failure", NOTE) is None and locate_copy("  ", NOTE) is None


def test_grammars_refuse_empty_requests():
    with pytest.raises(ValueError, match="without codes"):
        extraction_grammar(NOTE, [])
    with pytest.raises(ValueError, match="candidates"):
        refinement_grammar([], 3)


def test_a_grammar_is_part_of_the_call_key():
    conv, params = [{"role": "user", "content": "x"}], GenerationParams()
    free = call_key("hf", "m", conv, params)
    assert free == call_key("hf", "m", conv, params, None)  # keys of free calls are unchanged
    assert len({free, call_key("hf", "m", conv, params, "a"), call_key("hf", "m", conv, params, "b")}) == 3


def test_llm_tier_sends_grammars_and_reports_its_yield(tab, tmp_path, monkeypatch, stand_in_llm):
    """A backend that decodes under a grammar gets one per call (the note's codes and words;
    the candidates); the report says how many calls, spans and pairs, and what was dropped."""
    seen = []

    def answer(prompt, params):
        if "<<<" in prompt:
            note = prompt.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
            spans = {"I10": ["HTN", "history"], "J18.9": ["pneumonia", "history"], "E11.9": ["T2DM"]}
            return json.dumps({c: [s for s in v if s.lower() in note.lower()] for c, v in spans.items()})
        return '["HTN"]' if "I10" in prompt else "[]"

    backend = stand_in_llm("hf", "scripted", answer)
    backend.supports_grammar = True
    generate = backend.generate

    def generate_with_grammars(batch, params, grammars=None):
        seen.extend(grammars or [None] * len(batch))
        return generate(batch, params)

    backend.generate = generate_with_grammars
    monkeypatch.setattr(llm_cache, "make_backend", lambda cfg, cache_dir: backend)
    docs = corpus()
    docs[0] = docs[0].__class__("c1", "History: HTN. History of pneumonia.", ["I10", "J18.9"], source="demo")
    cfg = config(method="llm", backend="hf", model="scripted", k=2)
    pairs, report = silver.build(TierContext(cfg, tab, {}, docs, {}, tmp_path))
    extraction = [g for g in seen if g and "substring_words" in g]
    assert len(extraction) == 4 and all(g and g.startswith("start:") for g in seen)
    assert '\\"I10\\": ' in extraction[0] and "History of pneumonia." in extraction[0]
    assert len(seen) == 4 + report["codes_with_candidates"]
    assert ("I10", "HTN") in [(p.code, p.evidence) for p in pairs]
    y = report["yield"]
    assert y["calls"] == len(seen) and y["pairs"] == len(pairs) == report["pairs"]
    assert y["dropped"]["spans_shared_by_codes"] == 4  # "History" given for I10 and J18.9 in c1, c2
    assert y["spans_kept"] == y["spans_answered"] - sum(
        n for k, n in y["dropped"].items() if k.startswith("spans_"))


def test_json_safe_keeps_offsets():
    safe = json_safe(NOTE)
    assert len(safe) == len(NOTE) and '"' not in safe and "\\" not in safe and "\n" not in safe
    assert random.Random(0).choice(range(len(NOTE))) < len(safe)


def test_vllm_guidance_backend_accepts_the_grammars(byte_tokenizer):
    """The grammars as vLLM 0.32 receives them (llm=vllm): StructuredOutputsParams(grammar=...)
    validated by its guidance backend. Runs where vLLM is installed (the [gpu] extra)."""
    pytest.importorskip("vllm")
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.structured_output.backend_guidance import validate_guidance_grammar

    from ccl.spans.llm.hf_backend import grammar_tokenizer

    lltok = grammar_tokenizer(byte_tokenizer, len(byte_tokenizer))
    for grammar in (extraction_grammar(NOTE, ["I10", "E11.9"]), refinement_grammar(["HTN", 'a "b"'], 2)):
        params = SamplingParams(max_tokens=8, structured_outputs=StructuredOutputsParams(grammar=grammar))
        validate_guidance_grammar(params, lltok)
    with pytest.raises(Exception, match="Grammar error"):  # and refuses one it cannot
        validate_guidance_grammar(SamplingParams(structured_outputs=StructuredOutputsParams(
            grammar='start: %regex {"substring_words": 3}')), lltok)
