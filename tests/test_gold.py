"""The gold span tier: pairs from index entries and Tabular List text, and its disk cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import ccl.spans.gold as gold
from ccl.config import ICDConfig
from ccl.data.pairs import SOURCE_PRIORITY, gold_pairs
from ccl.icd.index import IndexEntry, load_valid_entries, parse_index_xml, validate_entries
from ccl.records import SpanPair, read_span_pairs
from ccl.spans.gold import build_gold_tier

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icd10cm"
FILES = {
    "index": DATA / "icd10cm-index-2025-rebuilt.xml",
    "eindex": DATA / "icd10cm-eindex-April-1-2026-XML.xml",
    "drug": DATA / "icd10cm-drug-April-1-2026-XML.xml",
    "neoplasm": DATA / "icd10cm-neoplasm-April-1-2026-XML.xml",
}
needs_data = pytest.mark.skipif(
    not FILES["drug"].is_file(), reason=f"CDC index files not found in {DATA} (shared test data)"
)

# A slice of the main index in its official layout (hand-checked codes).
MINI_INDEX = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.index><version>2025</version>
  <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
  <letter><title>A</title>
    <mainTerm><title>Aarskog's syndrome</title><code>Q87.19</code></mainTerm>
    <mainTerm><title>Abasia<nemod>(-astasia) (hysterical)</nemod></title><code>F44.4</code></mainTerm>
  </letter>
  <letter><title>D</title>
    <mainTerm><title>Diabetes, diabetic<nemod>(mellitus) (sugar)</nemod></title><code>E11.9</code>
      <term level="1"><title>type 2</title><code>E11.9</code>
        <term level="2"><title>with</title>
          <term level="3"><title>neuropathy</title><code>E11.40</code></term>
          <term level="3"><title>amyotrophy</title><code>E11.4-</code></term>
        </term>
      </term>
    </mainTerm>
  </letter>
  <letter><title>N</title>
    <mainTerm><title>Noonan's syndrome</title><code>Q87.19</code></mainTerm>
  </letter>
</ICD10CM.index>"""

SUBSET = {"Q87.19", "E11.40", "E11.9", "F44.4", "C76.2", "T51.3X1A", "E11"}



@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    path = tmp_path_factory.mktemp("mini") / "index.xml"
    path.write_text(MINI_INDEX, encoding="utf-8")
    return parse_index_xml(path)


@pytest.fixture(scope="module")
def tables():
    return [parse_index_xml(FILES["drug"]), parse_index_xml(FILES["neoplasm"])]


def _valid(tab, *parses, seventh="A"):
    return [e for p in parses for e in validate_entries(p, tab, seventh=seventh)[0]]


def test_pairs_from_index_and_tabular(tab, mini):
    pairs = gold_pairs(tab, _valid(tab, mini), codes={"Q87.19", "E11.40"})
    assert {p.code for p in pairs} == {"Q87.19", "E11.40"}
    assert all(p.tier == "gold" for p in pairs)
    q87 = [(p.source, p.evidence) for p in pairs if p.code == "Q87.19"]
    assert q87[0] == ("tabular:description", tab.description("Q87.19"))
    assert ("tabular:inclusion", "Aarskog syndrome") in q87
    assert ("index:main", "Aarskog's syndrome") in q87
    assert ("index:main", "Noonan's syndrome") in q87
    e11 = [(p.source, p.evidence) for p in pairs if p.code == "E11.40"]
    assert e11 == [
        ("tabular:description", "Type 2 diabetes mellitus with diabetic neuropathy, unspecified"),
        ("tabular:short", "type 2 diabetes mellitus with diabetic neuropathy"),
        ("index:main", "type 2 diabetes with neuropathy"),
    ]
    # order: by code, then source priority
    assert [p.code for p in pairs] == sorted(p.code for p in pairs)
    ranks = [(p.code, SOURCE_PRIORITY.index(p.source)) for p in pairs]
    assert ranks == sorted(ranks)


def test_dedup_keeps_the_first_source_by_priority(tab):
    same = IndexEntry(
        ("x",), "TYPE 2 diabetes   mellitus with diabetic neuropathy, unspecified", (),
        "E11.40", "E11.40", "index", None,
    )
    other = IndexEntry(("y",), "diabetic neuropathy", (), "E11.40", "E11.40", "eindex", None)
    pairs = gold_pairs(tab, [same, other, other], codes={"E11.40"})
    assert [(p.source, p.evidence) for p in pairs] == [
        ("tabular:description", "Type 2 diabetes mellitus with diabetic neuropathy, unspecified"),
        ("tabular:short", "type 2 diabetes mellitus with diabetic neuropathy"),
        ("index:eindex", "diabetic neuropathy"),
    ]
    # the same text for another code is another pair
    moved = IndexEntry(("y",), "diabetic neuropathy", (), "E11.9", "E11.9", "index", None)
    assert len(gold_pairs(tab, [other, moved], sources=["index"], codes={"E11.40", "E11.9"})) == 2


def test_billable_only_sources_subset_and_max(tab, mini):
    entries = _valid(tab, mini)
    assert gold_pairs(tab, entries, codes={"E11", "E11.4"}) == []  # categories are not billable
    # entries whose code is not billable never reach the tier, even unvalidated
    raw = [e for e in mini.entries if e.code == "E11.4"]
    assert raw and gold_pairs(tab, raw, sources=["index"], codes={"E11.4"}) == []
    only_index = gold_pairs(tab, entries, sources=["index"], codes=SUBSET)
    assert {p.source for p in only_index} == {"index:main"}
    assert gold_pairs(tab, entries, sources=["index:drug"], codes=SUBSET) == []
    capped = gold_pairs(tab, entries, codes={"Q87.19"}, max_pairs_per_code=2)
    assert [p.source for p in capped] == ["tabular:description", "tabular:inclusion"]
    with pytest.raises(ValueError, match="unknown gold source 'synonyms'"):
        gold_pairs(tab, entries, sources=["synonyms"])
    # codes are canonicalised: "e1140" is E11.40
    assert gold_pairs(tab, entries, codes={"e1140"}) == gold_pairs(tab, entries, codes={"E11.40"})


@needs_data
def test_table_pairs_carry_the_column_meaning(tab, tables):
    pairs = gold_pairs(tab, _valid(tab, *tables), sources=["index"], codes={"T51.3X1A", "C76.2"})
    assert (
        SpanPair(
            "poisoning by 1-propanol, accidental (unintentional)", "T51.3X1A", "gold", "index:drug"
        )
        in pairs
    )
    assert SpanPair("malignant neoplasm of abdomen", "C76.2", "gold", "index:neoplasm") in pairs
    # without the explicit seventh character the drug codes are incomplete: no drug pairs
    plain = gold_pairs(tab, _valid(tab, *tables, seventh=None), sources=["index:drug"])
    assert plain == []


@needs_data
def test_tier_is_cached_on_disk(tab, tables, tmp_path, monkeypatch):
    subset = {"T51.3X1A", "C76.2", "C79.9", "D36.9", "Q87.19"}
    tier = build_gold_tier(tab, tables, ["index", "description", "inclusion"], subset, tmp_path)
    assert not tier.from_cache
    assert tier.pairs_path == tmp_path / "gold" / tier.content_hash / "pairs.jsonl"
    r = tier.report
    assert r["codes_covered"] == len(subset) and r["billable_codes_total"] == len(
        tab.billable_codes()
    )
    assert r["billable_share"] == round(len(subset) / len(tab.billable_codes()), 4)
    assert r["pairs"] == len(tier.pairs) == sum(r["pairs_per_source"].values())
    assert r["index_fallback"] is False and r["subset"]["billable"] == len(subset)
    assert r["seventh_character"] == "A" and r["index_validation"]["drug"]["completed"] > 0
    stored = read_span_pairs(tier.pairs_path)  # one tier cache format: JSON lines
    assert len(stored) == len(tier.pairs) and stored[0] == tier.pairs[0]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the tier was rebuilt instead of loaded")

    monkeypatch.setattr(gold, "gold_pairs", no_rebuild)
    monkeypatch.setattr(gold, "validate_entries", no_rebuild)
    again = build_gold_tier(tab, tables, ["index", "description", "inclusion"], subset, tmp_path)
    assert (
        again.from_cache and again.pairs == tier.pairs and again.content_hash == tier.content_hash
    )
    assert again.report == tier.report
    monkeypatch.undo()
    smaller = build_gold_tier(
        tab, tables, ["index", "description", "inclusion"], subset, tmp_path, max_pairs_per_code=1
    )
    assert smaller.content_hash != tier.content_hash and not smaller.from_cache
    assert len(smaller.pairs) == len(subset)


def test_fallback_without_index(tab, tmp_path):
    tier = build_gold_tier(tab, None, ["index", "description", "inclusion"], {"Q87.19"}, tmp_path)
    assert tier.report["index_fallback"] is True
    assert {p.source for p in tier.pairs} == {"tabular:description", "tabular:inclusion"}
    tab_only = build_gold_tier(tab, [], ["description"], {"Q87.19"}, tmp_path)
    assert tab_only.report["index_fallback"] is False  # no index source was asked for
    assert [p.source for p in tab_only.pairs] == ["tabular:description"]


def test_entries_input_is_hashed_by_content(tab, mini, tmp_path):
    entries = _valid(tab, mini)
    first = build_gold_tier(tab, entries, ["index"], {"Q87.19", "E11.40"}, tmp_path)
    assert build_gold_tier(tab, list(entries), ["index"], {"Q87.19", "E11.40"}, tmp_path).from_cache
    changed = build_gold_tier(tab, entries[:-1], ["index"], {"Q87.19", "E11.40"}, tmp_path)
    assert changed.content_hash != first.content_hash and not changed.from_cache


@needs_data
def test_load_valid_entries_from_config(tab, tmp_path):
    cfg = ICDConfig(drug_xml=str(FILES["drug"]), neoplasm_xml=str(FILES["neoplasm"]))
    entries, report = load_valid_entries(cfg, tab, tmp_path)
    assert report["origin"] == "config" and not report["fallback"]
    assert {e.source for e in entries} == {"drug", "neoplasm"}
    assert report["validation"]["drug"]["completed"] == report["validation"]["drug"]["kept"]
    again, report2 = load_valid_entries(cfg, tab, tmp_path)  # from the pickle
    assert again == entries and report2["validation"] == report["validation"]
    with pytest.raises(ValueError, match="neoplasm_xml.*drug file"):
        load_valid_entries(ICDConfig(neoplasm_xml=str(FILES["drug"])), tab, tmp_path)
    none, off = load_valid_entries(ICDConfig(download=False), tab, tmp_path / "empty")
    assert none == [] and off["fallback"] and off["message"].startswith("No Alphabetic Index")


@pytest.mark.slow
@needs_data
def test_full_gold_tier(tab, tmp_path):
    start = time.perf_counter()
    parses = [parse_index_xml(path) for path in FILES.values()]
    tier = build_gold_tier(tab, parses, ["index", "description", "inclusion"], None, tmp_path)
    seconds = time.perf_counter() - start
    r = tier.report
    assert r["billable_codes_covered"] == r["billable_codes_total"] == len(tab.billable_codes())
    assert set(r["pairs_per_source"]) == set(SOURCE_PRIORITY)
    assert r["codes_per_source"]["index:main"] > 10000
    print(f"full gold tier: {seconds:.1f} s")


def test_short_source_drops_coding_qualifiers(tab):
    pairs = gold_pairs(tab, [], sources=("short",), codes={"M10.9", "J18.9", "E11.9"})
    got = {(p.code, p.evidence) for p in pairs}
    assert ("M10.9", "gout") in got and ("J18.9", "pneumonia") in got
    assert all(p.source == "tabular:short" for p in pairs)
    both = gold_pairs(tab, [], sources=("description", "short"), codes={"I10"})
    assert [(p.source, p.evidence) for p in both] == [
        ("tabular:description", "Essential (primary) hypertension"),
        ("tabular:short", "essential hypertension"),  # nonessential modifier dropped
    ]
