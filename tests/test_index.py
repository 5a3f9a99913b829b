"""Alphabetic Index parser and CDC downloader, on the real CDC files and small hand-written ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ccl.config import ICDConfig
from ccl.icd.download import (
    CDC_TABLE_INDEX_URL,
    IndexUnavailable,
    download_index,
    extract_index,
    resolve_index_files,
)
from ccl.icd.index import (
    IndexEntry,
    IndexFormatError,
    find_term,
    parse_index_xml,
    site_phrase,
    split_nonessential,
    term_phrase,
    validate_entries,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icd10cm"
MAIN = DATA / "icd10cm-index-2025-rebuilt.xml"
EINDEX = DATA / "icd10cm-eindex-April-1-2026-XML.xml"
DRUG = DATA / "icd10cm-drug-April-1-2026-XML.xml"
NEOPLASM = DATA / "icd10cm-neoplasm-April-1-2026-XML.xml"
needs_data = pytest.mark.skipif(
    not MAIN.is_file(), reason=f"CDC index files not found in {DATA} (shared test data)"
)



@pytest.fixture(scope="module")
def main_index():
    return parse_index_xml(MAIN)


@pytest.fixture(scope="module")
def drug():
    return parse_index_xml(DRUG)


@pytest.fixture(scope="module")
def neoplasm():
    return parse_index_xml(NEOPLASM)


def _by_path(parse, *path, role=None):
    return [e for e in parse.entries if e.path == path and (role is None or e.role == role)]


def _write(tmp_path: Path, body: str, name: str = "index.xml") -> Path:
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n{body}', encoding="utf-8")
    return path


# ---------------------------------------------------------------- main index (real file)


@needs_data
def test_main_index_counts_match_the_file(main_index):
    s = main_index.stats
    assert main_index.source == "index"
    # the shared data README: 8,100 main terms, 72,924 sub-terms, 62,721 codes
    assert (s["main_terms"], s["terms"]) == (8100, 72924)
    assert sum(e.role == "code" for e in main_index.entries) == 62721
    assert s["incomplete_dash"] == 6930  # <code>...-</code> in the file
    assert s["empty_titles"] == 5  # "<title><nemod>(gastro)</nemod></title>" in the rebuilt copy
    assert s["see"] == 12136 and s["see_also"] == 2057
    assert 0 < s["see_resolved_with_code"] <= s["see_resolved"] < s["see"]


@needs_data
def test_main_index_hand_checked_entries(main_index):
    (aarskog,) = _by_path(main_index, "Aarskog's syndrome")
    assert (aarskog.code, aarskog.raw_code, aarskog.phrase) == (
        "Q87.19",
        "Q87.19",
        "Aarskog's syndrome",
    )
    assert (aarskog.source, aarskog.column, aarskog.role) == ("index", None, "code")

    (abasia,) = _by_path(main_index, "Abasia")
    assert abasia.code == "F44.4"
    assert abasia.nonessential == ("-astasia", "hysterical")

    (dm,) = _by_path(main_index, "Diabetes, diabetic", "type 2", "with", "neuropathy")
    assert dm.code == "E11.40"
    assert dm.phrase == "type 2 diabetes with neuropathy"
    assert dm.nonessential == ("mellitus", "sugar")  # the main term's nemod applies below it


@needs_data
def test_see_reference_is_resolved(main_index):
    assert (("Abdominalgia",), "Pain, abdominal") in main_index.see
    assert find_term(main_index, "Pain, abdominal") == ("Pain", "abdominal")
    (target,) = _by_path(main_index, "Pain", "abdominal", role="code")
    (see,) = _by_path(main_index, "Abdominalgia")
    assert (see.role, see.code, see.phrase) == ("see", target.code, "Abdominalgia")
    # seeAlso is resolved and counted, but yields no entries: Aberrant keeps its own tree
    assert (("Aberrant",), "Malposition, congenital") in main_index.see_also
    assert _by_path(main_index, "Aberrant") == []


@needs_data
def test_main_index_validation_counts_incomplete(main_index, tab):
    kept, report = validate_entries(main_index, tab)
    r = report["sources"]["index"]
    assert r["entries"] == len(main_index.entries)
    assert r["valid"] == len(kept) == report["kept"]
    assert r["valid"] + r["incomplete"] + r["invalid"] == r["entries"]
    assert r["incomplete"] >= main_index.stats["incomplete_dash"] > 0
    assert r["examples"]["incomplete"]
    assert all(tab.is_billable(e.code) for e in kept)
    assert not any(e.raw_code.endswith("-") for e in kept)


# ---------------------------------------------------------------- tables (real files)


@needs_data
def test_drug_table_cells_and_columns(drug):
    assert drug.source == "drug"
    entries = {e.column: e for e in _by_path(drug, "1-propanol")}
    # "--" cells (adverse effect, underdosing) give no entry
    assert set(entries) == {
        "poisoning accidental (unintentional)",
        "poisoning intentional self-harm",
        "poisoning assault",
        "poisoning undetermined",
    }
    accidental = entries["poisoning accidental (unintentional)"]
    assert accidental.code == "T51.3X1"
    assert accidental.phrase == "poisoning by 1-propanol, accidental (unintentional)"
    assert entries["poisoning assault"].phrase == "poisoning by 1-propanol, assault"
    morph = {e.column: e for e in _by_path(drug, "14-hydroxydihydro-morphinone")}
    assert morph["adverse effect"].code == "T40.2X5"
    assert morph["adverse effect"].phrase == "adverse effect of 14-hydroxydihydro-morphinone"
    assert morph["underdosing"].phrase == "underdosing of 14-hydroxydihydro-morphinone"
    assert drug.stats["empty_cells"] == 3188  # the file's "--" cells


@needs_data
def test_drug_see_reference_copies_the_target_columns(drug):
    target = {e.column: e.code for e in _by_path(drug, "Butane")}
    see = {e.column: e for e in _by_path(drug, "Gas NEC", "butane")}
    assert {c: e.code for c, e in see.items()} == target
    assert all(e.role == "see" for e in see.values())
    assert see["poisoning assault"].phrase == "poisoning by butane gas, assault"


@needs_data
def test_drug_codes_need_a_seventh_character(drug, tab):
    kept, report = validate_entries(drug, tab)
    r = report["sources"]["drug"]
    assert kept == [] and r["incomplete"] == r["entries"] > 0
    assert "T51.3X1 (1-propanol)" in r["examples"]["incomplete"]
    kept_a, report_a = validate_entries(drug, tab, seventh="A")
    assert report_a["completed"] == len(kept_a) == r["entries"]
    codes = {e.column: e.code for e in kept_a if e.path == ("1-propanol",)}
    assert codes["poisoning accidental (unintentional)"] == "T51.3X1A"
    assert all(e.raw_code[-1] != "A" for e in kept_a if e.path == ("1-propanol",))
    with pytest.raises(ValueError, match="seventh"):
        validate_entries(drug, tab, seventh="AA")


@needs_data
def test_neoplasm_table(neoplasm, tab):
    assert neoplasm.source == "neoplasm"
    top = {e.column: e for e in _by_path(neoplasm, "Neoplasm, neoplastic")}
    assert top["malignant primary"].code == "C80.1"
    assert top["malignant primary"].phrase == "malignant neoplasm"
    abdomen = {
        e.column: e for e in _by_path(neoplasm, "Neoplasm, neoplastic", "abdomen, abdominal")
    }
    assert abdomen["malignant primary"].phrase == "malignant neoplasm of abdomen"
    assert abdomen["malignant primary"].code == "C76.2"
    assert abdomen["malignant secondary"].raw_code == "C79.8-"
    assert abdomen["malignant secondary"].phrase == "secondary malignant neoplasm of abdomen"
    assert abdomen["ca in situ"].phrase == "carcinoma in situ of abdomen"
    assert abdomen["benign"].phrase == "benign neoplasm of abdomen"
    assert abdomen["uncertain behavior"].phrase == "neoplasm of uncertain behavior of abdomen"
    assert abdomen["unspecified behavior"].phrase == "neoplasm of unspecified behavior of abdomen"
    cavity = _by_path(neoplasm, "Neoplasm, neoplastic", "abdomen, abdominal", "cavity")
    assert {e.phrase for e in cavity} >= {"malignant neoplasm of abdomen, cavity"}
    # the one <manif> in this file holds a site text, not a code
    assert neoplasm.stats["manif_not_code"] == 1
    _, report = validate_entries(neoplasm, tab)
    r = report["sources"]["neoplasm"]
    assert r["incomplete"] >= 1092  # the "C79.8-" style cells at least
    assert any(x.startswith("C79.8- ") for x in r["examples"]["incomplete"])


@needs_data
def test_external_cause_index(tab):
    eindex = parse_index_xml(EINDEX)
    assert eindex.source == "eindex"
    (abandon,) = _by_path(eindex, "Abandonment NEC")  # title text after <nemod> is kept
    assert (abandon.code, abandon.phrase) == ("X58", "abandonment")
    assert eindex.stats["subcat"] == 11 and eindex.stats["seecat"] == 4
    (lightning,) = _by_path(eindex, "Accident", "caused by, due to", "lightning")
    assert (lightning.role, lightning.code) == ("category", "T75.0")
    kept, report = validate_entries(eindex, tab, seventh="A")
    completed = {e.path: e.code for e in kept}
    assert completed[("Abandonment NEC",)] == "X58.XXXA"  # placeholder X, then the 7th character
    assert (
        "Accident",
        "caused by, due to",
        "lightning",
    ) not in completed  # T75.0 needs 5th/6th too
    assert report["incomplete"] > 0


@needs_data
def test_all_four_files_parse_and_report_their_cost(main_index, drug, neoplasm):
    # Behaviour, not wall-clock time (unit tests never assert timings): every file yields
    # main terms and records how long its parse took.
    eindex = parse_index_xml(EINDEX)
    for parsed in (main_index, eindex, drug, neoplasm):
        assert parsed.stats["main_terms"] > 0
        assert parsed.stats["seconds"] >= 0


# ---------------------------------------------------------------- hand-written files and rules

SMALL = """<ICD10CM.index>
  <version>2025</version>
  <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
  <letter><title>D</title>
    <mainTerm>
      <title>Dementia<nemod>(degenerative (primary))</nemod></title>
      <code>F03.90</code>
      <term level="1">
        <title>in</title>
        <term level="2">
          <title>Alzheimer's disease</title>
          <code>G30.9</code>
          <manif>F02.80</manif>
        </term>
      </term>
      <term level="1"><title>senile</title><see>Dementia, in, Alzheimer's disease</see></term>
      <term level="1"><title>old age</title><see>Dementia, senile</see></term>
      <term level="1"><title>presenile</title><seecat>F03</seecat></term>
      <term level="1"><title>with behavior<nemod>(aggressive)</nemod> NEC</title><code>F03.91</code></term>
      <term level="1"><title>unknown</title><code>Q99.99</code></term>
    </mainTerm>
    <mainTerm>
      <title>Delirium</title>
      <term level="1"><title>in dementia</title><code>F05</code></term>
    </mainTerm>
  </letter>
</ICD10CM.index>"""


def test_manifestation_category_and_see_chain(tmp_path):
    parse = parse_index_xml(_write(tmp_path, SMALL))
    assert parse.source == "index" and parse.version == "2025"
    alz = _by_path(parse, "Dementia", "in", "Alzheimer's disease")
    assert [(e.code, e.role) for e in alz] == [("G30.9", "code"), ("F02.80", "manifestation")]
    assert alz[0].phrase == "dementia in Alzheimer's disease"
    assert alz[0].nonessential == ("degenerative (primary)",)  # outer parentheses of a nested nemod
    senile = _by_path(parse, "Dementia", "senile")
    assert [(e.code, e.role) for e in senile] == [("G30.9", "see"), ("F02.80", "see")]
    assert senile[0].phrase == "senile dementia"
    # "old age" -> "Dementia, senile" (no code) -> "Dementia, in, Alzheimer's disease"
    assert [e.code for e in _by_path(parse, "Dementia", "old age")] == ["G30.9", "F02.80"]
    (cat,) = _by_path(parse, "Dementia", "presenile")
    assert (cat.role, cat.code) == ("category", "F03")
    (nec,) = _by_path(parse, "Dementia", "with behavior NEC")
    assert nec.phrase == "dementia with behavior"
    assert parse.stats["manif"] == 1 and parse.stats["seecat"] == 1
    assert parse.stats["see_resolved"] == 2


def test_validation_classes(tmp_path, tab):
    parse = parse_index_xml(_write(tmp_path, SMALL))
    kept, report = validate_entries(parse, tab)
    r = report["sources"]["index"]
    assert {e.code for e in kept} == {"F03.90", "G30.9", "F02.80", "F05"}
    assert r["invalid"] == 1 and r["examples"]["invalid"] == ["Q99.99 (Dementia > unknown)"]
    # the F03 category, and F03.91, billable until FY2022, now split into F03.911 ...
    assert r["incomplete"] == 2
    assert r["examples"]["incomplete"] == [
        "F03 (Dementia > presenile)",
        "F03.91 (Dementia > with behavior NEC)",
    ]
    entry = IndexEntry(("X",), "x", (), "E11.4", "E11.4-", "index", None)
    _, report = validate_entries([entry], tab, seventh="A")
    assert report["incomplete"] == 1 and report["completed"] == 0  # a '-' is never completed


def test_table_file_and_errors(tmp_path):
    table = """<ICD10CM.index><version>2026</version>
      <indexHeading><head col="1">Substance</head><head col="2">Poisoning Accidental (unintentional)</head>
        <head col="3">Adverse effect</head></indexHeading>
      <letter><title>A</title>
        <mainTerm><title>Alcohol</title><cell col="2">T51.0X1</cell><cell col="3">-</cell>
          <term level="1"><title>beverage</title><cell col="2">T51.0X1</cell><cell col="3">--</cell></term>
        </mainTerm></letter></ICD10CM.index>"""
    parse = parse_index_xml(_write(tmp_path, table))
    assert parse.source == "drug"
    # no other use of "alcohol" in this file: capital kept first in a phrase, dropped inside one
    assert [e.phrase for e in parse.entries] == [
        "poisoning by Alcohol, accidental (unintentional)",
        "poisoning by beverage alcohol, accidental (unintentional)",
    ]
    assert parse.stats["empty_cells"] == 2
    bad_col = table.replace('<cell col="3">-</cell>', '<cell col="5">T51.0X5</cell>')
    with pytest.raises(IndexFormatError, match=r"bad\.xml.*Alcohol.*col='5'"):
        parse_index_xml(_write(tmp_path, bad_col, "bad.xml"))
    with pytest.raises(IndexFormatError, match=r"broken\.xml.*not well-formed"):
        parse_index_xml(_write(tmp_path, "<ICD10CM.index><letter>", "broken.xml"))
    with pytest.raises(IndexFormatError, match=r"other\.xml.*<ICD10CM\.tabular>"):
        parse_index_xml(_write(tmp_path, "<ICD10CM.tabular/>", "other.xml"))
    with pytest.raises(IndexFormatError, match="file not found"):
        parse_index_xml(tmp_path / "missing.xml")


def test_phrase_rules():
    assert term_phrase(("Diabetes, diabetic", "type 2", "with", "neuropathy")) == (
        "type 2 diabetes with neuropathy"
    )
    assert (
        term_phrase(("Burn", "ankle", "right", "first degree")) == "ankle burn, right, first degree"
    )
    assert term_phrase(("Struck by", "hockey", "stick")) == "struck by hockey stick"
    assert term_phrase(("Gas NEC", "incomplete combustion of")) == "incomplete combustion of gas"
    assert (
        term_phrase(("Fall, falling", "from, off, out of", "chair"))
        == "fall from, off, out of chair"
    )
    assert term_phrase(("Aarskog's syndrome",)) == "Aarskog's syndrome"
    assert term_phrase(("HIV", "disease")) == "disease HIV"
    votes = {"syndrome": 3, "down": -2}  # lower-case uses minus capitalised uses
    assert term_phrase(("Syndrome", "Down"), votes) == "Down syndrome"
    assert term_phrase(("Down syndrome",), votes) == "Down syndrome"
    assert term_phrase(("Amsterdam dwarfism",), votes) == "Amsterdam dwarfism"  # no vote: kept
    assert term_phrase(("Dementia", "senile"), votes) == "senile dementia"  # no vote, mid-phrase
    assert site_phrase(("lip", "overlapping lesion", "with oral cavity")) == (
        "lip, overlapping lesion with oral cavity"
    )
    assert split_nonessential("(-astasia) (hysterical)") == ("-astasia", "hysterical")
    assert split_nonessential("(acute) (with (mild) pain) NEC") == (
        "acute",
        "with (mild) pain",
        "NEC",
    )


# ---------------------------------------------------------------- downloader


def _xml_of(kind: str, name: str, version: str = "2025") -> str:
    """A minimal file of ``kind`` as the CDC writes it (root element, version, title/heading)."""
    if kind == "tabular":
        return f"<ICD10CM.tabular><version>{version}</version><!-- {name} --></ICD10CM.tabular>"
    head = {
        "index": "<title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>",
        "eindex": "<title>ICD-10-CM EXTERNAL CAUSE of INJURIES INDEX</title>",
        "drug": '<indexHeading><head col="1">Substance</head><head col="2">Poisoning</head></indexHeading>',
        "neoplasm": '<indexHeading><head col="1">Neoplasm</head><head col="2">Benign</head></indexHeading>',
    }[kind]
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<ICD10CM.index><version>{version}</version>{head}'
            f"<!-- {name} --><letter><title>A</title></letter></ICD10CM.index>")


def _kind_of(name: str) -> str:
    for kind in ("eindex", "neoplasm", "drug", "tabular", "index"):
        if kind in name.lower():
            return kind
    raise ValueError(name)


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, _xml_of(_kind_of(name), name))
        z.writestr("Table-and-Index/icd10cm-index-2025.pdf", b"%PDF")
    return path


NAMES_2025 = [
    "Table-and-Index/icd10cm_index_2025.xml",
    "Table-and-Index/icd10cm_eindex_2025.xml",
    "Table-and-Index/icd10cm_drug_2025.xml",
    "Table-and-Index/icd10cm_neoplasm_2025.xml",
    "Table-and-Index/icd10cm_tabular_2025.xml",
    "Table-and-Index/icd10cm_index_addenda_2025.xml",
]


def _offline(web):
    """The ``(url, timeout)`` of every download tried on the (offline) fake web."""
    web.serve = web.refuse
    return web.asked


def test_extract_index_from_zip(tmp_path):
    archive = _zip(tmp_path / "t.zip", NAMES_2025)
    files = extract_index(archive, tmp_path / "out")
    assert list(files) == ["index", "eindex", "drug", "neoplasm"]
    assert files["index"].name == "icd10cm_index_2025.xml"  # not the addenda, not eindex
    assert "icd10cm_drug_2025.xml" in files["drug"].read_text()
    incomplete = _zip(tmp_path / "u.zip", NAMES_2025[:3])
    with pytest.raises(IndexUnavailable, match="no neoplasm XML"):
        extract_index(incomplete, tmp_path / "out2")


def test_download_offline_names_url_and_config_keys(tmp_path, web):
    calls = _offline(web)
    with pytest.raises(IndexUnavailable) as err:
        download_index(2025, tmp_path, timeout=3)
    message = str(err.value)
    url = CDC_TABLE_INDEX_URL.format(year=2025)
    assert calls == [(url, 3)]
    assert url in message and "icd10cm-neoplasm-2025.xml" in message
    for key in ("icd.index_xml", "icd.eindex_xml", "icd.drug_xml", "icd.neoplasm_xml"):
        assert key in message
    assert not list(tmp_path.glob("*.part"))  # no half-written download left behind


def test_download_with_url_override_then_cached(tmp_path, web):
    archive = _zip(tmp_path / "mirror.zip", NAMES_2025)
    mirror = "https://mirror.example.org/icd/mirror.zip"
    web.serve = lambda url: archive.read_bytes()
    files = download_index(2025, tmp_path / "dest", url=mirror)
    assert files["eindex"].parent == tmp_path / "dest" and web.calls == [mirror]
    _offline(web)  # the kept zip is reused: no second download
    assert download_index(2025, tmp_path / "dest", url=mirror) == files
    assert web.calls == [mirror]


@needs_data
def test_resolve_index_files(tmp_path, web):
    configured = resolve_index_files(ICDConfig(drug_xml=str(DRUG)), tmp_path)
    assert configured.origin == "config" and configured.paths == {"drug": DRUG}
    assert "icd.index_xml" in configured.message and not configured.fallback
    with pytest.raises(IndexUnavailable, match="icd.neoplasm_xml points to"):
        resolve_index_files(ICDConfig(neoplasm_xml=str(tmp_path / "nope.xml")), tmp_path)

    off = resolve_index_files(ICDConfig(year=2025, download=False), tmp_path)
    assert off.fallback and off.paths == {}
    assert off.message.startswith("No Alphabetic Index available: gold pairs come from Tabular")
    calls = _offline(web)
    failed = resolve_index_files(ICDConfig(year=2025, download=True), tmp_path, timeout=2)
    assert failed.fallback and CDC_TABLE_INDEX_URL.format(year=2025) in failed.message
    assert len(calls) == 1

    extract_index(_zip(tmp_path / "z.zip", NAMES_2025), tmp_path / "icd10cm-index" / "2025")
    cached = resolve_index_files(ICDConfig(year=2025, download=True), tmp_path)
    assert cached.origin == "cache" and set(cached.paths) == {"index", "eindex", "drug", "neoplasm"}
    assert len(calls) == 1


# ---------------------------------------------------------------- files of any year, by content


NAMES_FY2025_DASHED = [  # the FY2025 release's names: icd-10-cm-..., not icd10cm-...
    "icd-10-cm-index-2025.xml",
    "icd-10-cm-eindex-2025.xml",
    "icd-10-cm-drug-2025.xml",
    "icd-10-cm-neoplasm-2025.xml",
    "icd-10-cm-tabular-2025.xml",
]


def test_fy2025_dashed_names_are_found_by_content_in_a_zip_and_a_folder(tmp_path):
    from ccl.icd.download import find_index_files

    files = extract_index(_zip(tmp_path / "fy2025.zip", NAMES_FY2025_DASHED), tmp_path / "out")
    assert {k: p.name for k, p in files.items()} == {
        "index": "icd-10-cm-index-2025.xml", "eindex": "icd-10-cm-eindex-2025.xml",
        "drug": "icd-10-cm-drug-2025.xml", "neoplasm": "icd-10-cm-neoplasm-2025.xml"}
    found = find_index_files(tmp_path / "out")
    assert {k: p.name for k, p in found.items()} == {k: p.name for k, p in files.items()}


def test_any_name_is_recognised_by_root_element_and_heading(tmp_path):
    from ccl.icd.download import find_index_files, sniff_index_kind

    folder = tmp_path / "renamed"
    folder.mkdir()
    for kind, name in [("index", "a.xml"), ("eindex", "b.xml"), ("drug", "c.xml"), ("neoplasm", "d.xml"),
                       ("tabular", "e.xml")]:
        (folder / name).write_text(_xml_of(kind, name), encoding="utf-8")
    (folder / "f.xml").write_text("not xml at all", encoding="utf-8")
    (folder / "g.xml").write_text("<html><title>Index</title></html>", encoding="utf-8")
    assert sniff_index_kind(folder / "e.xml") is None  # a Tabular List is not an index
    assert sniff_index_kind(folder / "f.xml") is None and sniff_index_kind(folder / "g.xml") is None
    assert sniff_index_kind(folder / "c.xml") == ("drug", "2025")
    assert {k: p.name for k, p in find_index_files(folder).items()} == {
        "index": "a.xml", "eindex": "b.xml", "drug": "c.xml", "neoplasm": "d.xml"}
    # Two years of one kind: the later version is taken.
    (folder / "z-old-eindex.xml").write_text(_xml_of("eindex", "old", "2019"), encoding="utf-8")
    (folder / "a-new-eindex.xml").write_text(_xml_of("eindex", "new", "2026"), encoding="utf-8")
    assert find_index_files(folder)["eindex"].name == "a-new-eindex.xml"


@needs_data
def test_the_shared_files_are_recognised_by_content():
    from ccl.icd.download import find_index_files, sniff_index_kind

    folder = DATA
    assert sniff_index_kind(folder / "icd10cm-neoplasm-April-1-2026-XML.xml") == ("neoplasm", "2026")
    assert set(find_index_files(folder)) == {"index", "eindex", "drug", "neoplasm"}
