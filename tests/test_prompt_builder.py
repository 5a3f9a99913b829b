"""One prompt builder and one truncation policy for training and prediction (issue 14, kind 3)."""

from __future__ import annotations

import warnings

import pytest
from transformers import AutoTokenizer

from ccl.config import BackboneConfig, TinyBackboneConfig
from ccl.data.prompt_builder import PromptLimits, build_document_prompts, limits_from_config
from ccl.data.prompts import SYSTEM, document_example, document_prompt, human_evidence_prefix
from ccl.data.sft import tokenize_examples
from ccl.generation.chat import encode_prompts, render_prompt
from ccl.model.tiny import build_tiny
from ccl.predict.parser import ParsedOutput, merge_outputs
from ccl.records import Document

SENTENCE = "Patient number {i} has type 2 diabetes and essential hypertension, seen on day {i}. "
LONG = "".join(SENTENCE.format(i=i) for i in range(120))  # about 2,000 tokens of the tiny tokenizer
DESCRIBE = {"E11.9": "Type 2 diabetes mellitus without complications", "I10": "Essential hypertension"}.get


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    cfg = BackboneConfig(name="tiny", kind="tiny", max_length=256,
        tiny=TinyBackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=600))
    ex = document_example("evidence", LONG[:400], ["type 2 diabetes"], ["E11.9", "I10"], DESCRIBE)
    corpus = [LONG, SYSTEM, ex.answer, *(m["content"] for m in ex.messages)] * 5
    return AutoTokenizer.from_pretrained(build_tiny(cfg, corpus, tmp_path_factory.mktemp("cache")))


def n_tokens(tok, text: str) -> int:
    return len(encode_prompts(tok, [text])[0])


def test_long_note_is_cut_in_prediction_as_in_training(tok):
    """The issue's case: a note of ~1,250 tokens, max_length 256; training cut it, prediction did not."""
    note = LONG[: len(LONG) * 1250 // n_tokens(tok, LONG)]
    assert n_tokens(tok, render_prompt(tok, document_prompt("evidence", note), False)) > 1000
    ex = document_example("evidence", note, ["type 2 diabetes"], ["E11.9"], DESCRIBE)
    [train], stats = tokenize_examples(tok, [ex], False, 256)
    answer = train["length"] - train["prompt_length"]
    assert train["truncated"] and train["length"] <= 256
    # Prediction with the answer's room the training example had: the very same prompt ids.
    with pytest.warns(UserWarning, match="1 of 1 notes were cut"):
        plan = build_document_prompts(tok, [note], "evidence", False, PromptLimits(256, answer))
    assert encode_prompts(tok, plan.prompts)[0] == train["input_ids"][: train["prompt_length"]]
    assert plan.note_tokens_cut[0] == stats.tokens_removed > 0
    # With max_new_tokens=64 the prompt is at most 192 tokens: prompt + answer fit the context.
    with pytest.warns(UserWarning):
        plan = build_document_prompts(tok, [note], "evidence", False, PromptLimits(256, 64))
    assert 150 < n_tokens(tok, plan.prompts[0]) <= 192
    assert plan.summary()["notes_cut"] == 1


def test_short_notes_are_untouched_and_not_warned(tok):
    notes = ["Type 2 diabetes.", LONG[:300]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = build_document_prompts(tok, notes, "evidence", False, PromptLimits(1024, 160))
    assert plan.prompts == [render_prompt(tok, document_prompt("evidence", n), False) for n in notes]
    assert plan.note_tokens_cut == [0, 0] and plan.windows == [1, 1] and plan.doc_index == [0, 1]
    unlimited = build_document_prompts(tok, [LONG], "evidence", False, PromptLimits(None))
    assert unlimited.prompts == [render_prompt(tok, document_prompt("evidence", LONG), False)]


def test_human_evidence_prefix_counts_against_the_budget(tok):
    prefix = human_evidence_prefix(["type 2 diabetes", "essential hypertension"])
    with pytest.warns(UserWarning):
        plan = build_document_prompts(tok, [LONG], "evidence", False, PromptLimits(256, 64), [prefix])
    assert plan.prompts[0].endswith(prefix)
    assert n_tokens(tok, plan.prompts[0]) <= 192 + 1  # the prefix's own tokenisation may merge one


def test_windows_cover_the_whole_note_and_each_fits(tok):
    limits = PromptLimits(256, 64, long_notes="window", window_overlap=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windowing drops nothing: no warning
        plan = build_document_prompts(tok, ["Short note.", LONG], "evidence", False, limits)
    assert plan.doc_index[0] == 0 and set(plan.doc_index[1:]) == {1}
    assert plan.windows[0] == 1 and plan.windows[1] >= 10
    assert plan.note_tokens_cut == [0, 0]
    assert all(n_tokens(tok, p) <= 192 for p in plan.prompts)
    bodies = [p.split("Note:\n", 1)[1].split("\n\n### Assistant:")[0] for p in plan.prompts[1:]]
    # Every sentence of the note is in some window; neighbours overlap.
    for i in range(120):
        assert any(f"Patient number {i} has" in b for b in bodies), i
    assert LONG.strip().startswith(bodies[0]) and LONG.strip().endswith(bodies[-1])
    assert all(b[-20:] in bodies[k + 1] for k, b in enumerate(bodies[:-1]))


def test_bad_limits_are_clear_errors(tok):
    with pytest.raises(ValueError, match="infer.long_notes"):
        PromptLimits(256, 64, long_notes="chunk")
    with pytest.raises(ValueError, match="lower infer.max_new_tokens"):
        PromptLimits(256, 256)
    with pytest.raises(ValueError, match="note 1 of 1"):
        build_document_prompts(tok, [LONG], "evidence", False, PromptLimits(64, 60))


def test_limits_from_config_reads_old_and_new_configs():
    from omegaconf import OmegaConf

    old = OmegaConf.create({"backbone": {"max_length": 512}, "infer": {"max_new_tokens": 100}})
    assert limits_from_config(old) == PromptLimits(512, 100, "truncate", 64)
    new = OmegaConf.create({"backbone": {"max_length": 512},
                            "infer": {"max_new_tokens": 100, "long_notes": "window", "window_overlap": 16}})
    assert limits_from_config(new) == PromptLimits(512, 100, "window", 16)
    new.infer.window_overlap = 0  # no overlap is a setting, not a missing value
    assert limits_from_config(new).window_overlap == 0


def test_merge_outputs_keeps_note_order_and_counts_overlap_once():
    a = ParsedOutput(["type 2 diabetes", "hypertension"], ["E11.9", "I10"])
    b = ParsedOutput(["hypertension", "asthma"], ["I10", "J45.909"])
    assert merge_outputs([a]) is a
    merged = merge_outputs([a, b])
    assert merged.evidence == ["type 2 diabetes", "hypertension", "asthma"]
    assert merged.codes == ["E11.9", "I10", "J45.909"]


def test_predict_stage_cuts_and_windows_long_notes(tok, monkeypatch):
    """predict_documents: prompts from the builder, rows counting the cut, windows merged."""
    from omegaconf import OmegaConf

    import ccl.stages.predict as predict

    seen: list[list[str]] = []

    class Echo:  # an engine answering every prompt with a code of its own
        def generate(self, prompts, max_new_tokens):
            seen.append(list(prompts))
            return [f"Evidence:\n- phrase {i}\nCodes:\nE11.{i % 10}" for i in range(len(prompts))]

        def complete(self, prompts, max_new_tokens):
            from ccl.generation.record import Generation

            return [Generation(text) for text in self.generate(prompts, max_new_tokens)]

    monkeypatch.setattr("ccl.generation.engine.make_engine", lambda *a, **k: Echo())
    docs = [Document(id="short", text="Type 2 diabetes.", codes=["E11.9"]),
            Document(id="long", text=LONG, codes=["E11.9"])]
    cfg = OmegaConf.create({"task": "evidence", "backbone": {"max_length": 256, "use_chat_template": False},
                            "infer": {"human_evidence": False, "max_new_tokens": 64,
                                      "long_notes": "truncate", "window_overlap": 32}})
    with pytest.warns(UserWarning, match="cut"):
        rows = predict.predict_documents(cfg, None, tok, docs)
    assert [r["note_tokens_cut"] > 0 for r in rows] == [False, True]
    assert all(n_tokens(tok, p) <= 192 for p in seen[-1])
    cfg.infer.long_notes = "window"
    rows = predict.predict_documents(cfg, None, tok, docs)
    n = rows[1]["windows"]
    assert n > 1 and rows[0]["windows"] == 1 and rows[1]["note_tokens_cut"] == 0
    assert rows[1]["codes"] == [f"E11.{i % 10}" for i in range(1, min(n + 1, 11))]
    assert rows[1]["evidence"] == [f"phrase {i}" for i in range(1, n + 1)]
    assert rows[1]["raw_output"].startswith("[window 1 of")


def test_windowed_note_gets_each_codes_best_score_over_its_windows(tok, monkeypatch):
    """Per-code log-probabilities (issue 16) survive windows (issue 14): the max over windows."""
    from omegaconf import OmegaConf

    import ccl.stages.predict as predict
    from ccl.generation.record import Generation
    from ccl.predict.scores import code_scores

    made: list[Generation] = []

    class Scored:  # every window writes E11.9; the first also I10; window k's tokens score -(k + 1) / 10
        record_logprobs = False

        def complete(self, prompts, max_new_tokens):
            out = []
            for k in range(len(prompts)):
                text = "Evidence:\n- sugar\nCodes:\nE11.9" + ("\nI10" if k == 0 else "")
                ids = tok.encode(text, add_special_tokens=False)
                lps = [-(k + 1) / 10] * len(ids) if self.record_logprobs else None
                out.append(Generation(text, ids, "stop", lps))
            made.extend(out)
            return out

    engine = Scored()
    monkeypatch.setattr("ccl.generation.engine.make_engine", lambda *a, **k: engine)
    docs = [Document(id="long", text=LONG, codes=["E11.9"])]
    cfg = OmegaConf.create({"task": "evidence", "backbone": {"max_length": 256, "use_chat_template": False},
                            "infer": {"human_evidence": False, "max_new_tokens": 64,
                                      "long_notes": "window", "window_overlap": 32}})
    [row] = predict.predict_documents(cfg, None, tok, docs)
    assert engine.record_logprobs and row["windows"] == len(made) > 1
    first = code_scores(tok, made[0].token_ids, made[0].logprobs, ["E11.9", "I10"])
    assert row["code_scores"] == first  # window 1 scores highest for both codes
    later = code_scores(tok, made[-1].token_ids, made[-1].logprobs, ["E11.9"])
    assert later["E11.9"] < first["E11.9"] < 0

    engine.record_logprobs = False  # an engine without log-probabilities: no scores, no error
    monkeypatch.setattr(Scored, "__setattr__", lambda self, k, v: None)  # ignores being switched on
    [row] = predict.predict_documents(cfg, None, tok, docs)
    assert "code_scores" not in row
