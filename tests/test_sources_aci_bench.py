"""ACI-Bench from the real public CSVs: predict-only mode, user label files, errors."""

import json
import shutil
from pathlib import Path

import pytest

from ccl.config import AciBenchDocsConfig, DocsConfig
from ccl.data.sources import load_source
from ccl.data.sources.aci_bench import FILES, PREDICT_ONLY, load_aci_bench
from ccl.data.sources.common import DownloadError, MissingDataError
from ccl.records import RecordError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aci-bench"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"ACI-Bench reference data not at {DATA}")



def config(path=DATA, **extra):
    cfg = DocsConfig(name="aci_bench", source="aci_bench", path=None if path is None else str(path),
                     aci_bench=AciBenchDocsConfig())
    for key, value in extra.items():  # the docs.aci_bench block's keys go there
        setattr(cfg.aci_bench if hasattr(cfg.aci_bench, key) else cfg, key, value)
    return cfg


def test_predict_only_without_labels(tab, tmp_path):
    data = load_source(config(), tab, tmp_path)
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 67, "val": 20, "test": 120}
    assert data.stats["mode"] == PREDICT_ONLY
    assert all(not d.codes and not d.spans for docs in data.docs.values() for d in docs)
    first = data.docs["train"][0]
    assert first.id == "D2N001" and first.split == "train"
    assert "CHIEF COMPLAINT" in first.text and "[doctor]" not in first.text
    assert [d.id for d in data.docs["test"]][:2] == ["D2N088", "D2N089"]  # test1 first
    assert data.docs["test"][-1].id == "D2N207"


def test_dialogue_as_text(tab, tmp_path):
    data = load_aci_bench(config(text_field="dialogue"), tab, tmp_path)
    assert data.docs["val"][0].text.startswith("[doctor]")
    with pytest.raises(ValueError, match="docs.aci_bench.text_field='summary'"):
        load_aci_bench(config(text_field="summary"), tab, tmp_path)


def test_csv_labels_with_evidence(tab, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "encounter_id,code,evidence\n"
        "D2N001,I50.9,congestive heart failure\n"
        "D2N001,i10,HYPERTENSION\n"  # case-insensitive match, canonical code
        "D2N001,F32.A,\n"  # a code without evidence
        "D2N001,E11.9,words that are not in the note\n"
        "D2N088,R05,\n"  # R05 is no longer billable: R05.9
    )
    data = load_aci_bench(config(labels_path=str(labels)), tab, tmp_path)
    d1 = data.docs["train"][0]
    assert d1.codes == ["I50.9", "I10", "F32.A", "E11.9"]
    spans = {(s.text.lower(), s.code) for s in d1.spans}
    assert spans == {("congestive heart failure", "I50.9"), ("hypertension", "I10")}
    first_chf = d1.text.lower().find("congestive heart failure")
    assert min(s.start for s in d1.spans if s.code == "I50.9") == first_chf
    assert data.docs["test"][0].codes == ["R05.9"]
    assert data.stats["counts"] == {"evidence_not_found": 1}
    assert data.stats["labelled_documents"] == 2
    assert data.stats["mode"].startswith("labels from")


def test_jsonl_labels(tab, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [
        {
            "encounter_id": "D2N068",
            "codes": ["I50.9"],
            "evidence": [{"text": "congestive heart failure", "code": "I50.9"}],
        },
        {"encounter_id": "D2N069", "codes": ["I48.91"]},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_aci_bench(config(labels_path=str(labels)), tab, tmp_path)
    val = {d.id: d for d in data.docs["val"]}
    assert val["D2N068"].codes == ["I50.9"] and len(val["D2N068"].spans) == 1
    assert val["D2N069"].codes == ["I48.91"] and val["D2N069"].spans == []


@pytest.mark.parametrize(
    ("content", "suffix", "pattern"),
    [
        (
            "encounter_id,code\nD2N999,I10\n",
            ".csv",
            r":2: encounter_id 'D2N999' is not in the ACI-Bench files",
        ),
        (
            "encounter_id,code\nD2N001,hypertension\n",
            ".csv",
            r":2: 'hypertension' is not an ICD-10-CM code",
        ),
        ("id,label\nD2N001,I10\n", ".csv", r": header must have encounter_id and code"),
        ('{"encounter_id": "D2N001", "codes": ["I10"]}\n{oops\n', ".jsonl", r":2: invalid JSON"),
    ],
)
def test_bad_label_files_are_named(tab, tmp_path, content, suffix, pattern):
    labels = tmp_path / f"labels{suffix}"
    labels.write_text(content)
    with pytest.raises(RecordError, match=rf"{labels}{pattern}"):
        load_aci_bench(config(labels_path=str(labels)), tab, tmp_path)


def copy_data(tmp_path):
    root = tmp_path / "aci"
    root.mkdir()
    for names in FILES.values():
        for name in names:
            shutil.copy(DATA / name, root / name)
    return root


def test_missing_and_malformed_data_files_are_named(tab, tmp_path):
    root = copy_data(tmp_path)
    victim = root / "clef_taskC_test3.csv"
    victim.unlink()
    with pytest.raises(MissingDataError, match=rf"{victim}: ACI-Bench file not found"):
        load_aci_bench(config(root), tab, tmp_path)
    victim.write_text("dataset,encounter_id,note\nx,D2N500,text\n")
    with pytest.raises(RecordError, match=rf"{victim}: columns \['dialogue'\] missing"):
        load_aci_bench(config(root), tab, tmp_path)
    shutil.copy(root / "valid.csv", victim)
    with pytest.raises(RecordError, match=r"encounter_id 'D2N068' appears twice"):
        load_aci_bench(config(root), tab, tmp_path)
    with pytest.raises(MissingDataError, match="ACI-Bench label file not found"):
        load_aci_bench(config(labels_path=str(tmp_path / "none.csv")), tab, tmp_path)


def test_download_when_no_path(tab, tmp_path, web):
    with pytest.raises(DownloadError, match=r"wyim/aci-bench/.*train\.csv.*docs\.path"):
        load_aci_bench(config(None), tab, tmp_path)
    web.serve = lambda url: (DATA / url.rsplit("/", 1)[1]).read_bytes()
    data = load_aci_bench(config(None), tab, tmp_path)
    assert sum(len(v) for v in data.docs.values()) == 207


def test_bom_crlf_and_nfd_are_normalised_before_evidence_is_located(tab, tmp_path):
    """Issue 23: a label file and challenge CSVs saved with a BOM, CRLF and NFD accents give
    the same documents, and NFC evidence is found in the NFD-saved note."""
    import unicodedata

    root = copy_data(tmp_path)
    enc = "D2N001"
    labels = tmp_path / "labels.csv"
    labels.write_text(f"encounter_id,code,evidence\n{enc},I10,hypertension\n", encoding="utf-8")
    want = load_aci_bench(config(root, labels_path=str(labels)), tab, tmp_path)
    for path in root.glob("*.csv"):
        text = path.read_bytes().decode("utf-8")
        path.write_bytes(("\ufeff" + unicodedata.normalize("NFD", text).replace("\n", "\r\n")).encode("utf-8"))
    labels.write_bytes(("\ufeff" + f"encounter_id,code,evidence\r\n{enc},I10,hypertension\r\n").encode("utf-8"))
    got = load_aci_bench(config(root, labels_path=str(labels)), tab, tmp_path)
    pick = lambda data: [(d.id, d.text, d.codes, d.spans) for v in data.docs.values() for d in v]  # noqa: E731
    assert pick(got) == pick(want)
    assert any(d.spans for v in got.docs.values() for d in v)
