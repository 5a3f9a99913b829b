"""Files from other years and subsets; every dropped record counted (issue 14, kind 4).

Small CodiEsp and MDACE copies are written by the tests; the real files of ../shared/data
are used only where named, and skipped when absent.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ccl.config import CodiespDocsConfig, DocsConfig, MdaceDocsConfig
from ccl.data.sources import load_source
from ccl.data.sources.common import DataLossError, MissingDataError
from ccl.data.sources.mdace import annotation_summary
from ccl.icd.tabular import default_xml_path, load_tabular

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TEXT = "Paciente con diabetes mellitus tipo 2 e hipertension arterial. Refiere tos."
DOCS = {  # id -> [(code, start, end)] with offsets into TEXT
    "a": [("e11.9", 13, 37), ("i10", 40, 61)],
    "b": [("r05.9", 70, 73)],
    "c": [("e11.9", 13, 37)],
}



def write_split(root: Path, folder: str, docs: dict, extra_text: tuple[str, ...] = (),
                orphan_d: int = 0, orphan_x: int = 0) -> None:
    """A CodiEsp split folder: text files (es, en), D and X files; ``orphan_*`` rows for a missing text."""
    d = root / folder
    (d / "text_files").mkdir(parents=True)
    (d / "text_files_en").mkdir()
    for doc_id in [*docs, *extra_text]:
        (d / "text_files" / f"{folder}-{doc_id}.txt").write_text(TEXT, encoding="utf-8")
        (d / "text_files_en" / f"{folder}-{doc_id}.txt").write_text("Patient with diabetes.", encoding="utf-8")
    d_rows = [f"{folder}-{i}\t{c}" for i, spans in docs.items() for c, _, _ in spans]
    x_rows = [f"{folder}-{i}\tDIAGNOSTICO\t{c}\t{TEXT[s:e]}\t{s} {e}" for i, spans in docs.items() for c, s, e in spans]
    d_rows += [f"{folder}-gone{k}\ti10" for k in range(orphan_d)]
    x_rows += [f"{folder}-gone{k}\tDIAGNOSTICO\ti10\thta\t0 3" for k in range(orphan_x)]
    (d / f"{folder}D.tsv").write_text("\n".join(d_rows) + "\n", encoding="utf-8")
    (d / f"{folder}X.tsv").write_text("\n".join(x_rows) + "\n", encoding="utf-8")


def codiesp(tmp_path: Path, test: bool = False, **orphans) -> Path:
    root = tmp_path / "codiesp"
    write_split(root, "train", DOCS, **orphans)
    write_split(root, "dev", DOCS)
    if test:
        write_split(root, "test", DOCS, extra_text=("background1", "background2"))
    return root


def config(root: Path, **extra) -> DocsConfig:
    cfg = DocsConfig(name="codiesp", source="codiesp", path=str(root), n_val=1, codiesp=CodiespDocsConfig())
    for key, value in extra.items():  # the docs.codiesp block's keys go there
        setattr(cfg.codiesp if hasattr(cfg.codiesp, key) else cfg, key, value)
    return cfg


# -- Tabular List validation and the share of labels a dataset loses ----------------------


@pytest.fixture(scope="module")
def one_chapter(tmp_path_factory) -> Path:
    """The April 2026 Tabular List cut to its chapter 4 (E00-E89), as a partial download would be."""
    try:
        root = ET.parse(default_xml_path()).getroot()
    except (FileNotFoundError, OSError) as err:
        pytest.skip(str(err))
    for chapter in root.findall("chapter"):
        if (chapter.findtext("name") or "").strip() != "4":
            root.remove(chapter)
    path = tmp_path_factory.mktemp("tab") / "icd10cm-tabular-2025.xml"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def test_tabular_check_says_what_is_short(tab, one_chapter):
    full = tab.check()
    assert full["complete"] and full["chapters"] == 22 and full["billable"] > 74_000
    part = load_tabular(one_chapter).check()
    assert not part["complete"] and part["chapters"] == 1
    assert any("1 chapters" in p and str(one_chapter) in p for p in part["problems"])
    assert any("billable codes" in p for p in part["problems"])


def test_a_partial_tabular_list_stops_the_load_naming_share_and_files(one_chapter, tmp_path):
    root = codiesp(tmp_path)
    partial = load_tabular(one_chapter)
    with pytest.raises(DataLossError) as err:
        load_source(config(root), partial, tmp_path / "cache")
    message = str(err.value)
    # i10 and r05.9 (4 of the 8 D rows of train and dev) are not in chapter 4.
    assert "50.0% of the label occurrences" in message and "not_in_tabular 4" in message
    assert str(root / "train" / "trainD.tsv") in message and str(one_chapter) in message
    assert "1 chapters" in message and "docs.max_dropped_label_share=0.05" in message
    data = load_source(config(root, max_dropped_label_share=0.6), partial, tmp_path / "cache")
    assert data.stats["losses"]["labels"] == {"seen": 8, "dropped": 4, "share": 0.5, "limit": 0.6}


@pytest.mark.skipif(not (DATA / "codiesp").exists(), reason="CodiEsp reference data not here")
def test_real_codiesp_with_one_chapter_stops(one_chapter, tmp_path):
    with pytest.raises(DataLossError, match=r"docs=codiesp: \d+\.\d% of the label occurrences"):
        load_source(config(DATA / "codiesp", n_val=50), load_tabular(one_chapter), tmp_path)


def test_full_list_loses_nothing(tab, tmp_path):
    data = load_source(config(codiesp(tmp_path)), tab, tmp_path / "cache")
    assert data.stats["losses"]["labels"]["dropped"] == 0
    assert data.stats["losses"]["trainX_rows_of_documents_without_text"]["dropped"] == 0


# -- every dropped record counted alike ---------------------------------------------------


@pytest.mark.parametrize("kind", ["D", "X"])
def test_d_and_x_rows_without_text_are_treated_alike(tab, tmp_path, kind):
    root = codiesp(tmp_path, **{f"orphan_{kind.lower()}": 1})
    with pytest.raises(DataLossError) as err:  # 1 of 5 (D) or 6 (X) rows: over 1%
        load_source(config(root), tab, tmp_path / "cache")
    assert f"train{kind}" in str(err.value) and str(root / "train" / f"train{kind}.tsv") in str(err.value)
    assert "docs.max_dropped_record_share=0.01" in str(err.value)
    data = load_source(config(root, max_dropped_record_share=0.5), tab, tmp_path / "cache")
    assert data.stats["counts"][f"{kind}_rows_without_text"] == 1
    assert data.stats["losses"][f"train{kind}_rows_of_documents_without_text"]["dropped"] == 1
    other = "X" if kind == "D" else "D"
    assert data.stats["counts"][f"{other}_rows_without_text"] == 0


# -- CodiEsp's official three splits -------------------------------------------------------


def test_codiesp_official_three_splits(tab, tmp_path):
    root = codiesp(tmp_path, test=True)
    data = load_source(config(root, test_split="test"), tab, tmp_path / "cache")
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 2, "val": 1, "dev": 3, "test": 3}
    assert {d.id for d in data.docs["test"]} == {"test-a", "test-b", "test-c"}
    assert all(d.split == "dev" for d in data.docs["dev"]) and data.docs["dev"][0].id.startswith("dev-")
    assert data.stats["counts"]["test_background_documents_skipped"] == 2
    assert data.stats["splits"]["test"] == "test" and data.stats["splits"]["dev"] == "dev"
    default = load_source(config(root), tab, tmp_path / "cache")  # dev as test, as before
    assert set(default.docs) == {"train", "val", "test"}
    assert default.docs["test"][0].id.startswith("dev-")


def test_codiesp_test_split_needs_the_test_folder(tab, tmp_path):
    root = codiesp(tmp_path)
    with pytest.raises(MissingDataError, match=r"test/testD\.tsv.*docs\.codiesp\.test_split=dev"):
        load_source(config(root, test_split="test"), tab, tmp_path / "cache")
    with pytest.raises(ValueError, match="docs.codiesp.test_split='final'"):
        load_source(config(root, test_split="final"), tab, tmp_path / "cache")


# -- MDACE subsets -------------------------------------------------------------------------


def write_mdace(root: Path, subset: str, splits: dict[str, list[int]]) -> None:
    for split, ids in splits.items():
        folder = root / "splits" / subset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"MDace-ev-{split}.csv").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        data = root / "data" / subset / "ICD-10" / "1.0"
        data.mkdir(parents=True, exist_ok=True)
        for i in ids:
            chart = {"hadm_id": i, "notes": [{"note_id": i * 10, "category": "Physician", "annotations": [
                {"begin": 0, "end": 5, "code": "G20", "code_system": "ICD-10-CM"},
                {"begin": 6, "end": 9, "code": "99232", "code_system": "CPT"}]}]}
            (data / f"{i}-ICD-10.json").write_text(json.dumps(chart), encoding="utf-8")


def test_mdace_subset_is_a_config_choice_with_its_splits(tab, tmp_path):
    root = tmp_path / "mdace"
    write_mdace(root, "Inpatient", {"train": [1, 2], "val": [3], "test": [4]})
    write_mdace(root, "Profee", {"train": [11], "val": [12], "test": [13, 14, 15]})
    cfg = DocsConfig(name="mdace", source="mdace", path=str(root), mdace=MdaceDocsConfig(subset="Profee"))
    summary = annotation_summary(cfg, tab, tmp_path / "cache")
    assert summary["subset"] == "Profee"
    assert {s: v["documents"] for s, v in summary["splits"].items()} == {"train": 1, "val": 1, "test": 3}
    assert summary["counts"]["dropped_CPT_annotations"] == 5
    assert summary["codes"]["mapped_codes"] == {"G20": "G20.A1"}
    inpatient = annotation_summary(DocsConfig(name="mdace", source="mdace", path=str(root)), tab, tmp_path / "c")
    assert inpatient["subset"] == "Inpatient" and inpatient["splits"]["train"]["documents"] == 2


def test_mdace_missing_subset_names_it(tab, tmp_path):
    root = tmp_path / "mdace"
    write_mdace(root, "Inpatient", {"train": [1], "val": [2], "test": [3]})
    cfg = DocsConfig(name="mdace", source="mdace", path=str(root), mdace=MdaceDocsConfig(subset="Profee"))
    with pytest.raises(MissingDataError, match=r"splits/Profee.*docs\.mdace\.subset=Profee.*splits/Inpatient"):
        annotation_summary(cfg, tab, tmp_path / "cache")
    cfg.mdace.subset = "Outpatient"
    with pytest.raises(ValueError, match="Inpatient, Profee"):
        annotation_summary(cfg, tab, tmp_path / "cache")


def test_mdace_profee_docs_config_composes():
    from hydra import compose, initialize_config_dir

    from ccl.config import register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["docs=mdace_profee"])
    assert (cfg.docs.source, cfg.docs.mdace.subset, cfg.docs.max_dropped_label_share) == ("mdace", "Profee", 0.05)
