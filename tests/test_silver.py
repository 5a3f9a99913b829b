"""The silver tier: lexical and LLM mining, refinement, provenance, caching, privacy."""

import json
import re

import pytest
from omegaconf import OmegaConf

from ccl.data.pairs import gold_pairs
from ccl.records import Document, SpanPair
from ccl.spans import silver
from ccl.spans.llm import cache as llm_cache
from ccl.spans.llm.base import PrivacyError
from ccl.spans.tiers import TierContext

CODES = {"I10", "E11.9", "J18.9"}



@pytest.fixture(scope="module")
def gold(tab):
    pairs = gold_pairs(tab, [], ("description", "inclusion"), CODES)
    return pairs + [SpanPair("hypertension", "I10", "gold", "index:main")]


def corpus():
    return [
        Document("c1", "PMH: HTN. Admitted for pneumonia.", ["I10", "J18.9"], source="demo"),
        Document("c2", "History of HTN and type 2 diabetes. Denies pneumonia.", ["I10", "E11.9", "J18.9"],
                 source="demo"),
        Document("c3", "Essential hypertension, T2DM. Mother had pneumonia.", ["I10", "E11.9", "J18.9"], source="demo"),
        Document("c4", "Hypertension.", ["I10"], source="demo"),
    ]


def config(method="lexical", k=2, source="demo", corpus_name="demo_corpus", **llm):
    return OmegaConf.create({
        "spans": {"silver": {"method": method, "corpus": corpus_name, "max_pairs_per_code": k}},
        "docs": {"source": source},
        "llm": {"progress": False, **llm},
    })


def test_lexical_tier_ranks_by_frequency_and_skips_gold_negated_family(tab, gold, tmp_path):
    pairs, report = silver.build(TierContext(config(), tab, {"train": []}, corpus(), {"gold": gold}, tmp_path))
    assert [(p.code, p.evidence) for p in pairs] == [
        ("E11.9", "T2DM"), ("E11.9", "type 2 diabetes"),  # one document each: alphabetical
        ("I10", "HTN"), ("I10", "Essential hypertension"),  # HTN in two documents comes first
        ("J18.9", "pneumonia"),  # the negated and the family-history mention are not evidence
    ]  # "Hypertension" (c4) is already a gold phrase of I10
    assert {p.tier for p in pairs} == {"silver"} and {p.source for p in pairs} == {"silver:lexical"}
    assert report["skipped_mentions"] == {"negated": 1, "family": 1}
    assert report["documents"] == 4 and report["documents_with_evidence"] == 4
    assert report["per_code"]["I10"] == {"labelled_docs": 4, "evidence_docs": 4,
                                         "kept": [["HTN", 2, 2], ["Essential hypertension", 1, 1]]}
    assert report["per_code"]["J18.9"]["evidence_docs"] == 1
    assert report["new_codes"] == 0 and report["pairs"] == 5


def test_max_pairs_per_code_and_no_limit(tab, gold, tmp_path):
    one, _ = silver.build(TierContext(config(k=1), tab, {}, corpus(), {"gold": gold}, tmp_path))
    assert [p.evidence for p in one] == ["T2DM", "HTN", "pneumonia"]
    every, report = silver.build(TierContext(config(k=None), tab, {}, corpus(), {"gold": gold}, tmp_path))
    assert report["candidates"] == 6  # T2DM, type 2 diabetes, HTN, Essential hypertension, Hypertension, pneumonia
    assert len(every) == 5  # all but "Hypertension", a gold phrase


def test_tier_is_cached_by_content(tab, gold, tmp_path, monkeypatch):
    first = silver.build(TierContext(config(), tab, {}, corpus(), {"gold": gold}, tmp_path))
    monkeypatch.setattr(silver, "mine_lexical", lambda *a, **k: pytest.fail("rebuilt a cached tier"))
    assert silver.build(TierContext(config(), tab, {}, corpus(), {"gold": gold}, tmp_path)) == first
    changed = corpus()[:2]
    with pytest.raises(pytest.fail.Exception):
        silver.build(TierContext(config(), tab, {}, changed, {"gold": gold}, tmp_path))


def test_corpus_can_be_a_document_split(tab, gold, tmp_path):
    docs = {"train": corpus()[:1]}
    pairs, report = silver.build(TierContext(config(corpus_name="train"), tab, docs, [], {"gold": gold}, tmp_path))
    assert report["documents"] == 1 and {p.evidence for p in pairs} == {"HTN", "pneumonia"}
    with pytest.raises(ValueError, match="spans.silver.corpus='mimic'.*train"):
        silver.build(TierContext(config(corpus_name="mimic"), tab, docs, [], {"gold": gold}, tmp_path))


class Scripted:
    """Answers the extraction and refinement prompts from their text."""

    @staticmethod
    def answer(prompt, params):
        if "<<<" in prompt:
            return Scripted.extract(prompt.split("<<<\n", 1)[1].split("\n>>>", 1)[0])
        return Scripted.refine(prompt)

    @staticmethod
    def extract(note):
        if note == "Hypertension.":
            return "Sorry, I cannot help with that."  # malformed
        answer = {"I10": ["htn", "high blood pressure"], "Z99.2": ["dialysis"]}
        if "type 2 diabetes" in note:
            answer["E11.9"] = ["Type 2 Diabetes"]
        if "pneumonia" in note:
            answer["J18.9"] = ["pneumonia"]
        return "```json\n" + json.dumps(answer) + "\n```"

    @staticmethod
    def refine(prompt):
        code = re.search(r"ICD-10-CM code (\S+):", prompt).group(1)
        if code == "J18.9":
            return "pneumonia, obviously"  # unusable: falls back to frequency order
        if code == "E11.9":
            return '["not a candidate"]'
        return '["HTN", "htn"]'


def test_llm_tier_keeps_verbatim_spans_and_counts_bad_answers(tab, gold, tmp_path, monkeypatch, stand_in_llm):
    backend = stand_in_llm("hf", "scripted", Scripted.answer)
    monkeypatch.setattr(llm_cache, "make_backend", lambda cfg, cache_dir: backend)
    cfg = config(method="llm", backend="hf", model="scripted")
    pairs, report = silver.build(TierContext(cfg, tab, {}, corpus(), {"gold": gold}, tmp_path))
    assert [(p.code, p.evidence, p.source) for p in pairs] == [
        ("E11.9", "type 2 diabetes", "silver:llm:hf"),  # copied with the note's casing
        ("I10", "HTN", "silver:llm:hf"),
        ("J18.9", "pneumonia", "silver:llm:hf"),
    ]
    assert report["parse"] == {
        "codes_not_labelled": 3,  # Z99.2 in the three parsed answers
        "malformed_answers": 2,  # c4's extraction and J18.9's refinement
        "refine_fallbacks": 1,  # E11.9: the answer names no candidate
        "refined_not_a_candidate": 1,
        "spans_not_in_note": 4,  # "high blood pressure" (3 notes), "htn" (c3)
    }
    assert report["llm_calls"]["generated"] == 4 + 3 and report["llm_calls"]["cache_hits"] == 0
    assert sum("<<<" in p for p in backend.prompts) == 4

    # A rebuilt tier (here: a new cache folder for the tier, the same call cache) repeats no call.
    for entry in (tmp_path / "silver").iterdir():
        (entry / "report.json").unlink()
    again, report2 = silver.build(TierContext(cfg, tab, {}, corpus(), {"gold": gold}, tmp_path))
    assert again == pairs and report2["llm_calls"]["cache_hits"] == 7 and len(backend.prompts) == 7


def test_extraction_prompt_lists_codes_and_asks_for_json(tab):
    messages = silver.extraction_prompt("Pt with HTN.", ["I10", "E11.9"], tab.description)
    user = messages[-1]["content"]
    assert "- I10: Essential (primary) hypertension" in user and "Pt with HTN." in user
    assert "JSON" in user and "verbatim" in user and "family" in user


def test_credentialed_notes_never_reach_a_remote_endpoint(tab, gold, tmp_path):
    cfg = config(method="llm", source="mdace", backend="openai", model="gpt-x",
                 base_url="https://api.example.com/v1")
    with pytest.raises(PrivacyError, match="PhysioNet"):
        silver.build(TierContext(cfg, tab, {}, corpus(), {"gold": gold}, tmp_path))
    mimic = [Document("m1", "HTN.", ["I10"], source="mimic4")]
    cfg = config(method="llm", backend="openai", model="gpt-x", base_url="https://api.example.com/v1")
    with pytest.raises(PrivacyError):
        silver.build(TierContext(cfg, tab, {}, mimic, {"gold": gold}, tmp_path))


def test_method_llm_needs_a_generating_backend(tab, gold, tmp_path):
    with pytest.raises(ValueError, match="llm=hf, openai or vllm"):
        silver.build(TierContext(config(method="llm"), tab, {}, corpus(), {"gold": gold}, tmp_path))


def test_refinement_of_credentialed_candidates_is_guarded_too(tab, tmp_path):
    from ccl.spans.llm.base import GenerationParams
    from ccl.spans.llm.cache import CachedLLM
    from ccl.spans.llm.openai_backend import OpenAIBackend

    cands = silver.Candidates()
    cands.add(["I10"], {"I10": ["HTN"]})
    llm = CachedLLM(OpenAIBackend("https://api.example.com/v1", "m"), tmp_path / "c.sqlite", progress=False)
    with pytest.raises(PrivacyError):
        silver.refine_with_llm(llm, tab, cands, {}, 2, GenerationParams(), silver.ParseCounts(),
                               credentialed=True)
