"""The demo world: exact offsets, unseen codes, distractors, determinism, speed."""

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from ccl.config import DemoDocsConfig, DocsConfig
from ccl.data.demo import (
    ABBREVIATIONS,
    DEFAULT_CODE_POOL,
    build_demo_world,
    choose_phrases,
    natural_phrase,
)
from ccl.records import document_from_dict

CUES = ("denies", "no history of", "negative for", "ruled out", "no evidence of",
        "mother", "father", "brother", "sibling")



@pytest.fixture(scope="module")
def world(tab):
    return build_demo_world(DocsConfig(name="demo"), tab)


def small(**overrides):
    """A small demo DocsConfig; ``overrides`` of DocsConfig's own keys (seed, n_val, code_pool)
    or of its docs.demo block."""
    top = {k: overrides.pop(k) for k in list(overrides) if k in ("seed", "n_val", "code_pool")}
    demo = DemoDocsConfig(**{"n_train": 40, "n_test": 15, "n_codes": 20, "corpus_size": 30, **overrides})
    return DocsConfig(name="demo", **{"n_val": 10, **top}, demo=demo)


def world_hash(w):
    docs = [d.to_dict() for d in w.train + w.val + w.test + w.corpus]
    blob = json.dumps([docs, w.codes, w.unseen_codes, w.phrases], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def phrase_pattern(phrases):
    alternatives = sorted({re.escape(p) for p in phrases}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


def masked(doc):
    """The note text with its gold evidence spans blanked out."""
    chars = list(doc.text)
    for span in doc.spans:
        chars[span.start : span.end] = "#" * (span.end - span.start)
    return "".join(chars)


def sentence_around(text, start):
    left = max(text.rfind(". ", 0, start), text.rfind(": ", 0, start), text.rfind("\n", 0, start))
    right = text.find(".", start)
    return text[left + 1 : right].lower()


def test_default_pool_is_billable_in_2026_list(tab):
    assert 120 <= len(DEFAULT_CODE_POOL) <= 200
    assert len(set(DEFAULT_CODE_POOL)) == len(DEFAULT_CODE_POOL)
    assert [c for c in DEFAULT_CODE_POOL if not tab.is_billable(c)] == []
    for code in (
        "I10",
        "E11.9",
        "E78.5",
        "J18.9",
        "N17.9",
        "I48.91",
        "D64.9",
        "E87.1",
        "J44.1",
        "I50.9",
    ):
        assert code in DEFAULT_CODE_POOL
    assert set(ABBREVIATIONS) <= set(DEFAULT_CODE_POOL)


@pytest.mark.parametrize(
    "term, phrase",
    [
        ("Essential (primary) hypertension", "essential hypertension"),
        ("Pneumonia, unspecified organism", "pneumonia"),
        ("Unspecified atrial fibrillation", "atrial fibrillation"),
        ("Type 2 diabetes mellitus without complications", "type 2 diabetes mellitus"),
        ("Sodium [Na] deficiency", "sodium deficiency"),
        ("Congestive heart failure NOS", "congestive heart failure"),
        ("Chronic kidney disease, stage 3 unspecified", "chronic kidney disease, stage 3"),
        ("Pleural effusion, not elsewhere classified", "pleural effusion"),
        (
            "Malignant neoplasm of unspecified site of unspecified female breast",
            "malignant neoplasm of female breast",
        ),
        ("Other chronic pain", "chronic pain"),
        (
            "Parkinson's disease without dyskinesia, without mention of fluctuations",
            "Parkinson's disease",
        ),
        ("COVID-19", "COVID-19"),
        (
            "Non-ST elevation (NSTEMI) myocardial infarction",
            "non-ST elevation myocardial infarction",
        ),
    ],
)
def test_natural_phrase(term, phrase):
    assert natural_phrase(term) == phrase


def test_choose_phrases_prefers_short_bank_phrases_then_tabular(tab):
    bank = {
        "I10": [
            "Hypertension, hypertensive, essential, with heart involvement and more",
            "hypertension",
        ],
        "J18.9": ["pneumonia"],  # a phrase names one code: D64.9 comes later and loses it
        "D64.9": ["pneumonia"],
    }
    phrases, origin = choose_phrases(["I10", "J18.9", "D64.9", "E87.1"], tab, 1, bank)
    assert phrases["I10"] == ["hypertension"]  # the natural (<= 6 words) bank phrase wins
    assert phrases["J18.9"] == ["pneumonia"]
    assert phrases["D64.9"] == ["anemia"]  # "pneumonia" is taken: Tabular description instead
    assert phrases["E87.1"] == ["hypo-osmolality and hyponatremia"]  # no bank entry
    assert origin == {"I10": "bank", "J18.9": "bank", "D64.9": "tabular", "E87.1": "tabular"}
    two, _ = choose_phrases(["I50.9"], tab, 2)
    assert two["I50.9"] == ["heart failure", "congestive heart disease"]


def test_default_world_sizes_and_records(world):
    assert world.stats["documents"] == {"train": 120, "val": 20, "test": 40, "corpus": 2000}
    assert len(world.codes) == 24 and set(world.codes) <= set(DEFAULT_CODE_POOL)
    for split, docs in world.splits().items():
        for i, doc in enumerate(docs):
            assert doc.id == f"demo-{split}-{i:04d}" and doc.split == split and doc.source == "demo"
            again = document_from_dict(doc.to_dict(), where=doc.id)  # validates every offset
            assert again.spans == doc.spans
            assert all(doc.text[s.start : s.end] == s.text for s in doc.spans)
            assert doc.spans == sorted(doc.spans, key=lambda s: (s.start, s.end))
            assert doc.codes == list(dict.fromkeys(s.code for s in doc.spans))
            assert 2 <= len(doc.codes) <= 5
    for doc in world.corpus:
        assert doc.spans == [] and 2 <= len(doc.codes) <= 5 and doc.id.startswith("demo-corpus-")
    corpus_codes = {c for d in world.corpus for c in d.codes}
    assert set(world.unseen_codes) <= corpus_codes


def test_spans_are_the_code_phrase_or_its_abbreviation(world):
    abbreviated = 0
    for doc in world.train + world.test:
        for span in doc.spans:
            forms = [p.lower() for p in world.phrases[span.code]]
            if span.text == ABBREVIATIONS.get(span.code):
                abbreviated += 1
            else:
                assert span.text.lower() in forms, (doc.id, span)
    assert (
        abbreviated
        == world.stats["abbreviated_mentions"]["train"]
        + world.stats["abbreviated_mentions"]["test"]
    )


def test_unseen_codes_split(world):
    unseen, seen = set(world.unseen_codes), set(world.seen_codes)
    assert unseen and not unseen & seen and unseen | seen == set(world.codes)
    train_codes = Counter(c for d in world.train for c in d.codes)
    test_codes = {c for d in world.test for c in d.codes}
    assert not unseen & set(train_codes)
    assert unseen <= test_codes
    assert min(train_codes[c] for c in seen) >= 3
    share = len(unseen & test_codes) / len(test_codes)
    assert abs(share - 0.3) <= 0.05
    assert world.stats["unseen_test_share"] == round(share, 4)
    assert sorted(world.stats["unseen_test_codes"]) == sorted(unseen)
    # An unseen code's phrases never appear in training text, not even negated.
    pattern = phrase_pattern([p for c in unseen for p in world.phrases[c]])
    assert not [d.id for d in world.train if pattern.search(d.text)]


def test_only_gold_or_distractor_mentions(tab):
    """Outside gold spans, a code phrase appears only in a negated/ruled-out/family sentence."""
    cfg = small(n_codes=len(DEFAULT_CODE_POOL), n_train=150, distractor_rate=0.0, corpus_size=0)
    clean = build_demo_world(cfg, tab)
    surfaces = [p for ps in clean.phrases.values() for p in ps] + list(ABBREVIATIONS.values())
    pattern = phrase_pattern(surfaces)
    assert not [d.id for d in clean.train + clean.test if pattern.search(masked(d))]
    noisy = build_demo_world(replace(cfg, demo=replace(cfg.demo, distractor_rate=2.0)), tab)
    hits = 0
    for doc in noisy.train:
        text = masked(doc)
        for m in pattern.finditer(text):
            hits += 1
            assert any(cue in sentence_around(text, m.start()) for cue in CUES), (
                doc.id,
                m.group(0),
            )
    assert hits >= noisy.stats["distractors"]["train"] == 2 * 150


def test_distractor_rate_is_the_expected_count(world):
    mean = world.stats["distractors"]["corpus"] / 2000
    assert 0.45 <= mean <= 0.55  # cfg.distractor_rate = 0.5; binomial sd ~0.011


def test_note_length_and_filler_scaling(world, tab):
    assert 70 <= world.stats["mean_words"]["train"] <= 150  # short notes: one filler sentence
    lengths = {}
    for n in (0, 6):
        w = build_demo_world(small(filler_sentences=n), tab)
        lengths[n] = w.stats["mean_words"]["train"]
    assert lengths[6] - lengths[0] >= 6 * 8  # each filler sentence adds about 8-25 words


def test_deterministic_and_seed_sensitive(world, tab):
    assert world_hash(build_demo_world(DocsConfig(name="demo"), tab)) == world_hash(world)
    other = build_demo_world(DocsConfig(name="demo", seed=14), tab)
    assert world_hash(other) != world_hash(world)
    assert [d.text for d in other.train] != [d.text for d in world.train]


def test_same_world_in_another_process(tab):
    """No dependence on str hashing (PYTHONHASHSEED) or set order."""
    script = (
        "import hashlib, json; from ccl.config import DemoDocsConfig, DocsConfig; "
        "from ccl.data.demo import build_demo_world; from ccl.icd.tabular import load_tabular; "
        "w = build_demo_world(DocsConfig(name='demo', n_val=10, demo=DemoDocsConfig(n_train=40, n_test=15, "
        "n_codes=20, corpus_size=30)), load_tabular()); "
        "docs = [d.to_dict() for d in w.train + w.val + w.test + w.corpus]; "
        "blob = json.dumps([docs, w.codes, w.unseen_codes, w.phrases], sort_keys=True); "
        "print(hashlib.sha256(blob.encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == world_hash(build_demo_world(small(), tab))


def test_split_sizes_do_not_change_other_splits(tab):
    a = build_demo_world(small(), tab)
    b = build_demo_world(small(corpus_size=50, n_val=12), tab)
    assert [d.text for d in a.train] == [d.text for d in b.train]
    assert [d.text for d in a.test] == [d.text for d in b.test]


def test_explicit_code_pool_and_phrase_bank(tab):
    pool = ["I10", "E11.9", "J18.9", "N17.9", "D64.9", "E87.1", "I50.9", "K21.9"]
    bank = {"I10": ["hypertension"], "E11.9": ["diabetes type 2"], "X99.9": ["ignored"]}
    w = build_demo_world(small(code_pool=pool, n_codes=99, unseen_share=0.25), tab, bank)
    assert w.codes == pool and len(w.unseen_codes) == 2
    assert w.phrases["I10"] == ["hypertension"] and w.phrases["E11.9"] == ["diabetes type 2"]
    assert w.stats["phrase_origin"] == {"bank": 2, "tabular": 6}
    texts = {s.text.lower() for d in w.train + w.test for s in d.spans if s.code == "E11.9"}
    assert texts <= {"diabetes type 2", "t2dm"} and "diabetes type 2" in texts


def test_template_text_never_names_a_universe_code(tab):
    """With cough (R05.9) and fatigue (R53.83) in the universe, no chief complaint says them."""
    pool = ["R05.9", "R53.83", "I10", "E11.9", "J18.9", "N17.9", "D64.9", "E87.1"]
    w = build_demo_world(small(code_pool=pool, distractor_rate=0.0), tab)
    assert w.phrases["R05.9"] == ["cough"] and w.phrases["R53.83"] == ["fatigue"]
    pattern = phrase_pattern(["cough", "fatigue"])
    assert not [d.id for d in w.train + w.test if pattern.search(masked(d))]


def test_coverage_holds_when_chance_would_miss_it(tab):
    """Few test notes and train notes for many codes: coverage must be forced, not lucky."""
    w = build_demo_world(small(n_train=20, n_test=4, n_codes=40, corpus_size=0, codes_per_note_max=8), tab)
    assert len(w.unseen_codes) == round(0.3 * 4 * 8)  # share of what 4 notes of <= 8 codes hold
    test_codes = {c for d in w.test for c in d.codes}
    assert set(w.unseen_codes) <= test_codes
    train_codes = Counter(c for d in w.train for c in d.codes)
    assert set(train_codes) == set(w.seen_codes)
    assert min(train_codes.values()) >= 3
    assert all(2 <= len(d.codes) <= 8 for d in w.train + w.test)


def test_no_unseen_codes_when_share_is_zero(tab):
    w = build_demo_world(small(unseen_share=0.0), tab)
    assert w.unseen_codes == [] and w.stats["unseen_test_share"] == 0.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"codes_per_note_min": 5, "codes_per_note_max": 3}, "docs.demo.codes_per_note_max=3"),
        ({"unseen_share": 1.0}, "docs.demo.unseen_share=1.0"),
        ({"n_codes": 500}, "docs.demo.n_codes=500"),
        ({"code_pool": ["I10", "E11"]}, "not billable in the Tabular List: E11"),
        ({"n_train": 1, "codes_per_note_max": 2}, "docs.demo.n_train=1"),
        ({"distractor_rate": -1.0}, "docs.demo.distractor_rate"),
    ],
)
def test_bad_config_is_a_clear_error(tab, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_demo_world(small(**overrides), tab)


def test_bad_phrase_bank_is_a_clear_error(tab):
    with pytest.raises(ValueError, match=re.escape("phrase_bank['I10'] must be a list of strings")):
        build_demo_world(small(), tab, {"I10": "hypertension"})


def test_default_world_builds(tab):
    # Unit tests never assert wall-clock times; the build's time is in benchmarks/data_cpu.json.
    cfg, demo = DocsConfig(name="demo"), DemoDocsConfig()  # the docs.demo block's defaults
    world = build_demo_world(cfg, tab)
    assert (len(world.train), len(world.val), len(world.test)) == (demo.n_train, cfg.n_val, demo.n_test)
    assert len(world.corpus) == demo.corpus_size


def test_shorthand_codes_are_written_only_in_shorthand(world):
    """A third of the universe is written in shorthand only; some unseen codes are among them."""
    short = world.shorthand
    assert len(short) == round(len(world.codes) / 3) and set(short) <= set(world.codes)
    assert all(short[c] == ABBREVIATIONS[c] for c in short)
    unseen_short = set(world.unseen_codes) & set(short)
    assert unseen_short and set(world.unseen_codes) - set(short)  # both kinds of unseen codes
    assert sorted(world.stats["unseen_shorthand_codes"]) == sorted(unseen_short)
    for doc in world.train + world.val + world.test:
        for span in doc.spans:
            if span.code in short:
                assert span.text == short[span.code], (doc.id, span)
    # The corpus that silver mining reads writes them so too (the form is in its text).
    for code in unseen_short:
        hits = [d for d in world.corpus if code in d.codes]
        assert hits and all(short[code] in d.text for d in hits)


def test_shorthand_is_no_gold_term_and_the_lexical_miner_finds_it(tab):
    """The premise of Table 3 row 5 on the demo world: gold pairs never spell a shorthand form,
    the lexical silver miner recovers it from a labelled note."""
    from ccl.data.pairs import gold_pairs
    from ccl.records import phrase_key as normalise
    from ccl.spans.lexical import LexicalMiner
    from ccl.spans.silver import lexical_terms

    pairs = gold_pairs(tab, [], codes=set(ABBREVIATIONS))
    for code, form in ABBREVIATIONS.items():
        mine = [p for p in pairs if p.code == code]
        assert mine and normalise(form) not in {normalise(p.evidence) for p in mine}, code
        miner = LexicalMiner(lexical_terms(tab, mine, [code]))
        found = miner.extract(f"Past medical history: {form}. Known {form}, on home therapy.", [code])
        assert found.get(code) == [form, form], (code, found)
