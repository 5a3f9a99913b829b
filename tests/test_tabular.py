"""Tabular List parsing against the real April 2026 file and small hand-written XML."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ccl.icd import tabular
from ccl.icd.tabular import TabularError, TabularList, load_tabular


@pytest.fixture(scope="module")
def code_list(xml_path: Path) -> set[str]:
    """Dot-less codes of code-list-April-2026.txt, without chapters and range blocks."""
    lines = {line.strip() for line in (xml_path.parent / "code-list-April-2026.txt").open()}
    return {c for c in lines if c and not c.isdigit() and "-" not in c}


def test_counts_match_the_shipped_code_list(tab: TabularList, code_list: set[str]) -> None:
    # The list file repeats the five one-category blocks that are leaves (B20,
    # F99, P84, R99, Z66), so counting its leaf lines gives 74,724; there are
    # 74,719 distinct billable codes (the CMS FY2026 total).
    assert len(tab.billable_codes()) == 74_719
    assert {c.replace(".", "") for c in tab.all_codes()} == code_list
    ordered = sorted(code_list)
    leaves = {
        c for c, nxt in zip(ordered, [*ordered[1:], ""], strict=True) if not nxt.startswith(c)
    }
    assert {c.replace(".", "") for c in tab.billable_codes()} == leaves
    assert len(tab) == len(code_list) == 98_186


def test_known_codes(tab: TabularList) -> None:
    assert tab.year == "2026"
    assert tab.description("E11.9") == "Type 2 diabetes mellitus without complications"
    assert tab.is_billable("E11.9") and not tab.needs_more_characters("E11.9")
    assert "E11" in tab and not tab.is_billable("E11") and tab.needs_more_characters("E11")
    assert all(spelling in tab for spelling in ("e119", "E119", "E11.9 -", " e11.9"))
    assert "E11.99" not in tab and not tab.needs_more_characters("E11.99")
    assert tab.description("Z99.999") == "" and tab.get("Z99.999") is None
    assert tab.get("E11").kind == "category" and tab.get("E11.65").kind == "subcategory"
    # New in 2026: a category with a letter in second place.
    assert tab.description("QA0.0101") == "SCN2A-related neurodevelopmental disorder"


def test_seventh_character_codes(tab: TabularList) -> None:
    info = tab.get("S72.001A")
    assert info is not None and info.billable and info.kind == "extended"
    assert info.parent == "S72.001"
    assert info.description == (
        "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"
    )
    assert not tab.is_billable("S72.001") and tab.needs_more_characters("S72.001")
    assert len(tab.children("S72.001")) == 16  # A B C D E F G H J K M N P Q R S
    # Placeholder X: the XML lists T51.3X; the extension pads to six characters.
    assert tab.ancestors("T51.3X1A") == ["T51.3X1", "T51.3X", "T51.3", "T51"]
    assert tab.description("T51.3X1A").endswith("accidental (unintentional), initial encounter")
    assert tab.parent("S02.0XXA") == "S02.0" and "S02.0XX" not in tab
    assert tab.is_billable("W08.XXXA")  # sevenChrDef on a three-character leaf
    # S06: 7th characters D and S do not apply with 6th character 7 or 8 (prose-only rule).
    assert "S06.377A" in tab and "S06.377D" not in tab and "S06.378S" not in tab
    assert "S06.376D" in tab


def test_notes(tab: TabularList) -> None:
    # <diag><name>T51.0</name> ... <inclusionTerm><note>Toxic effect of ethyl alcohol</note>
    assert tab.inclusion_terms("T51.0") == ("Toxic effect of ethyl alcohol",)
    assert tab.inclusion_terms("T51.0X1") == ("Toxic effect of ethanol NOS",)
    assert tab.inclusion_terms("T51.0X1A") == ()  # extended codes carry no notes of their own
    assert tab.get("T51.0").excludes2[1] == "drunkenness (F10.129, F10.229, F10.929)"
    assert tab.get("E11.9").excludes1 == (
        "type 2 diabetes mellitus, without complications in remission (E11.A)",
    )
    assert "type 1 diabetes mellitus (E10.-)" in tab.get("E11").excludes1


def test_hierarchy(tab: TabularList) -> None:
    assert tab.ancestors("E11.65") == ["E11.6", "E11"]
    assert tab.ancestors("E11") == [] and tab.parent("E11") is None
    assert tab.chapter("I10") == "9" and tab.block("I10") == "I10-I1A"
    assert tab.chapter_title("9") == "Diseases of the circulatory system (I00-I99)"
    assert tab.categories_in("I10-I1A") == ("I10", "I11", "I12", "I13", "I15", "I16", "I1A")
    assert tab.chapters() == [str(n) for n in range(1, 23)]
    assert tab.blocks_in("4")[0] == "E00-E07" and "E08-E13" in tab.blocks_in("4")
    # A block may share its id with its only category.
    assert tab.block("B10") == "B10" and tab.categories_in("B10") == ("B10",)
    assert tab.children("E11.6")[:2] == ("E11.61", "E11.62")


def test_tree_is_consistent(tab: TabularList) -> None:
    codes = tab.all_codes()
    assert codes == sorted(codes) and tab.billable_codes() == sorted(tab.billable_codes())
    for code in codes:
        info = tab.get(code)
        assert info.billable == (not info.children)
        for child in info.children:
            assert tab.parent(child) == code and child.startswith(code)
    start, end = tab.subtree_span("E11.6")
    assert codes[start] == "E11.6" and codes[end - 1] == "E11.69" and codes[end] == "E11.8"


def test_content_hash(tab: TabularList, xml_path: Path) -> None:
    assert tab.content_hash() == hashlib.sha256(xml_path.read_bytes()).hexdigest()[:16]


def test_cache_roundtrip(xml_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_tabular(xml_path, tmp_path)
    pickles = list((tmp_path / "tabular").glob("*.pkl"))
    assert [p.name for p in pickles] == [
        f"tabular-{first.content_hash()}-v{tabular.PARSER_VERSION}.pkl"
    ]
    assert load_tabular(xml_path, tmp_path) is first  # in-process memo

    def no_parsing(*args: object) -> None:
        raise AssertionError("the cached pickle should have been used")

    monkeypatch.setattr(tabular, "parse_tabular", no_parsing)
    # Bypass the in-process memo (clearing it would slow the other tests down).
    second = tabular._load_cached(xml_path.resolve(), tmp_path)
    assert second is not first
    assert second.all_codes() == first.all_codes()
    assert [second.get(c) for c in second.all_codes()] == [first.get(c) for c in first.all_codes()]
    assert second.content_hash() == first.content_hash() and second.year == first.year


# -- small hand-written files ------------------------------------------------

SMALL = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2099</version>
  <chapter>
    <name>19</name>
    <desc>Injury (S00-T88)</desc>
    <section id="S00-S09">
      <desc>Injuries to the head (S00-S09)</desc>
      <diag>
        <name>S02</name>
        <desc>Fracture of skull</desc>
        <sevenChrDef>
          <extension char="A">initial encounter</extension>
          <extension char="S">sequela</extension>
        </sevenChrDef>
        <diag>
          <name>S02.0</name>
          <desc>Fracture of vault</desc>
          <inclusionTerm><note>Fracture of  frontal
            bone</note></inclusionTerm>
        </diag>
        <diag>
          <name>S02.1</name>
          <desc>Fracture of base</desc>
          <sevenChrDef>
            <extension char="B">open</extension>
          </sevenChrDef>
          <diag placeholder="true">
            <name>S02.1X</name>
            <desc>Fracture of base, other</desc>
            <diag><name>S02.1X1</name><desc>Fracture of base, right</desc></diag>
          </diag>
        </diag>
      </diag>
      <diag>
        <name>S09</name>
        <desc>Other head injury</desc>
        <excludes1><note>skull fracture (S02.-)</note></excludes1>
      </diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


def _write(tmp_path: Path, text: str, name: str = "tab.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_small_file_extensions(tmp_path: Path) -> None:
    tab = load_tabular(_write(tmp_path, SMALL))
    assert tab.year == "2099"
    assert tab.all_codes() == [
        "S02", "S02.0", "S02.0XXA", "S02.0XXS", "S02.1", "S02.1X", "S02.1X1", "S02.1X1B", "S09",
    ]
    assert tab.billable_codes() == ["S02.0XXA", "S02.0XXS", "S02.1X1B", "S09"]
    assert tab.description("S02.0XXS") == "Fracture of vault, sequela"
    assert tab.description("S02.1X1B") == "Fracture of base, right, open"  # nearer def wins
    assert tab.inclusion_terms("S02.0") == ("Fracture of frontal bone",)
    assert tab.get("S09").excludes1 == ("skull fracture (S02.-)",)
    assert tab.get("S02.1X1B").kind == "extended" and tab.get("S02.1X").kind == "subcategory"
    assert tab.block("S02.1X1B") == "S00-S09" and tab.chapter("S09") == "19"
    assert tab.blocks_in("19") == ("S00-S09",) and tab.categories_in("S00-S09") == ("S02", "S09")


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        load_tabular(missing)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (SMALL[:400], "not well-formed XML"),
        ("<ICD10CM.index><letter/></ICD10CM.index>", "expected <ICD10CM.tabular>"),
        ("<ICD10CM.tabular><version>1</version></ICD10CM.tabular>", "no <chapter>"),
        (SMALL.replace("<name>S09</name>", "<name>9S0</name>"), "malformed code name '9S0'"),
        (SMALL.replace("<name>S09</name>", "<name>S02</name>"), "code S02 appears twice"),
    ],
)
def test_malformed_file_names_it(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text, "broken-tabular.xml")
    with pytest.raises(TabularError, match=problem) as err:
        load_tabular(path)
    assert str(path) in str(err.value)


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL)
    cache = tmp_path / "cache"
    tab = load_tabular(path, cache)
    (pickled,) = (cache / "tabular").glob("*.pkl")
    pickled.write_bytes(b"not a pickle")
    again = tabular._load_cached(path, cache)
    assert again.all_codes() == tab.all_codes()
    assert pickled.read_bytes() != b"not a pickle"
