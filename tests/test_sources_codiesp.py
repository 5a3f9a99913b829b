"""CodiEsp from the real public files: splits, evidence pieces, code mapping, languages, errors."""

import shutil
from pathlib import Path

import pytest

from ccl.config import CodiespDocsConfig, DocsConfig
from ccl.data.sources import load_source
from ccl.data.sources.codiesp import load_codiesp
from ccl.data.sources.common import DownloadError, MissingDataError
from ccl.records import RecordError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"CodiEsp reference data not at {DATA}")

CASE = "S1130-63432016000100009-1"  # obesity case: a discontinuous mention, a "(IMC > 40" edge



def config(path=DATA, **extra):
    cfg = DocsConfig(name="codiesp", source="codiesp", path=str(path), n_val=50, codiesp=CodiespDocsConfig())
    for key, value in extra.items():  # the docs.codiesp block's keys go there
        setattr(cfg.codiesp if hasattr(cfg.codiesp, key) else cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def spanish(tab, tmp_path_factory):
    return load_source(config(), tab, tmp_path_factory.mktemp("cache"))


def by_id(data, doc_id):
    return next(d for docs in data.docs.values() for d in docs if d.id == doc_id)


def test_splits_train_val_from_train_and_dev_as_test(spanish, tab, tmp_path):
    sizes = {k: len(v) for k, v in spanish.docs.items()}
    assert sizes == {"train": 450, "val": 50, "test": 250}
    dev_ids = {p.stem for p in (DATA / "dev" / "text_files").glob("*.txt")}
    assert {d.id for d in spanish.docs["test"]} == dev_ids
    assert not {d.id for d in spanish.docs["val"]} & {d.id for d in spanish.docs["train"]}
    assert all(d.split == s for s, docs in spanish.docs.items() for d in docs)
    again = load_codiesp(config(), tab, tmp_path)
    assert [d.id for d in again.docs["val"]] == [d.id for d in spanish.docs["val"]]


def test_codes_are_the_d_file_mapped_in_order(spanish):
    doc = by_id(spanish, CASE)
    # trainD.tsv order; z68.4 is no longer billable: Z68.41 (BMI 40.0-44.9), first child.
    assert doc.codes == [
        "E66.01",
        "Z79.01",
        "R29.723",
        "Z68.45",
        "Z86.718",
        "E66.9",
        "I63.9",
        "Z68.41",
    ]
    report = spanish.stats["codes"]
    assert report["mapped_codes"]["Z68.4"] == "Z68.41"
    assert report["dropped"] == {}  # every CodiEsp diagnosis has an ICD-10-CM (2026) code
    assert report["valid"] + sum(report["mapped"].values()) == 5639 + 2677  # all D rows


def test_evidence_pieces_offsets_and_trimming(spanish):
    doc = by_id(spanish, CASE)
    got = {(s.start, s.end, s.text, s.code) for s in doc.spans}
    # "antecedentes patológicos ... de tromboembolismo venoso profundo" at 120-147;194-225: two pieces
    assert (120, 147, doc.text[120:147], "Z86.718") in got
    assert (194, 225, doc.text[194:225], "Z86.718") in got
    assert doc.text[120:147].startswith("antecedentes patológicos")
    # X says "IMC > 40 kg/m2" at 1047-1062 but the text there opens with "(": trimmed.
    assert doc.text[1047:1062] == "(IMC > 40 kg/m2"
    assert (1048, 1062, "IMC > 40 kg/m2", "Z68.41") in got
    assert [s.start for s in doc.spans] == sorted(s.start for s in doc.spans)


def test_procedures_are_not_evidence(spanish):
    doc = by_id(spanish, "S0004-06142005000700014-1")
    # 20 X rows: 15 diagnoses at distinct offsets, 5 procedures (e.g. "Rx tórax").
    assert len(doc.spans) == 15
    assert "Rx tórax" not in {s.text for s in doc.spans}
    assert {s.code for s in doc.spans} == set(doc.codes)
    assert spanish.stats["counts"]["procedure_mentions_dropped"] == 1972 + 1046


def test_corpus_is_english_training_documents(spanish):
    train_ids = {d.id for d in spanish.docs["train"]}
    assert {d.id for d in spanish.corpus} == train_ids
    doc = next(d for d in spanish.corpus if d.id == "S0004-06142005000700014-1")
    assert doc.text.startswith("We describe the case of a 37-year-old man")
    assert doc.spans == [] and doc.split == "corpus" and doc.source == "codiesp_en"
    assert doc.codes == by_id(spanish, doc.id).codes


def test_english_variant_is_code_only(tab, tmp_path):
    data = load_codiesp(config(language="en"), tab, tmp_path)
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 450, "val": 50, "test": 250}
    assert all(not d.spans for docs in data.docs.values() for d in docs)
    assert data.stats["evidence_spans"] == 0
    assert data.docs["test"][0].text.isascii()
    with pytest.raises(ValueError, match="docs.codiesp.language='fr'"):
        load_codiesp(config(language="fr"), tab, tmp_path)


def small_copy(tmp_path, n=2):
    """A CodiEsp folder with the first n documents of each split."""
    root = tmp_path / "codiesp"
    for folder in ("train", "dev"):
        src, dst = DATA / folder, root / folder
        ids = sorted(p.stem for p in (src / "text_files").glob("*.txt"))[:n]
        for sub in ("text_files", "text_files_en"):
            (dst / sub).mkdir(parents=True)
            for i in ids:
                shutil.copy(src / sub / f"{i}.txt", dst / sub / f"{i}.txt")
        for kind in "DX":
            lines = (src / f"{folder}{kind}.tsv").read_text(encoding="utf-8").splitlines()
            keep = [line for line in lines if line.split("\t")[0] in ids]
            (dst / f"{folder}{kind}.tsv").write_text("\n".join(keep) + "\n", encoding="utf-8")
    return root


def test_malformed_row_names_file_and_line(tab, tmp_path):
    root = small_copy(tmp_path)
    x = root / "train" / "trainX.tsv"
    lines = x.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t12 x4"
    x.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=rf"{x}:3: offsets '12 x4'"):
        load_codiesp(config(root, n_val=0), tab, tmp_path)
    lines[2] = "only\ttwo"
    x.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=rf"{x}:3: expected 5 tab-separated columns, got 2"):
        load_codiesp(config(root, n_val=0), tab, tmp_path)


def test_offsets_past_the_text_name_both_files(tab, tmp_path):
    root = small_copy(tmp_path)
    x = root / "dev" / "devX.tsv"
    lines = x.read_text(encoding="utf-8").splitlines()
    first_dx = next(i for i, line in enumerate(lines) if "\tDIAGNOSTICO\t" in line)
    lines[first_dx] = lines[first_dx].rsplit("\t", 1)[0] + "\t5 999999"
    x.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        RecordError, match=rf"{x}:{first_dx + 1}: offsets 5:999999 run past the end of .*\.txt"
    ):
        load_codiesp(config(root, n_val=0), tab, tmp_path)


def test_missing_files_are_named(tab, tmp_path):
    root = small_copy(tmp_path)
    victim = next((root / "train" / "text_files_en").glob("*.txt"))
    victim.unlink()
    with pytest.raises(MissingDataError, match=rf"{victim}: CodiEsp en text not found"):
        load_codiesp(config(root, n_val=0), tab, tmp_path)
    root = small_copy(tmp_path / "again")
    (root / "dev" / "devD.tsv").unlink()
    with pytest.raises(
        MissingDataError, match=r"devD\.tsv: CodiEsp annotation file not found.*3837305"
    ):
        load_codiesp(config(root, n_val=0), tab, tmp_path)
    with pytest.raises(MissingDataError, match="CodiEsp folder not found"):
        load_codiesp(config(tmp_path / "nowhere"), tab, tmp_path)


def test_without_a_path_it_downloads_and_says_so_offline(tab, tmp_path, web):
    cfg = DocsConfig(name="codiesp", source="codiesp", path=None, n_val=50)
    with pytest.raises(DownloadError, match=r"zenodo\.org/record/3837305.*docs\.path"):
        load_codiesp(cfg, tab, tmp_path)


def test_downloaded_zip_is_unpacked_and_used(tab, tmp_path, web):
    root = small_copy(tmp_path / "src", n=3)
    archive = shutil.make_archive(str(tmp_path / "codiesp"), "zip", root.parent, "codiesp")
    web.serve = lambda url: Path(archive).read_bytes()
    cfg = DocsConfig(name="codiesp", source="codiesp", path=None, n_val=1)
    data = load_codiesp(cfg, tab, tmp_path / "cache")
    assert {k: len(v) for k, v in data.docs.items()} == {"train": 2, "val": 1, "test": 3}
    assert Path(data.stats["root"]).is_relative_to(tmp_path / "cache" / "sources" / "codiesp")


def _rewrite(root, text_fn, tsv_fn=lambda t: t):
    """A copy of the CodiEsp folder ``root`` with every text file and TSV passed through a function."""
    out = root.parent / f"{root.name}-copy"
    shutil.copytree(root, out)
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8")
            path.write_bytes((text_fn(text) if path.suffix == ".txt" else tsv_fn(text)).encode("utf-8"))
    return out


def _loaded(root, tab, cache):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_codiesp(config(root, n_val=0), tab, cache)
    docs = {d.id: (d.text, d.codes, [(s.start, s.end, s.text, s.code) for s in d.spans])
            for v in data.docs.values() for d in v}
    return docs, data.stats, [str(w.message) for w in caught if "offsets" in str(w.message)]


@pytest.mark.parametrize(
    "variant",
    [
        "crlf",  # Windows line ends in the texts and the TSV files
        "cr",  # old Mac line ends in the texts
        "bom_nfd",  # a byte-order mark and decomposed accents (as macOS file systems write them)
    ],
)
def test_line_ends_bom_and_unicode_form_load_the_same_spans(tab, tmp_path, variant):
    """Issue 23: the offsets count the release's LF, BOM-less NFC text; a copy saved
    otherwise loads identical documents and spans, every offset agreeing with X.tsv."""
    import unicodedata

    root = small_copy(tmp_path, n=3)
    text_fn, tsv_fn = {
        "crlf": (lambda t: t.replace("\n", "\r\n"), lambda t: t.replace("\n", "\r\n")),
        "cr": (lambda t: t.replace("\n", "\r"), lambda t: t),
        "bom_nfd": (lambda t: "\ufeff" + unicodedata.normalize("NFD", t),
                    lambda t: "\ufeff" + unicodedata.normalize("NFD", t)),
    }[variant]
    copy = _rewrite(root, text_fn, tsv_fn)
    assert (copy / "train" / "text_files").glob("*.txt") and copy != root
    want, want_stats, _ = _loaded(root, tab, tmp_path)
    got, stats, warned = _loaded(copy, tab, tmp_path)
    assert sum(len(v[2]) for v in want.values()) > 20
    assert got == want
    assert (stats["offsets"] == want_stats["offsets"]
            == {"offsets_agree": stats["offsets"]["offsets_agree"], "files": {}})
    assert not warned


def test_wrong_offsets_are_repaired_or_dropped_and_reported(tab, tmp_path):
    """An offset off by a few characters is moved to its given text and one that does not
    cover it anywhere near is dropped; both are counted and warned about naming X.tsv."""
    root = small_copy(tmp_path, n=3)
    x = root / "train" / "trainX.tsv"
    lines = x.read_text(encoding="utf-8").splitlines()
    single = [i for i, line in enumerate(lines) if "\tDIAGNOSTICO\t" in line and ";" not in line]
    shifted, lost = single[0], single[1]
    start, end = (int(v) for v in lines[shifted].rsplit("\t", 1)[1].split())
    lines[shifted] = lines[shifted].rsplit("\t", 1)[0] + f"\t{start + 3} {end + 3}"
    fields = lines[lost].split("\t")
    fields[3] = "texto que no está en el caso"
    lines[lost] = "\t".join(fields)
    x.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=rf"docs=codiesp: {x}: 2 evidence offsets do not cover the text "
                      r"given beside them: 1 repaired .*, 1 dropped \(e\.g\. line "):
        data = load_codiesp(config(root, n_val=0, max_dropped_record_share=1.0), tab, tmp_path)
    assert data.stats["offsets"]["files"] == {str(x): {"offsets_repaired": 1, "offsets_wrong": 1}}
    doc_id, given = lines[shifted].split("\t")[0], lines[shifted].split("\t")[3]
    doc = next(d for v in data.docs.values() for d in v if d.id == doc_id)
    assert given in {s.text for s in doc.spans}  # found again at its own place
    # Above docs.max_dropped_record_share (default 1%) the dropped mention stops the load.
    with pytest.raises(RecordError, match=r"mentions with wrong offsets"), pytest.warns(UserWarning):
        load_codiesp(config(root, n_val=0), tab, tmp_path)


def test_labels_split_by_sex_age_or_sign_follow_the_document(spanish):
    """Issue 23, item 6 on the real files: n35.9 in "Una mujer de 35 años ..." is the female
    code, in "Varón de 75 años ..." the male one; t74.2 for a 16-year-old is the child code;
    the evidence "Rh -" (Z67.11, Rh negative) keeps its sign."""
    assert "N35.92" in by_id(spanish, "S0210-48062003001000009-1").codes
    assert "N35.919" in by_id(spanish, "S0004-06142009000400011-1").codes
    abused = by_id(spanish, "S0213-12852005000200004-1")
    assert "T74.22XA" in abused.codes and "T74.21XA" not in abused.codes
    rh = by_id(spanish, "S0365-66912008000100007-1")
    assert "Rh -" in {s.text for s in rh.spans if s.code == "Z67.11"}
    assert "Rh" not in {s.text for s in rh.spans if s.code == "Z67.11"}
