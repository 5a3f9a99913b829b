"""MIMIC-IV ICD-10: the real public split, with synthetic stand-ins for the credentialed CSVs."""

import gzip
from pathlib import Path

import pandas as pd
import pytest

from ccl.config import DocsConfig
from ccl.data.sources import load_source
from ccl.data.sources.common import DownloadError, MissingDataError
from ccl.data.sources.mimic4 import load_mimic4, read_split
from ccl.records import RecordError

SPLIT = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "mimic4"
    / "mimiciv_icd10_split.feather"
)
pytestmark = pytest.mark.skipif(not SPLIT.exists(), reason=f"MIMIC-IV split file not at {SPLIT}")



@pytest.fixture(scope="module")
def ids():
    frame = pd.read_feather(SPLIT)
    return {
        s: frame.loc[frame["split"] == s, "_id"].head(3).astype(int).tolist()
        for s in ("train", "val", "test")
    }


def write_gz_csv(path, header, rows):
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        pd.DataFrame(rows, columns=header).to_csv(f, index=False)
    return path


@pytest.fixture
def files(tmp_path, ids):
    tr, va, te = ids["train"], ids["val"], ids["test"]
    notes = [
        (f"{tr[0]}-DS-1", 1, tr[0], "DS", 1, "Discharge summary one.\nHTN, DM2."),
        (f"{tr[1]}-DS-2", 2, tr[1], "DS", 2, "second part"),  # two notes, written out of order
        (f"{tr[1]}-DS-1", 2, tr[1], "DS", 1, "first part"),
        (f"{tr[2]}-DS-1", 3, tr[2], "DS", 1, "only ICD-9 codes here"),
        (f"{va[0]}-DS-1", 4, va[0], "DS", 1, 'Acidosis, "metabolic".'),
        (f"{te[0]}-DS-1", 5, te[0], "DS", 1, "Test note."),
        ("99-DS-1", 6, 99, "DS", 1, "not in the split"),
    ]
    diagnoses = [
        (1, tr[0], 2, "E119", 10),
        (1, tr[0], 1, "I10", 10),
        (1, tr[0], 3, "4019", 9),  # ICD-9: ignored
        (2, tr[1], 1, "J189", 10),
        (2, tr[1], 2, "J189", 10),  # repeated code: once
        (3, tr[2], 1, "25000", 9),
        (4, va[0], 1, "E872", 10),  # FY2016 code, split in FY2023: E87.20
        (5, te[0], 1, "R05", 10),
        (6, 99, 1, "I10", 10),
    ]
    return {
        "notes": write_gz_csv(tmp_path / "discharge.csv.gz",
                              ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "text"], notes),
        "labels": write_gz_csv(tmp_path / "diagnoses_icd.csv.gz",
                               ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], diagnoses),
    }


def config(files, **kw):
    base = {
        "notes_path": str(files["notes"]),
        "labels_path": str(files["labels"]),
        "split_path": str(SPLIT),
    }
    return DocsConfig(name="mimic4", source="mimic4", **{**base, **kw})


def test_documents_codes_and_notes(files, ids, tab, tmp_path):
    data = load_source(config(files), tab, tmp_path)
    tr, va, te = ids["train"], ids["val"], ids["test"]
    by_id = {d.id: d for docs in data.docs.values() for d in docs}
    assert set(by_id) == {str(tr[0]), str(tr[1]), str(va[0]), str(te[0])}
    assert by_id[str(tr[0])].codes == ["I10", "E11.9"]  # seq_num order, dotted, ICD-9 left out
    assert by_id[str(tr[1])].text == "first part\n\nsecond part"
    assert by_id[str(tr[1])].codes == ["J18.9"]
    assert (
        by_id[str(va[0])].codes == ["E87.20"] and by_id[str(va[0])].text == 'Acidosis, "metabolic".'
    )
    assert by_id[str(te[0])].codes == ["R05.9"]
    assert [d.split for d in data.docs["val"]] == ["val"]
    assert all(not d.spans and d.source == "mimic4" for d in by_id.values())
    assert data.corpus == data.docs["train"]
    counts = data.stats["counts"]
    assert counts["admissions_without_icd10_codes"] == 1  # tr[2]: ICD-9 only
    assert counts["admissions_without_note"] == 122_279 - 5
    assert data.stats["split_sizes"] == {"train": 89_099, "val": 13_378, "test": 19_802}
    assert data.stats["codes"]["mapped_codes"] == {"E87.2": "E87.20", "R05": "R05.9"}


def test_missing_inputs_say_what_to_get(files, tab, tmp_path):
    with pytest.raises(
        MissingDataError, match=r"docs\.notes_path is not set.*MIMIC-IV-Note.*discharge\.csv\.gz"
    ):
        load_mimic4(config(files, notes_path=None), tab, tmp_path)
    with pytest.raises(
        MissingDataError, match=r"docs\.labels_path is not set.*diagnoses_icd\.csv\.gz"
    ):
        load_mimic4(config(files, labels_path=None), tab, tmp_path)
    gone = tmp_path / "nowhere.csv.gz"
    with pytest.raises(MissingDataError, match=rf"{gone}: MIMIC-IV-Note discharge notes not found"):
        load_mimic4(config(files, notes_path=str(gone)), tab, tmp_path)


def test_malformed_files_are_named(files, tab, tmp_path):
    bad = write_gz_csv(tmp_path / "diag.csv.gz", ["hadm_id", "icd_code"], [(1, "I10")])
    with pytest.raises(RecordError, match=rf"{bad}: columns \['icd_version'\] missing"):
        load_mimic4(config(files, labels_path=str(bad)), tab, tmp_path)
    frame = pd.DataFrame({"_id": [1, 2], "split": ["train", "dev"]})
    split = tmp_path / "split.feather"
    frame.to_feather(split)
    with pytest.raises(RecordError, match=rf"{split}: split values \['dev'\]"):
        read_split(split)
    split.write_text("not arrow")
    with pytest.raises(RecordError, match=rf"{split}: not a readable feather file"):
        read_split(split)


def test_split_file_download_offline(files, tab, tmp_path, web):
    with pytest.raises(DownloadError, match=r"medical-coding-reproducibility.*docs\.split_path"):
        load_mimic4(config(files, split_path=None), tab, tmp_path)
