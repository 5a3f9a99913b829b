"""A label's meaning chooses its billable descendant (issue 14, kind 1).

Right values from the April 2026 Tabular List (simple-icd-10-cm) and, where named,
the Alphabetic Index: a small fixture index always, the real FY2025 index of
../shared/data when it is there.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from ccl.data.sources.common import (
    CodeMapper,
    IndexHints,
    MappingContext,
    document_age_group,
    document_sex,
    map_code,
    normalise_term,
)
from ccl.icd.index import parse_index_xml, validate_entries

REAL_INDEX = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icd10cm"
              / "icd10cm-index-2025-rebuilt.xml")

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
        ("B37.3", "B37.31", "first_descendant"),  # a real guess: warned and counted apart
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
    for code in ["k22.8", "K22.8", "a04.7", "G20", "B37.3", "E11.9", "Q9Z.9"]:
        mapper(code)
    with pytest.warns(UserWarning, match="first billable descendant.*B37.3"):
        report = mapper.report()
    assert report["mapped"] == {"same_description_descendant": 2, "unspecified_descendant": 1,
                                "without_descendant": 1, "first_descendant": 1}
    rows = {r["label"]: r for r in report["remaps"]}
    assert rows["K22.8"] == {"label": "K22.8", "label_description": "Other specified diseases of esophagus",
                             "code": "K22.89", "description": "Other specified disease of esophagus",
                             "rule": "same_description_descendant", "count": 2}
    assert rows["G20"]["code"] == "G20.A1" and rows["B37.3"]["rule"] == "first_descendant"
    assert "E11.9" not in rows and "Q9Z.9" not in rows  # valid and dropped codes are not remaps
    quiet = CodeMapper(tab)
    quiet("E87.2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.report()["remaps"][0]["rule"] == "unspecified_descendant"


# -- issue 23, item 6: labels mapped to another concept ---------------------------------

DIABETES_INDEX = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.index>
  <version>2026</version>
  <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
  <letter><title>D</title>
    <mainTerm><title>Diabetes, diabetic <nemod>(mellitus) (sugar)</nemod></title><code>E11.9</code>
      <term level="1"><title>type 1</title><code>E10.9</code>
        <term level="2"><title>with</title>
          <term level="3"><title>ketoacidosis</title><code>E10.10</code></term>
        </term>
      </term>
      <term level="1"><title>type 2</title><code>E11.9</code>
        <term level="2"><title>with</title>
          <term level="3"><title>hyperglycemia</title><code>E11.65</code></term>
        </term>
      </term>
      <term level="1"><title>due to underlying condition</title><code>E08.9</code></term>
    </mainTerm>
  </letter>
</ICD10CM.index>
"""


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # The cases: the category's default is ".9 ... without complications", not
        # E11.8 "with unspecified complications" (that "unspecified" qualifies the complication).
        ("E08", "E08.9"), ("E09", "E09.9"), ("E10", "E10.9"), ("E11", "E11.9"), ("E13", "E13.9"),
        # Other categories of the kind (the old rule took a "with unspecified ..." child, or a
        # complication, where a "without"/"uncomplicated" default exists).
        ("B02", "B02.9"),  # Zoster without complications (old B02.30 "Zoster ocular disease, unspecified")
        ("A38", "A38.9"),  # Scarlet fever, uncomplicated (old A38.8 "with other complications")
        ("F10.1", "F10.10"),  # Alcohol abuse, uncomplicated (old F10.19 "with unspecified ... disorder")
        ("I25.1", "I25.10"),  # ... without angina pectoris (old I25.119 "with unspecified angina")
        ("D57.2", "D57.20"),  # Sickle-cell/Hb-C disease without crisis (old D57.219 "with crisis, unspecified")
        ("E08.32", "E08.3299"),  # ..., unspecified eye (old E08.3291 "right eye")
        ("L98.49", "L98.499"),  # ... with unspecified severity (not "... without evidence of necrosis")
        ("G40.0", "G40.009"),  # not intractable, without status epilepticus
        ("C88.9", "C88.90"),  # not having achieved remission (a tie with "in remission")
    ],
)
def test_a_category_maps_to_its_default(tab, code, expected):
    """A non-billable category maps to its unspecified / "without" default (the ".9" child)."""
    assert map_code(code, tab)[0] == expected


def test_the_index_entry_that_names_the_category_gives_its_default(tmp_path, tab):
    """"Diabetes, diabetic (mellitus) (sugar), type 2" names E11 "Type 2 diabetes mellitus":
    its code E11.9 is the default, with the nonessential modifiers read."""
    path = tmp_path / "index.xml"
    path.write_text(DIABETES_INDEX, encoding="utf-8")
    entries, _ = validate_entries(parse_index_xml(path), tab)
    hints = IndexHints(entries)
    assert hints.codes_for("Type 2 diabetes mellitus") == {}  # the phrases differ ...
    assert hints.naming("Type 2 diabetes mellitus", ["E11.65", "E11.8", "E11.9"]) == {"E11.9": 1}
    for code, expected in [("E11", "E11.9"), ("E10", "E10.9"), ("E08", "E08.9")]:
        assert map_code(code, tab, hints) == (expected, "index_term_descendant")


@pytest.mark.skipif(not REAL_INDEX.exists(), reason="the shared FY2025 Alphabetic Index is not here")
def test_real_index_diabetes_categories(tab):
    entries, _ = validate_entries(parse_index_xml(REAL_INDEX), tab)
    hints = IndexHints(entries)
    for code in ("E08", "E09", "E10", "E11", "E13"):
        assert map_code(code, tab, hints)[0] == f"{code}.9"
    assert map_code("Q75.0", tab, hints)[0] == "Q75.009"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("Q75.0", "Q75.009"),  # Craniosynostosis, unspecified; not Q75.001 "..., unspecified type, unilateral"
        ("S91.11", "S91.119A"),  # ... of unspecified toe(s); not S91.113A "... of unspecified great toe"
        ("C02", "C02.9"),  # Malignant neoplasm of tongue, unspecified; not C02.3 "... of unspecified part"
    ],
)
def test_ties_go_to_the_fewest_added_qualifiers(tab, code, expected):
    """Ties break toward the candidate adding the fewest qualifiers, not Tabular order."""
    assert map_code(code, tab)[0] == expected


SEX_CASES = [
    # code, note, expected
    ("n35.9", "Una mujer de 35 años consultó por goteo terminal. La paciente refiere dispareunia.", "N35.92"),
    ("n35.9", "Varón de 75 años con antecedentes de EPOC moderado.", "N35.919"),
    ("C50.9", "A 62-year-old woman with a breast lump. She reports ...", "C50.919"),
    ("C50.9", "Se presenta el caso de un varón de 65 años con un nódulo mamario.", "C50.929"),
    ("N35.1", "Mujer de 40 años con estenosis uretral infecciosa.", "N35.12"),  # split by sex too
    ("S30.20", "Sex:   M\nContusion of the genitals after a fall.", "S30.201A"),
]


@pytest.mark.parametrize(("code", "note", "expected"), SEX_CASES)
def test_a_code_split_by_sex_follows_the_note(tab, code, note, expected):
    assert map_code(code, tab, context=MappingContext(note)) == (expected, "sex_descendant")


@pytest.mark.parametrize(
    ("code", "note", "expected"),
    [
        ("t74.2", "Adolescente de 16 años que acude a urgencias tras ser violada.", "T74.22XA"),
        ("T74.2", "A 34-year-old woman presents after a sexual assault.", "T74.21XA"),
        ("T74.1", "Lactante de 3 meses de vida con fracturas costales.", "T74.12XA"),
        ("T76.2", "Niña de 7 años, traída por su madre.", "T76.22XA"),  # suspected: T76 alike
        ("T74.0", "Paciente de 80 años, abandonado por su familia; hace 20 años vivía solo.", "T74.01XA"),
    ],
)
def test_a_code_split_by_age_follows_the_note(tab, code, note, expected):
    """Child (under 18) or adult, from the note's own age (T74/T76, ICD-10-CM guidelines)."""
    assert map_code(code, tab, context=MappingContext(note)) == (expected, "age_descendant")


@pytest.mark.parametrize(
    ("code", "axis"),
    [("N35.9", "sex"), ("C50.9", "sex"), ("T74.2", "age"), ("T76.1", "age")],
)
def test_without_a_saying_context_a_split_label_is_ambiguous_not_guessed(tab, code, axis):
    assert map_code(code, tab) == (None, f"ambiguous_{axis}")
    note = "Paciente que acude a consulta."  # neither sex nor age said
    assert map_code(code, tab, context=MappingContext(note)) == (None, f"ambiguous_{axis}")


@pytest.mark.parametrize(
    ("code", "evidence", "expected"),
    [
        ("I82.2", "trombosis de la vena cava inferior", "I82.220"),  # the case
        ("I82.2", "thrombosis of the superior vena cava", "I82.210"),
        ("R74.0", "hipertransaminasemia", "R74.01"),  # transaminase, not LDH
        ("A08.1", "gastroenteritis por norovirus (Norwalk)", "A08.11"),
    ],
)
def test_a_label_split_into_sibling_concepts_follows_its_evidence(tab, code, evidence, expected):
    assert map_code(code, tab, context=MappingContext("", [evidence])) == (expected, "evidence_descendant")


@pytest.mark.parametrize("code", ["I82.2", "R74.0", "A08.1", "L76.3"])
def test_without_evidence_a_sibling_split_is_ambiguous_and_warned(tab, code):
    """No mapping to an unrelated sibling (old: I82.2 -> I82.290 "other thoracic veins")."""
    assert map_code(code, tab) == (None, "ambiguous_sibling")
    mapper = CodeMapper(tab)
    assert mapper(code, context=MappingContext("", ["trombosis venosa"])) is None
    with pytest.warns(UserWarning, match=rf"dropped as ambiguous.*{re.escape(code)} sibling"):
        report = mapper.report()
    assert report["dropped"] == {"ambiguous_sibling": 1}


def test_mapper_decides_context_labels_per_document_and_counts_them(tab):
    mapper = CodeMapper(tab)
    woman = MappingContext("Una mujer de 35 años consultó por goteo terminal.")
    man = MappingContext("Varón de 75 años con antecedentes de EPOC.")
    assert [mapper("n35.9", context=woman), mapper("n35.9", context=man), mapper("n35.9")] == [
        "N35.92", "N35.919", None]
    with pytest.warns(UserWarning, match="N35.9 sex"):
        report = mapper.report()
    assert report["mapped"] == {"sex_descendant": 2} and report["dropped"] == {"ambiguous_sex": 1}
    rows = {(r["label"], r["code"]): r["count"] for r in report["remaps"]}
    assert rows == {("N35.9", "N35.92"): 1, ("N35.9", "N35.919"): 1}


@pytest.mark.parametrize(
    ("text", "sex", "age"),
    [
        ("Una mujer de 35 años consultó por goteo terminal.", "female", "adult"),
        ("Varón de 16 años, estudiante.", "male", "child"),
        ("A 3-year-old boy was brought by his mother.", "male", "child"),
        ("Paciente de 70 años. Hace 10 años fue intervenido.", None, "adult"),
        ("Recién nacido a término; la madre refiere ...", None, "child"),
        ("The patient was admitted for chest pain.", None, None),
        ("Echo: moderate MR, MS. She denies chest pain; her daughter is with her.", "female", None),
    ],
)
def test_document_sex_and_age(text, sex, age):
    assert (document_sex(text), document_age_group(text)) == (sex, age)
