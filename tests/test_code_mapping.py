"""A label's meaning chooses its billable descendant (issue 14, kind 1).

Right values from the April 2026 Tabular List (simple-icd-10-cm) and, where named,
the Alphabetic Index: a small fixture index always, the real FY2025 index of
../shared/data when it is there.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ccl.data.sources.common import CodeMapper, IndexHints, map_code, normalise_term
from ccl.icd.index import parse_index_xml, validate_entries

REAL_INDEX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icd10cm" / "icd10cm-index-2025-rebuilt.xml"

FIXTURE_INDEX = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.index>
  <version>2026</version>
  <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
  <letter><title>D</title>
    <mainTerm><title>Disease</title>
      <term level="1"><title>Parkinson's</title><code>{parkinson}</code></term>
    </mainTerm>
  </letter>
  <letter><title>E</title>
    <mainTerm><title>Enterocolitis</title>
      <term level="1"><title>due to</title>
        <term level="2"><title>Clostridium difficile</title><code>A04.72</code>
          <term level="3"><title>recurrent</title><code>A04.71</code></term>
        </term>
      </term>
    </mainTerm>
  </letter>
</ICD10CM.index>
"""



def fixture_hints(tmp_path: Path, tab, parkinson: str = "G20.A1") -> IndexHints:
    path = tmp_path / "any-name.xml"
    path.write_text(FIXTURE_INDEX.format(parkinson=parkinson), encoding="utf-8")
    entries, _ = validate_entries(parse_index_xml(path), tab)
    return IndexHints(entries)


@pytest.mark.parametrize(
    ("code", "expected", "reason"),
    [
        # The cases. "diseases" (parent) vs "disease" (child): the same meaning.
        ("k22.8", "K22.89", "same_description_descendant"),
        # "not specified as recurrent" is the unspecified child, not "recurrent".
        ("a04.7", "A04.72", "unspecified_descendant"),
        # Without the Index: the child that keeps the term "Parkinson's disease", by "without"
        # (G20.C "Parkinsonism, unspecified" is another term).
        ("G20", "G20.A1", "without_descendant"),
        # Further cases of the kind, from CodiEsp and MDACE labels.
        ("M79.60", "M79.609", "unspecified_descendant"),  # not M79.601 "Pain in right arm"
        ("C90.0", "C90.00", "without_descendant"),  # "not having achieved remission"
        ("K20.9", "K20.90", "without_descendant"),  # "Esophagitis, unspecified without bleeding"
        ("N30.8", "N30.80", "without_descendant"),  # "Other cystitis without hematuria"
        ("R74.0", "R74.01", "first_descendant"),  # a real guess: warned and counted apart
    ],
)
def test_meaning_chooses_the_descendant(tab, code, expected, reason):
    assert map_code(code, tab) == (expected, reason)
    assert tab.is_billable(expected)


def test_index_gives_the_child_for_the_parents_term(tmp_path, tab):
    hints = fixture_hints(tmp_path, tab)
    assert hints.codes_for("Parkinson's disease") == {"G20.A1": 1}
    assert map_code("G20", tab, hints) == ("G20.A1", "index_descendant")
    assert map_code("A04.7", tab, hints) == ("A04.72", "index_descendant")
    # The Index decides over the wording rules: an Index that says G20.B1 is followed.
    other = fixture_hints(tmp_path, tab, parkinson="G20.B1")
    assert map_code("G20", tab, other) == ("G20.B1", "index_descendant")
    # A code the Index gives that is not a descendant is never taken.
    far = fixture_hints(tmp_path, tab, parkinson="E11.9")
    assert map_code("G20", tab, far) == ("G20.A1", "without_descendant")
    # Labels the Index does not name keep the wording rules.
    assert map_code("K22.8", tab, hints) == ("K22.89", "same_description_descendant")


@pytest.mark.skipif(not REAL_INDEX.exists(), reason="the shared FY2025 Alphabetic Index is not here")
def test_real_index_parkinsons_disease(tab):
    entries, _ = validate_entries(parse_index_xml(REAL_INDEX), tab)
    hints = IndexHints(entries)
    assert map_code("G20", tab, hints) == ("G20.A1", "index_descendant")
    assert map_code("R05", tab, hints) == ("R05.9", "index_descendant")  # "Cough" -> unspecified
    assert map_code("k22.8", tab, hints)[0] == "K22.89"
    assert map_code("a04.7", tab, hints)[0] == "A04.72"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Other specified diseases of esophagus", "other disease of esophagus"),
        ("Other specified disease of esophagus", "other disease of esophagus"),
        ("Injuries of thorax, NEC", "injury of thorax other"),
        ("Enterocolitis, not specified as recurrent", "enterocolitis unspecified as recurrent"),
        ("Parkinson\u2019s disease (idiopathic)", "parkinson's disease"),
        ("Diabetes mellitus", "diabetes mellitus"),  # -us, -es words kept
        ("Body mass index [BMI] 40 or greater, adult", "body mass index 40 or greater adult"),
    ],
)
def test_normalise_term(text, expected):
    assert normalise_term(text) == expected


def test_every_remap_is_counted_by_rule_and_first_child_is_warned(tab):
    mapper = CodeMapper(tab)
    for code in ["k22.8", "K22.8", "a04.7", "G20", "R74.0", "E11.9", "Q9Z.9"]:
        mapper(code)
    with pytest.warns(UserWarning, match="first billable descendant.*R74.0"):
        report = mapper.report()
    assert report["mapped"] == {"same_description_descendant": 2, "unspecified_descendant": 1,
                                "without_descendant": 1, "first_descendant": 1}
    rows = {r["label"]: r for r in report["remaps"]}
    assert rows["K22.8"] == {"label": "K22.8", "label_description": "Other specified diseases of esophagus",
                             "code": "K22.89", "description": "Other specified disease of esophagus",
                             "rule": "same_description_descendant", "count": 2}
    assert rows["G20"]["code"] == "G20.A1" and rows["R74.0"]["rule"] == "first_descendant"
    assert "E11.9" not in rows and "Q9Z.9" not in rows  # valid and dropped codes are not remaps
    quiet = CodeMapper(tab)
    quiet("E87.2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.report()["remaps"][0]["rule"] == "unspecified_descendant"
