"""MDACE: the real annotation files and splits, joined to a synthetic NOTEEVENTS stand-in.

MIMIC-III text is credentialed, so the test writes NOTEEVENTS.csv.gz itself:
every annotated note gets filler text long enough for its offsets (with
newlines and quotes, as real notes have) and letters inside each annotated
range, so offsets, trimming and the joining of notes can be checked exactly.
"""

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from ccl.config import DocsConfig
from ccl.data.sources import load_source
from ccl.data.sources import mdace as mdace_module
from ccl.data.sources.common import DownloadError, MissingDataError, map_code
from ccl.data.sources.mdace import NOTE_SEPARATOR, annotation_summary, load_mdace
from ccl.records import RecordError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mdace"
ANNOTATIONS = DATA / "data" / "Inpatient" / "ICD-10" / "1.0"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"MDACE reference data not at {DATA}")

HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
          "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
FILLER = 'Pt seen on rounds, "stable".\nVitals reviewed; plan as below. ' * 40
# Chart 141751, note 22980: I10 annotated at 2745-2757; we write an edge space and period there.
TRIM_NOTE, TRIM_RANGE, TRIM_TEXT = 22980, (2745, 2757), " hypertensi."


def annotated_notes(files):
    """note_id -> (hadm_id, annotations) over the given MDACE files."""
    notes = {}
    for f in files:
        chart = json.loads(f.read_text())
        for note in chart["notes"]:
            notes[note["note_id"]] = (chart["hadm_id"], note["annotations"])
    return notes


def note_text(annotations):
    length = max(a["end"] for a in annotations) + 50 if annotations else 80
    chars = list((FILLER * (length // len(FILLER) + 1))[:length])
    for a in annotations:
        for i in range(a["begin"], a["end"]):
            chars[i] = "abcdefghij"[i % 10]
    return "".join(chars)


def row(row_id, hadm, category, text):
    return [row_id, 7, hadm, "2150-01-02", "", "", category, "Report", "", "", text]


def write_noteevents(path, notes, overrides=None, skip=()):
    """A NOTEEVENTS.csv(.gz) with the annotated notes (plus two unrelated ones), MIMIC's columns."""
    texts = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(HEADER)
        writer.writerow(row(1, 99, "Nursing", "unrelated\nnote"))
        for note_id, (hadm, anns) in notes.items():
            if note_id in skip:
                continue
            text = note_text(anns)
            for (start, end), value in (overrides or {}).get(note_id, {}).items():
                text = text[:start] + value + text[end:]
            texts[note_id] = text
            writer.writerow(row(note_id, hadm, "Discharge summary", text))
        writer.writerow(row(2, 99, "Nursing", "another"))
    return texts



@pytest.fixture(scope="module")
def world(tab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mdace")
    notes = annotated_notes(sorted(ANNOTATIONS.glob("*.json")))
    overrides = {TRIM_NOTE: {TRIM_RANGE: TRIM_TEXT}}
    texts = write_noteevents(tmp / "NOTEEVENTS.csv.gz", notes, overrides)
    cfg = DocsConfig(
        name="mdace", source="mdace", path=str(DATA), notes_path=str(tmp / "NOTEEVENTS.csv.gz")
    )
    data = load_source(cfg, tab, tmp / "cache")
    return {"cfg": cfg, "data": data, "texts": texts, "notes": notes, "cache": tmp / "cache"}


def doc(world, hadm):
    return next(d for docs in world["data"].docs.values() for d in docs if d.id == str(hadm))


def test_admissions_follow_the_evidence_split(world):
    data = world["data"]
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 181, "val": 60, "test": 61}
    for split in ("train", "val", "test"):
        ids = (DATA / "splits" / "Inpatient" / f"MDace-ev-{split}.csv").read_text().split()
        assert [d.id for d in data.docs[split]] == ids
        assert all(d.split == split and d.source == "mdace" for d in data.docs[split])
    assert data.corpus == []


def test_spans_are_the_icd10cm_annotations(world, tab):
    expected = set()
    for hadm_note, (hadm, anns) in world["notes"].items():
        for a in anns:
            if a["code_system"] == "ICD-10-CM":
                expected.add(
                    (str(hadm), hadm_note, a["begin"], a["end"], map_code(a["code"], tab)[0])
                )
    data = world["data"]
    assert data.stats["evidence_spans"] == len(expected)
    assert data.stats["counts"]["dropped_ICD-10-PCS_annotations"] == 272
    assert data.stats["counts"]["dropped_ICD-9-CM_annotations"] == 2
    for docs in data.docs.values():
        for d in docs:
            assert set(d.codes) == {s.code for s in d.spans}
            assert all(tab.is_billable(c) for c in d.codes)


def test_notes_are_joined_and_offsets_shifted(world):
    d = doc(world, 104034)  # Physician note 709614, then Discharge summary 37661
    first, second = world["texts"][709614], world["texts"][37661]
    assert d.text == first + NOTE_SEPARATOR + second
    shift = len(first) + len(NOTE_SEPARATOR)
    starts = [(s.start, s.end, s.code) for s in d.spans]
    assert starts == [(555, 574, "K22.70"), (283 + shift, 308 + shift, "C16.0"),
                      (756 + shift, 768 + shift, "I10"), (769 + shift, 789 + shift, "Z86.73"),
                      (808 + shift, 836 + shift, "Z87.891"), (3057 + shift, 3068 + shift, "E86.1")]
    assert d.codes == ["K22.70", "C16.0", "I10", "Z86.73", "Z87.891", "E86.1"]  # no PCS 3E0G36Z


def test_span_edges_are_trimmed(world):
    d = doc(world, 141751)
    span = next(s for s in d.spans if s.code == "I10" and s.start < 2800)
    assert (span.start, span.end, span.text) == (2746, 2756, "hypertensi")
    assert world["data"].stats["counts"]["spans_trimmed"] == 1


def test_outdated_codes_are_mapped_and_counted(world):
    d = doc(world, 102283)
    assert "E87.20" in d.codes and "E87.2" not in d.codes
    report = world["data"].stats["codes"]
    assert report["mapped_codes"]["E87.2"] == "E87.20"
    assert report["valid"] + sum(report["mapped"].values()) == 3662
    assert report["dropped"] == {}


def test_second_load_reads_the_note_cache(world, tab, monkeypatch):
    def no_scan(*args, **kwargs):
        raise AssertionError("NOTEEVENTS scanned again")

    monkeypatch.setattr(mdace_module, "_scan_noteevents", no_scan)
    again = load_mdace(world["cfg"], tab, world["cache"])
    assert [d.text for d in again.docs["test"]] == [d.text for d in world["data"].docs["test"]]


def test_annotation_summary_needs_no_text(world, tab, tmp_path):
    cfg = DocsConfig(name="mdace", source="mdace", path=str(DATA))
    summary = annotation_summary(cfg, tab, tmp_path)
    assert [summary["splits"][s]["documents"] for s in ("train", "val", "test")] == [181, 60, 61]
    assert sum(s["evidence_spans"] for s in summary["splits"].values()) == 3662
    assert sum(s["notes"] for s in summary["splits"].values()) == 604


def test_without_noteevents_the_error_says_what_to_get(tab, tmp_path):
    cfg = DocsConfig(name="mdace", source="mdace", path=str(DATA))
    with pytest.raises(
        MissingDataError, match=r"docs\.notes_path.*MIMIC-III v1\.4 NOTEEVENTS\.csv\.gz"
    ):
        load_mdace(cfg, tab, tmp_path)
    cfg.notes_path = str(tmp_path / "NOTEEVENTS.csv.gz")
    with pytest.raises(
        MissingDataError,
        match=rf"{tmp_path}/NOTEEVENTS\.csv\.gz: MIMIC-III NOTEEVENTS file not found",
    ):
        load_mdace(cfg, tab, tmp_path)


@pytest.fixture
def small(tmp_path):
    """An MDACE folder with 2 admissions per split, and its NOTEEVENTS."""
    root = tmp_path / "MDACE"
    (root / "splits" / "Inpatient").mkdir(parents=True)
    target = root / "data" / "Inpatient" / "ICD-10" / "1.0"
    target.mkdir(parents=True)
    for split in ("train", "val", "test"):
        ids = (DATA / "splits" / "Inpatient" / f"MDace-ev-{split}.csv").read_text().split()[:2]
        (root / "splits" / "Inpatient" / f"MDace-ev-{split}.csv").write_text("\n".join(ids) + "\n")
        for hadm in ids:
            shutil.copy(ANNOTATIONS / f"{hadm}-ICD-10.json", target / f"{hadm}-ICD-10.json")
    notes = annotated_notes(sorted(target.glob("*.json")))
    cfg = DocsConfig(
        name="mdace", source="mdace", path=str(root), notes_path=str(tmp_path / "NOTEEVENTS.csv")
    )
    return {
        "root": root,
        "target": target,
        "notes": notes,
        "cfg": cfg,
        "csv": tmp_path / "NOTEEVENTS.csv",
    }


def test_small_copy_loads_from_plain_csv(small, tab, tmp_path):
    write_noteevents(small["csv"], small["notes"])
    data = load_mdace(small["cfg"], tab, tmp_path / "cache")
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 2, "val": 2, "test": 2}


def test_noteevents_problems_name_the_file(small, tab, tmp_path):
    missing = next(iter(small["notes"]))
    write_noteevents(small["csv"], small["notes"], skip={missing})
    with pytest.raises(
        RecordError,
        match=rf"{small['csv']}: 1 annotated notes are not in this file \(ROW_ID \[{missing}\]",
    ):
        load_mdace(small["cfg"], tab, tmp_path / "c1")
    note_id, (_, anns) = next((k, v) for k, v in small["notes"].items() if v[1])
    write_noteevents(small["csv"], small["notes"], overrides={note_id: {(10, 10**6): ""}})
    with pytest.raises(
        RecordError,
        match=rf"-ICD-10\.json: note {note_id}: annotation .* runs past its text in {small['csv']}",
    ):
        load_mdace(small["cfg"], tab, tmp_path / "c2")
    small["csv"].write_text("a,b\n1,2\n")
    with pytest.raises(RecordError, match=rf"{small['csv']}: not a MIMIC-III NOTEEVENTS file"):
        load_mdace(small["cfg"], tab, tmp_path / "c3")


def test_annotation_file_problems_name_the_file(small, tab, tmp_path):
    write_noteevents(small["csv"], small["notes"])
    victim = sorted(small["target"].glob("*.json"))[0]
    chart = json.loads(victim.read_text())
    del chart["notes"][0]["annotations"][0]["begin"]
    victim.write_text(json.dumps(chart))
    with pytest.raises(
        RecordError, match=rf"{victim}: notes\[0\]\.annotations\[0\]: field 'begin' missing"
    ):
        load_mdace(small["cfg"], tab, tmp_path / "c1")
    victim.write_text("{not json")
    with pytest.raises(RecordError, match=rf"{victim}: invalid JSON"):
        load_mdace(small["cfg"], tab, tmp_path / "c2")
    victim.unlink()
    with pytest.raises(
        MissingDataError, match=rf"{victim}: MDACE annotations of admission \d+ not found"
    ):
        load_mdace(small["cfg"], tab, tmp_path / "c3")
    shutil.copy(ANNOTATIONS / victim.name, victim)
    split = small["root"] / "splits" / "Inpatient" / "MDace-ev-val.csv"
    split.write_text(split.read_text().split()[0] + "\nabc\n")
    with pytest.raises(RecordError, match=rf"{split}:2: 'abc' is not a hospital admission id"):
        annotation_summary(small["cfg"], tab, tmp_path)


def test_without_a_path_the_annotations_are_downloaded(tab, tmp_path, web):
    cfg = DocsConfig(name="mdace", source="mdace", path=None)
    with pytest.raises(
        DownloadError,
        match=r"raw\.githubusercontent\.com/3mcloud/MDACE/.*MDace-ev-train\.csv.*docs\.path",
    ):
        annotation_summary(cfg, tab, tmp_path)

    def from_disk(url):  # serve the reference copy in place of GitHub
        return (DATA / url.split(mdace_module.COMMIT + "/", 1)[1]).read_bytes()

    web.serve = from_disk
    summary = annotation_summary(cfg, tab, tmp_path)
    assert [summary["splits"][s]["documents"] for s in ("train", "val", "test")] == [181, 60, 61]
    assert len(list((tmp_path / "sources").glob("mdace-*/data/Inpatient/ICD-10/1.0/*.json"))) == 302


def test_bom_and_windows_line_ends_in_noteevents_load_the_same(small, tab, tmp_path):
    """Issue 23: a NOTEEVENTS saved with a byte-order mark and CRLF line ends (inside the
    notes too) loads the same text and spans: MDACE's offsets count universal-newline text."""
    write_noteevents(small["csv"], small["notes"])
    want = load_mdace(small["cfg"], tab, tmp_path / "cache-lf")
    raw = small["csv"].read_bytes().decode("utf-8")
    small["csv"].write_bytes(("\ufeff" + raw.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8"))
    got = load_mdace(small["cfg"], tab, tmp_path / "cache-crlf")
    pick = lambda data: [(d.id, d.text, d.spans) for v in data.docs.values() for d in v]  # noqa: E731
    assert pick(got) == pick(want)
    assert all("\r" not in d.text for v in got.docs.values() for d in v)


def test_a_label_split_by_sex_is_decided_by_the_note_text(small, tab, tmp_path):
    """Issue 23, item 6: an annotation coded N35.9 (split into male N35.91x / female N35.92)
    takes the note's own "Sex: F"; without text (annotation_summary) it is ambiguous."""
    path = sorted(small["target"].glob("*.json"))[0]
    chart = json.loads(path.read_text())
    note = next(n for n in chart["notes"] if n["annotations"] and min(a["begin"] for a in n["annotations"]) > 20)
    ann = next(a for a in note["annotations"] if a["code_system"] == "ICD-10-CM")
    ann["code"] = "N35.9"
    path.write_text(json.dumps(chart))
    notes = annotated_notes(sorted(small["target"].glob("*.json")))
    write_noteevents(small["csv"], notes, {note["note_id"]: {(0, 10): "Sex:   F  "}})
    data = load_mdace(small["cfg"], tab, tmp_path / "cache")
    doc = next(d for v in data.docs.values() for d in v if d.id == str(chart["hadm_id"]))
    assert "N35.92" in doc.codes
    assert data.stats["codes"]["mapped"].get("sex_descendant") == 1
    with pytest.warns(UserWarning, match="dropped as ambiguous.*N35.9 sex"):
        summary = annotation_summary(small["cfg"], tab, tmp_path / "cache")
    assert summary["codes"]["dropped"] == {"ambiguous_sex": 1}
