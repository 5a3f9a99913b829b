"""The lexical miner: fuzzy term matching that skips negated and family-history mentions."""


import pytest

from ccl.config import DemoDocsConfig, DocsConfig
from ccl.data.demo import DEFAULT_CODE_POOL, build_demo_world
from ccl.data.pairs import gold_pairs
from ccl.spans.lexical import LexicalMiner, locate, term_variants
from ccl.spans.silver import lexical_terms

TERMS = {
    "I10": ["Essential (primary) hypertension", "hypertension"],
    "J18.9": ["Pneumonia, unspecified organism"],
    "E11.9": ["Type 2 diabetes mellitus without complications"],
    "J44.1": ["Chronic obstructive pulmonary disease with (acute) exacerbation"],
    "C50.919": ["Malignant neoplasm of unspecified site of unspecified female breast"],
    "I26.99": ["Other pulmonary embolism without acute cor pulmonale"],
    "I95.9": ["Hypotension, unspecified"],
    "N18.30": ["Chronic kidney disease, stage 3 unspecified"],
    "N18.9": ["Chronic kidney disease, unspecified"],
    "F03.90": ["dementia"],
    "G30.9": ["Dementia in Alzheimer's disease"],
    "K92.2": ["Gastrointestinal hemorrhage, unspecified"],
}


@pytest.fixture()
def miner():
    return LexicalMiner(TERMS)


def found(miner, text, codes):
    mentions = miner.find(text, codes)
    for m in mentions:
        assert text[m.start : m.end] == m.text  # verbatim
    return [(m.code, m.text) for m in mentions]


NEGATED = ["Patient denies pneumonia.", "No evidence of pneumonia on imaging.", "Workup was negative for pneumonia.",
           "Pneumonia was ruled out.", "Pneumonia was considered but ruled out.", "Without evidence of pneumonia.",
           "No history of COPD, hypertension or pneumonia."]
FAMILY = ["Mother had breast cancer and malignant neoplasm of female breast.",
          "Family history of type 2 diabetes in a sibling.", "Father with hypertension.",
          "Social history: lives alone.\n\nFamily history: hypertension and type 2 diabetes.\n\nExam: normal."]


@pytest.mark.parametrize("text", NEGATED)
def test_negated_mentions_are_skipped(miner, text):
    assert found(miner, text, ["J18.9", "I10", "J44.1"]) == []
    assert miner.skipped["negated"] >= 1


@pytest.mark.parametrize("text", FAMILY)
def test_family_history_mentions_are_skipped(miner, text):
    assert found(miner, text, ["C50.919", "E11.9", "I10"]) == []
    assert miner.skipped["family"] >= 1


def test_affirmed_mentions_are_kept_with_scope_and_sentence_limits(miner):
    text = (
        "Brought in by daughter and found to have hypotension. No fever but pneumonia on imaging. "
        "No complaints today. Hypertension is controlled."
    )
    assert found(miner, text, ["I95.9", "J18.9", "I10"]) == [
        ("I95.9", "hypotension"), ("J18.9", "pneumonia"), ("I10", "Hypertension")
    ]


def test_fuzzy_tokens_abbreviations_and_omitted_function_words(miner):
    text = "Admitted with pnuemonia. PMH: HTN, T2DM. COPD exacerbation. Gastrointestinal haemorrhage."
    assert found(miner, text, ["J18.9", "I10", "E11.9", "J44.1", "K92.2"]) == [
        ("J18.9", "pnuemonia"), ("I10", "HTN"), ("E11.9", "T2DM"), ("J44.1", "COPD exacerbation"),
        ("K92.2", "Gastrointestinal haemorrhage"),
    ]


def test_only_the_note_s_codes_are_searched(miner):
    assert found(miner, "Pneumonia and hypertension.", ["I10"]) == [("I10", "hypertension")]


def test_longest_mention_wins_and_conjunctions_are_not_skipped(miner):
    text = "Chronic kidney disease stage III. History of dementia and Alzheimer's disease."
    assert found(miner, text, ["N18.30", "N18.9", "F03.90", "G30.9"]) == [
        ("N18.30", "Chronic kidney disease stage III"), ("F03.90", "dementia")
    ]


def test_term_variants_drop_icd_wording():
    variants = term_variants("Chronic kidney disease, stage 3 unspecified")
    assert variants[0] == "Chronic kidney disease, stage 3 unspecified"
    assert {"Chronic kidney disease, stage 3", "CKD, stage 3", "Chronic kidney disease, stage III"} <= set(variants)
    assert "Pneumonia" in term_variants("Pneumonia, unspecified organism")
    assert "malignant neoplasm of female breast" in {
        v.lower() for v in term_variants("Malignant neoplasm of unspecified site of unspecified female breast")
    }
    assert "Fracture of neck of right femur" in term_variants(
        "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"
    )


def test_locate_exact_case_insensitive_and_fuzzy():
    text = "Assessment: Type 2 Diabetes, on metformin. Chest film: pnuemonia."
    assert locate("Type 2 Diabetes", text) == (12, 27)
    assert locate("type 2 diabetes", text) == (12, 27)
    start, end = locate("pneumonia", text)
    assert text[start:end] == "pnuemonia"
    assert locate("heart failure", text) is None
    assert locate("   ", text) is None


@pytest.fixture(scope="module")
def world(tab):
    cfg = DocsConfig(name="demo", n_val=10, demo=DemoDocsConfig(n_train=60, n_test=20, n_codes=25, corpus_size=0))
    pool = set(DEFAULT_CODE_POOL)
    bank = {}
    for p in gold_pairs(tab, [], sources=("description", "inclusion"), codes=pool):
        bank.setdefault(p.code, []).append(p.evidence)
    return tab, build_demo_world(cfg, tab, bank)


def test_miner_recovers_demo_evidence_spans(world):
    """On notes with known evidence spans (and distractors): no false mention, few misses."""
    tab, w = world
    docs = w.train + w.val + w.test
    codes = sorted({c for d in docs for c in d.codes})
    # The gold tier's default sources (conf/spans/gold.yaml; no Alphabetic Index offline): the
    # demo's shorthand codes (UTI for "Urinary tract infection, site not specified") are found
    # from the short Tabular forms, as the silver tier's miner finds them.
    gold = gold_pairs(tab, [], sources=("description", "inclusion", "short"), codes=set(codes))
    miner = LexicalMiner(lexical_terms(tab, gold, codes))
    tp = fp = fn = 0
    for d in docs:
        got = {(m.start, m.end, m.code) for m in miner.find(d.text, d.codes)}
        truth = {(s.start, s.end, s.code) for s in d.spans}
        tp, fp, fn = tp + len(got & truth), fp + len(got - truth), fn + len(truth - got)
    assert tp > 300
    assert fp == 0
    assert fn / (tp + fn) < 0.02


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("pneumonia", "pnuemonia", True),  # swapped letters
        ("hemorrhage", "haemorrhage", True),  # extra letter
        ("fibrillation", "fibrilation", True),  # missing letter
        ("dysphagia", "dysphasia", False),  # a substituted letter is two edits
        ("hypotension", "hypertension", False),  # opposite prefixes
        ("hypokalemia", "hyperkalemia", False),
        ("ileus", "ileum", False),
        ("gout", "gouty", False),  # short words match exactly only
        ("anemia", "anaemia", True),
        ("sepsis", "psesis", False),  # the first letter must agree
    ],
)
def test_token_similarity_allows_typos_not_other_words(a, b, same):
    from ccl.spans.lexical import similar

    assert similar(a, b, 1) is same
    assert similar(a, b, 0) is (a == b)


def test_lexical_is_a_choice_of_llm_but_no_generating_backend():
    """``llm=lexical`` mines without generating: make_backend refuses it and lists only the
    backends it builds."""
    from ccl.spans.llm.base import BACKENDS, LLMBackendError, LLMConfig, make_backend

    assert BACKENDS == ("hf", "openai", "vllm")
    with pytest.raises(LLMBackendError, match=r"ccl\.spans\.lexical\.LexicalMiner.*llm=hf, llm=openai, llm=vllm"):
        make_backend(LLMConfig(backend="lexical"))
    with pytest.raises(LLMBackendError) as err:
        make_backend(LLMConfig(backend="gpt"))
    assert "lexical" not in str(err.value) and "'vllm'" in str(err.value)
