"""The synthetic tier: template substitution from the nearest covered code, filters, LLM synthesis."""

import json

import pytest
from omegaconf import OmegaConf

from ccl.records import Document, SpanPair
from ccl.spans import synthetic
from ccl.spans.llm import cache as llm_cache
from ccl.spans.synthetic import (
    EvidenceFilter,
    description_changes,
    synthesize,
    target_codes,
    template_evidence,
)
from ccl.spans.tiers import TierContext


@pytest.mark.parametrize(
    ("neighbour", "target", "evidence", "expected"),
    [
        # laterality: the differing word occurs in the evidence and is replaced
        ("S72.001A", "S72.002A", "fracture of neck of right femur", "fracture of neck of left femur"),
        # laterality to unspecified: the word is dropped
        ("S72.001A", "S72.009A", "fracture of neck of right femur", "fracture of neck of femur"),
        # unspecified to laterality: inserted before the anchor word that follows it
        ("S72.009A", "S72.001A", "fracture of neck of femur", "fracture of neck of right femur"),
        # episode of care: a differing qualifier clause is appended
        ("S72.001A", "S72.001D", "fracture of neck of right femur",
         "fracture of neck of right femur, subsequent encounter for closed fracture with routine healing"),
        ("S72.001A", "S72.001S", "fracture of neck of right femur", "fracture of neck of right femur, sequela"),
        # type
        ("E11.9", "E10.9", "type 2 diabetes", "type 1 diabetes"),
        # with/without: a trailing qualifier of the main clause is added ...
        ("E11.9", "E11.65", "type 2 diabetes", "type 2 diabetes with hyperglycemia"),
        # ... or replaced, casing of the evidence kept
        ("E11.9", "E11.65", "Type 2 diabetes mellitus without complications",
         "Type 2 diabetes mellitus with hyperglycemia"),
        # with exacerbation -> unspecified: the qualifier goes
        ("J44.1", "J44.9", "COPD with exacerbation", "COPD"),
        # stage numbers
        ("N18.30", "N18.4", "CKD stage 3", "CKD stage 4"),
        # acute/chronic
        ("I50.22", "I50.23", "chronic systolic heart failure", "acute on chronic systolic heart failure"),
        # "stage unspecified" adds nothing specific
        ("H40.9", "H40.10X0", "glaucoma", "open-angle glaucoma"),
        # the differing words are nowhere in "NSTEMI" and have no anchor: no guess
        ("I21.4", "I21.3", "NSTEMI", None),
        # identical descriptions or no change in the evidence: nothing new
        ("E11.9", "E11.9", "type 2 diabetes", None),
    ],
)
def test_template_hand_cases(tab, neighbour, target, evidence, expected):
    assert template_evidence(tab.description(neighbour), tab.description(target), evidence) == expected


def test_description_diff_finds_the_differing_descriptor(tab):
    changes = description_changes(tab.description("S72.001A"), tab.description("S72.002A"))
    assert [(c.old, c.new) for c in changes] == [(("right",), ("left",))]
    assert changes[0].first_clause and changes[0].before == "neck" and changes[0].after == "femur"


def test_filters(tab):
    flt = EvidenceFilter(tab, {"E11.9": ["type 2 diabetes"], "E10.9": ["type 1 diabetes"]})
    ok = {"E11.9": ["type 2 diabetes"]}["E11.9"]
    assert flt.reason("type 2 diabetes with hyperglycemia", "E11.65", ok, set()) is None
    assert flt.reason("E11.65 type 2 diabetes with hyperglycemia", "E11.65", ok, set()) == "code_string"
    assert flt.reason("type 2 diabetes (e1165)", "E11.65", ok, set()) == "code_string"
    assert flt.reason("diabetes", "E11.65", ok, set()) == "length"
    assert flt.reason(" ".join(["word"] * 26), "E11.65", ok, set()) == "length"
    assert flt.reason("Type 2  diabetes", "E11.65", ok, set()) == "same_as_neighbour"
    assert flt.reason("type 1 diabetes", "E11.65", ok, set()) == "other_code_evidence"
    assert flt.reason("type 2 DM with high sugar", "E11.65", ok, {"type 2 dm with high sugar"}) == "duplicate"
    # Clinical words that merely look like codes are not code strings.
    assert flt.reason("T2DM with hyperglycemia", "E11.65", ok, set()) is None


def test_synthesize_covers_uncovered_billable_targets_with_provenance(tab):
    evidence = {"S72.001A": ["fracture of neck of right femur", "right femoral neck fracture"]}
    result, parse = synthesize(tab, ["S72.002A", "S72.001A", "S72.001", "S72.002D"], evidence, k=3, neighbours=1)
    got = [(p.code, p.evidence, p.source) for p in result.pairs]
    assert got == [
        ("S72.002A", "fracture of neck of left femur", "synthetic:template"),
        ("S72.002A", "left femoral neck fracture", "synthetic:template"),
        ("S72.002D", "fracture of neck of left femur, subsequent encounter for closed fracture with routine healing",
         "synthetic:template"),
        ("S72.002D", "left femoral neck fracture, subsequent encounter for closed fracture with routine healing",
         "synthetic:template"),
    ]  # S72.001A is covered already, S72.001 is not billable
    assert {p.tier for p in result.pairs} == {"synthetic"}
    first = result.provenance[0]
    assert (first["neighbour"] == "S72.001A" and first["distance"] == 2
            and first["from"] == "fracture of neck of right femur")
    assert result.uncovered == [] and parse == {}


def test_synthesize_falls_back_to_the_description(tab):
    result, _ = synthesize(tab, ["I21.3"], {"I21.4": ["NSTEMI"]}, k=2, neighbours=1)
    assert [(p.evidence, p.source) for p in result.pairs] == [
        ("ST elevation myocardial infarction of unspecified site", "synthetic:description")
    ]
    assert result.fallbacks["description"] == 1


def _cfg(method="template", targets="docs", **llm):
    return OmegaConf.create({
        "spans": {"synthetic": {"method": method, "max_pairs_per_code": 2, "targets": targets}},
        "docs": {"source": "demo"},
        "llm": {"progress": False, **llm},
    })


def _docs():
    return {
        "train": [Document("t1", "right femoral neck fracture", ["S72.001A"], source="demo")],
        "test": [Document("s1", "left hip fracture", ["S72.002A", "E11.65"], source="demo")],
    }


def test_build_tier_targets_the_documents_label_space_and_is_cached(tab, tmp_path, monkeypatch):
    spans = {"gold": [SpanPair("fracture of neck of right femur", "S72.001A", "gold", "index:main"),
                      SpanPair("type 2 diabetes", "E11.9", "gold", "index:main")]}
    pairs, report = synthetic.build(TierContext(_cfg(), tab, _docs(), [], spans, tmp_path))
    assert {(p.code, p.evidence) for p in pairs} == {
        ("S72.002A", "fracture of neck of left femur"),
        ("E11.65", "type 2 diabetes with hyperglycemia"),
    }
    assert report["target_codes"] == 3 and report["covered_before"] == 1 and report["uncovered_before"] == 2
    assert report["codes"] == 2 and report["still_uncovered"] == 0
    folder = next((tmp_path / "synthetic").iterdir())
    rows = [json.loads(line) for line in (folder / "provenance.jsonl").read_text().splitlines()]
    assert {r["neighbour"] for r in rows} == {"S72.001A", "E11.9"}
    monkeypatch.setattr(synthetic, "synthesize", lambda *a, **k: pytest.fail("rebuilt a cached tier"))
    assert synthetic.build(TierContext(_cfg(), tab, _docs(), [], spans, tmp_path)) == (pairs, report)


def test_target_sets(tab):
    assert target_codes("docs", tab, _docs()) == ["E11.65", "S72.001A", "S72.002A"]
    assert len(target_codes("all", tab, {})) == len(tab.billable_codes()) == 74719
    with pytest.raises(ValueError, match="targets='some'"):
        target_codes("some", tab, {})


def write(prompt, params):
    """Answers the synthesis prompt: one bad answer, one with filtered items."""
    if "E11.65" in prompt.split("\n", 1)[0]:
        return "I'd rather not."
    return json.dumps(["S72.002A fracture", "fracture", "fracture of neck of right femur",
                       "displaced left femoral neck fracture", "left hip fracture after fall"])


def test_llm_synthesis_filters_answers_and_falls_back_to_templates(tab, tmp_path, monkeypatch, stand_in_llm):
    writer = stand_in_llm("openai", "writer", write)
    monkeypatch.setattr(llm_cache, "make_backend", lambda cfg, cache_dir: writer)
    spans = {"gold": [SpanPair("fracture of neck of right femur", "S72.001A", "gold", "index:main"),
                      SpanPair("type 2 diabetes", "E11.9", "gold", "index:main")]}
    cfg = _cfg(method="llm", backend="openai", model="writer", base_url="http://localhost:1/v1")
    pairs, report = synthetic.build(TierContext(cfg, tab, _docs(), [], spans, tmp_path))
    assert [(p.code, p.evidence, p.source) for p in pairs] == [
        ("E11.65", "type 2 diabetes with hyperglycemia", "synthetic:template"),
        ("S72.002A", "displaced left femoral neck fracture", "synthetic:llm:openai"),
        ("S72.002A", "left hip fracture after fall", "synthetic:llm:openai"),
    ]
    assert report["rejected"] == {"code_string": 1, "length": 1, "same_as_neighbour": 1}
    assert report["parse"] == {"lenient_answers": 0, "malformed_answers": 1}
    assert report["fallbacks"] == {"llm_to_template": 1}
    prompt = next(p for p in writer.prompts if p.startswith("ICD-10-CM code S72.002A"))
    assert tab.description("S72.002A") in prompt and "fracture of neck of right femur" in prompt
    assert "S72.001A" in prompt and "Never write ICD-10-CM codes" in prompt


@pytest.mark.parametrize("share", [0.01, 0.5])
def test_covered_index_ranks_exactly_like_nearest_covered(tab, share):
    import random

    from ccl.icd.nearest import nearest_covered
    from ccl.spans.synthetic import CoveredIndex

    rnd = random.Random(7)
    billable = tab.billable_codes()
    covered = set(rnd.sample(billable, int(share * len(billable))))
    index = CoveredIndex(tab, covered)
    for code in rnd.sample([c for c in billable if c not in covered], 40):
        assert index.nearest(code, k=3) == nearest_covered(tab, code, covered, k=3)
    assert CoveredIndex(tab, []).nearest("E11.9", k=3) == []


def test_llm_synthesis_from_credentialed_silver_phrases_is_guarded(tab, tmp_path):
    from ccl.spans.llm.base import PrivacyError

    spans = {"gold": [SpanPair("type 2 diabetes", "E11.9", "gold", "index:main")],
             "silver": [SpanPair("T2DM", "E11.9", "silver", "silver:lexical")]}
    cfg = _cfg(method="llm", backend="openai", model="m", base_url="https://api.example.com/v1")
    cfg.docs.source = "mimic4"
    with pytest.raises(PrivacyError, match="PhysioNet"):
        synthetic.build(TierContext(cfg, tab, _docs(), [], spans, tmp_path))
