"""Restricted decoding (trie processor, vLLM regex) and per-code scores from the same generation."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from transformers import AutoTokenizer

from ccl.data.prompts import document_answer, document_example
from ccl.generation.hf_engine import HFEngine
from ccl.generation.logprobs import TokenLogprobRecorder
from ccl.icd.codes import CODE_PATTERN, canonical_code
from ccl.predict.constrained import (
    CodeTrieProcessor,
    allowed_codes,
    answer_regex,
    configure_engine,
)
from ccl.predict.parser import parse_output
from ccl.predict.scores import attach_code_scores, code_scores, code_spans

CODES = ["E11.9", "E10.9", "I10", "N18.3", "S72.001A", "J45.909"]
ALLOWED = ["E11.9", "I10", "N18.3", "S72.001A"]
DESCRIBE = {"I10": "Essential hypertension", "E11.9": "Type 2 diabetes", "N18.3": "CKD stage 3"}.get
WORDS = ["patient", "diabetes", "hypertension", "kidney", "fracture", "asthma", "denies", "history"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, random_tiny_llm):
    """A tiny Llama with large random weights (its output depends on the prompt), and prompts."""
    rng = random.Random(0)
    notes = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in (3, 30, 9, 60, 14, 1)]
    exs = [document_example("evidence", n, [n.split()[0]], rng.sample(CODES, 2), DESCRIBE) for n in notes]
    return random_tiny_llm(tmp_path_factory.mktemp("cache"), notes, exs)


def test_codes_are_tokenised_alone_as_in_an_answer(tiny):
    _, tok, _ = tiny
    for code in CODES:
        ids = tok.encode(code, add_special_tokens=False)
        answer = tok.encode(document_answer("evidence", ["fever"], ["I10", code], DESCRIBE), add_special_tokens=False)
        assert any(answer[i : i + len(ids)] == ids for i in range(len(answer))), code


def test_allowed_codes_keep_billable_ones(xml_path):
    from ccl.icd.tabular import load_tabular

    tab = load_tabular(xml_path)
    assert allowed_codes(["e119", "E11", "I10", "Q99.99", "S72.001"], tab) == ["E11.9", "I10"]


def _random_decode(tok, processor, prefix_ids, steps, seed, newline_bias=2.5):
    """Sample from random logits (newlines favoured) through ``processor``; the generated text."""
    g = torch.Generator().manual_seed(seed)
    newline = tok.encode("\n", add_special_tokens=False)[0]
    width = 3
    seq = [7, 7, 7, *prefix_ids]
    for _ in range(steps):
        scores = torch.randn(1, len(tok), generator=g) * 3
        scores[0, newline] += newline_bias
        scores[0, tok.eos_token_id] = -1e9  # keep going: more code lines to check
        out = processor(torch.tensor([seq]), scores)
        probs = torch.softmax(out[0].float(), -1)
        seq.append(int(torch.multinomial(probs, 1, generator=g)))
    return tok.decode(seq[width:])


def _line_codes(text):
    """The code-shaped token starting each non-empty line of the codes section."""
    section = text.split("Codes:\n", 1)[1] if "Codes:\n" in text else text
    lines = section.split("\n")
    last = lines.pop()  # cut by the step limit: it may hold the start of a code
    if any(c.startswith(last) for c in ALLOWED):
        last = ""
    out = []
    for line in [*lines, last]:
        if line.strip():
            m = CODE_PATTERN.match(line)
            out.append(canonical_code(m.group(0)) if m else f"<no code: {line!r}>")
    return out


@pytest.mark.parametrize("seed", range(12))
def test_trie_lets_only_allowed_codes_start_a_code_line(tiny, seed):
    _, tok, _ = tiny
    eos = tok.eos_token_id
    # human-evidence mode: generation starts in the codes section
    proc = CodeTrieProcessor(tok, ALLOWED, prompt_width=3, in_codes=[True], stop_ids=[eos])
    text = _random_decode(tok, proc, [], steps=80, seed=seed)
    codes = _line_codes(text)
    assert codes and set(codes) <= set(ALLOWED), text
    # evidence first: free text until the header, then code lines
    proc = CodeTrieProcessor(tok, ALLOWED, prompt_width=3, in_codes=[False], stop_ids=[eos])
    prefix = tok.encode("Evidence:\n- kidney\nCodes:\n", add_special_tokens=False)
    text = _random_decode(tok, proc, prefix, steps=80, seed=seed)
    assert set(_line_codes(text)) <= set(ALLOWED), text
    # without the processor random logits write no valid code lines
    assert proc.masked_steps > 0


def test_trie_with_one_token_per_code_is_a_mask_over_code_tokens(tiny):
    _, tok, _ = tiny
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.add_tokens(ALLOWED)
    ids = [tok.convert_tokens_to_ids(c) for c in ALLOWED]
    proc = CodeTrieProcessor(tok, ALLOWED, prompt_width=3, in_codes=[True], stop_ids=[tok.eos_token_id])
    assert set(proc.trie.children[0]) == set(ids)
    out = proc(torch.tensor([[7, 7, 7]]), torch.zeros(1, len(tok)))
    allowed = {i for i in range(len(tok)) if out[0, i] > -1e30}
    assert set(ids) <= allowed and allowed - set(ids) <= {tok.eos_token_id, *tok.encode("\n", add_special_tokens=False)}


def test_answer_regex_matches_training_answers_and_refuses_other_codes():
    good = document_answer("evidence", ["kidney", "sugar high"], ["E11.9", "I10"], DESCRIBE)
    rx = answer_regex(ALLOWED, "evidence")
    assert re.fullmatch(rx, good) and re.fullmatch(rx, good + "\n")
    assert not re.fullmatch(rx, document_answer("evidence", ["x"], ["E10.9"], DESCRIBE))
    assert not re.fullmatch(rx, good.replace("E11.9", "E11.99"))
    assert re.fullmatch(answer_regex(ALLOWED, "codes_only"), document_answer("codes_only", [], ["N18.3"], DESCRIBE))
    assert re.fullmatch(answer_regex(ALLOWED, human_evidence=True), "I10 - Essential hypertension\nS72.001A")
    with pytest.raises(ValueError, match="cot"):
        answer_regex(ALLOWED, "cot")
    with pytest.raises(ValueError, match="no allowed codes"):
        answer_regex([], "evidence")


def test_code_scores_sum_the_tokens_of_each_code(tiny):
    _, tok, _ = tiny
    text = "Evidence:\n- I10 mention\nCodes:\nI10 - x\nE11.9 - y"
    ids = tok.encode(text, add_special_tokens=False)
    lps = [-(k + 1) / 100 for k in range(len(ids))]
    spans = code_spans(text, ["I10", "E11.9"])
    assert text[slice(*spans["I10"])] == "I10" and spans["I10"][0] > text.index("Codes:")
    ends = [len(tok.decode(ids[: k + 1])) for k in range(len(ids))]
    starts = [0, *ends[:-1]]
    for code, (s, e) in spans.items():
        want = sum(lp for b, en, lp in zip(starts, ends, lps, strict=True) if b < e and en > s)
        assert code_scores(tok, ids, lps, [code])[code] == pytest.approx(want, abs=1e-6)
    assert code_scores(tok, ids, lps, ["N18.3"]) == {}


def test_recorder_keeps_the_chosen_tokens_log_probabilities():
    rec = TokenLogprobRecorder(rows=1, prompt_width=2)
    s1 = torch.tensor([[0.0, 1.0, 2.0]])
    s2 = torch.tensor([[3.0, 0.0, 0.0]])
    rec(torch.tensor([[9, 9]]), s1.clone())
    rec(torch.tensor([[9, 9, 2]]), s2.clone())  # token 2 was chosen from s1
    [lps] = rec.finish(torch.tensor([0]))  # token 0 from s2
    assert lps == pytest.approx([float(torch.log_softmax(s1, -1)[0, 2]), float(torch.log_softmax(s2, -1)[0, 0])])


def test_engine_records_scores_without_changing_outputs_and_restricts_codes(tiny):
    model, tok, prompts = tiny
    plain = HFEngine(model, tok, batch_size=3)
    base = plain.generate_ids(prompts, 30)
    scored = HFEngine(model, tok, batch_size=3, record_logprobs=True)
    assert scored.generate_ids(prompts, 30) == base
    for ids, lps in zip(scored.last_ids, scored.last_logprobs, strict=True):
        assert len(ids) == len(lps) and all(lp <= 1e-6 for lp in lps)
    rows = [{"codes": parse_output(tok.decode(i, skip_special_tokens=True)).codes} for i in base]
    assert attach_code_scores(scored, tok, rows)
    assert attach_code_scores(plain, tok, [{"codes": []} for _ in prompts]) is False

    # restricted: prompts ending with the codes header (human-evidence mode) write allowed codes only
    he = [p + "Evidence:\n- kidney\nCodes:\n" for p in prompts]
    restricted = HFEngine(model, tok, batch_size=3, record_logprobs=True)
    assert configure_engine(restricted, tok, ALLOWED, "evidence", human_evidence=True)
    for out in restricted.generate(he, 30):
        assert set(_line_codes("Codes:\n" + out)) <= set(ALLOWED), out
    assert configure_engine(restricted, tok, None, "evidence", False) is False


def test_predict_cli_shows_scores_and_guideline_flags(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf
    from test_run import compose_cfg

    import ccl.stages.predict as predict_mod
    from ccl.cli.predict import main as predict_main

    cfg = compose_cfg(tmp_path, "train=none", "infer.restrict_codes=true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "restrict_codes.json").write_text('["E10.9", "E11.9"]')
    seen = {}

    def fake_predict(cfg, model, tok, docs, console=None, human_evidence=None, allowed_codes=None, **kw):
        seen["allowed"] = allowed_codes
        return [{"id": "note", "evidence": ["type 2 diabetes"], "codes": ["E11.9", "E10.9"],
                 "code_scores": {"E11.9": math.log(0.8), "E10.9": math.log(0.25)}}]

    monkeypatch.setattr(predict_mod, "load_trained", lambda *a, **k: (None, None))
    monkeypatch.setattr(predict_mod, "place_model", lambda model, device: model)
    monkeypatch.setattr(predict_mod, "answer_bound", lambda *a, **k: 64)
    monkeypatch.setattr(predict_mod, "predict_documents", fake_predict)
    note = tmp_path / "note.txt"
    note.write_text("type 2 diabetes")
    assert predict_main([str(run_dir), str(note)]) == 0
    out = capsys.readouterr().out
    assert seen["allowed"] == ["E10.9", "E11.9"]
    assert "0.80" in out and "0.25" in out and "-0.22" in out
    assert "excludes1:E10.9" in out and "excludes1:E11.9" in out


def test_vllm_gets_the_same_grammar_as_structured_outputs(monkeypatch):
    import sys
    import types
    from dataclasses import dataclass

    @dataclass
    class StructuredOutputsParams:  # the vLLM >= 0.11 API, faked: vLLM needs a CUDA machine
        regex: str | None = None

    fake = types.ModuleType("vllm.sampling_params")
    fake.StructuredOutputsParams = StructuredOutputsParams
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", fake)

    class FakeVLLMEngine:
        sampling_kwargs: dict = {}

    engine = FakeVLLMEngine()
    engine.sampling_kwargs = {}
    assert configure_engine(engine, None, ALLOWED, "evidence", human_evidence=False)
    params = engine.sampling_kwargs["structured_outputs"]
    assert params.regex == answer_regex(ALLOWED, "evidence")

    del fake.StructuredOutputsParams  # an older vLLM: guided_decoding=GuidedDecodingParams(regex=...)
    fake.GuidedDecodingParams = StructuredOutputsParams
    engine.sampling_kwargs = {}
    configure_engine(engine, None, ALLOWED, "codes_only", human_evidence=False)
    assert engine.sampling_kwargs["guided_decoding"].regex == answer_regex(ALLOWED, "codes_only")


def test_restricted_predictions_drop_code_shaped_words_outside_the_codes_section(tiny):
    from ccl.config import compose_config
    from ccl.generation.record import Generation
    from ccl.records import Document
    from ccl.stages.predict import predict_documents

    model, tok, _ = tiny

    class CannedEngine:  # an answer cut before "Codes:" (read whole by the parser), and a full one
        def complete(self, prompts, bound):
            return [Generation("Evidence:\n- T2DM\n- HTN (I10)", finish_reason="length"),
                    Generation("Evidence:\n- T2DM\nCodes:\nE11.9 - Type 2 diabetes mellitus")]

    docs = [Document(id=f"d{i}", text="pt with T2DM", codes=["E11.9"]) for i in range(2)]
    cfg = compose_config(["backbone=tiny", "logger=none", "infer.max_new_tokens=16", "backbone.use_chat_template=false",
                   "infer.span_recode=false"])
    free = predict_documents(cfg, model, tok, docs, engine=CannedEngine())
    assert [r["codes"] for r in free] == [["T2D.M", "I10"], ["E11.9"]]
    cfg.infer.restrict_codes = True
    restricted = predict_documents(cfg, model, tok, docs, allowed_codes=["E11.9", "I10"], engine=CannedEngine())
    assert [r["codes"] for r in restricted] == [["I10"], ["E11.9"]]


def test_span_recode_adds_the_span_prompt_code_of_each_evidence_phrase(tiny):
    from ccl.config import compose_config
    from ccl.generation.record import Generation
    from ccl.records import Document
    from ccl.stages.predict import predict_documents

    model, tok, _ = tiny

    class CannedEngine:  # document answers first, then one span answer per distinct phrase
        def __init__(self):
            self.calls = []

        def complete(self, prompts, bound):
            self.calls.append(prompts)
            if len(self.calls) == 1:
                return [Generation("Evidence:\n- CAD\n- T2DM\nCodes:\nE11.9 - Type 2 diabetes mellitus"),
                        Generation("Evidence:\n- CAD\nCodes:\n")]
            span = {"CAD": "I25.10 - Atherosclerotic heart disease", "T2DM": "E11.9 - Type 2 diabetes"}
            return [Generation(next(v for k, v in span.items() if k in p)) for p in prompts]

    docs = [Document(id=f"d{i}", text="pt with CAD", codes=["I25.10"]) for i in range(2)]
    cfg = compose_config(["backbone=tiny", "logger=none", "infer.max_new_tokens=16", "backbone.use_chat_template=false",
                   "infer.span_recode=true"])
    engine = CannedEngine()
    rows = predict_documents(cfg, model, tok, docs, engine=engine)
    assert len(engine.calls[1]) == 2  # one span prompt per distinct phrase ("CAD" twice -> once)
    assert [r["codes"] for r in rows] == [["E11.9", "I25.10"], ["I25.10"]]
    assert [r["span_codes"] for r in rows] == [["I25.10"], ["I25.10"]]
