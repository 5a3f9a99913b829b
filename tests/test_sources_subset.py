"""docs.code_pool / docs.max_train_docs on real sources (ccl/data/sources/subset.py)."""

from pathlib import Path

import pytest

from ccl.config import DocsConfig
from ccl.data.sources import load_source
from ccl.data.sources.subset import restrict_source
from ccl.records import Document, EvidenceSpan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp"


def doc(doc_id: str, codes: list[str]) -> Document:
    text = " ".join(codes)
    spans, at = [], 0
    for c in codes:
        spans.append(EvidenceSpan(at, at + len(c), c, c))
        at += len(c) + 1
    return Document(doc_id, text, list(codes), spans)


def cfg(**kw) -> DocsConfig:
    out = DocsConfig(name="x", source="codiesp")
    for k, v in kw.items():
        setattr(out, k, v)
    return out


def test_pool_keeps_its_codes_and_spans_and_drops_empty_documents(tab):
    docs = {"train": [doc("a", ["I10", "E11.9"]), doc("b", ["E11.9"])], "test": [doc("c", ["R52", "I10"])]}
    corpus = [doc("k", ["E11.9"]), doc("l", ["I10"])]
    out, new_corpus, stats = restrict_source(docs, corpus, cfg(code_pool=["i10", "R52"]), tab)
    assert [d.id for d in out["train"]] == ["a"] and out["train"][0].codes == ["I10"]
    assert [s.code for s in out["train"][0].spans] == ["I10"]
    assert out["test"][0].codes == ["R52", "I10"] and len(out["test"][0].spans) == 2
    assert [d.id for d in new_corpus] == ["l"]
    assert stats["documents"]["train"] == {"before": 2, "kept": 1}
    assert stats["code_occurrences_dropped"] == 3  # E11.9 twice in train, once in the corpus
    assert docs["train"][0].codes == ["I10", "E11.9"]  # the input documents are not changed


def test_no_pool_and_no_cap_leaves_the_source_as_it_is(tab):
    docs = {"train": [doc("a", ["I10"])]}
    out, corpus, stats = restrict_source(docs, [], cfg(), tab)
    assert out is docs and stats is None


def test_train_cap_is_a_seeded_pick_in_original_order(tab):
    docs = {"train": [doc(f"d{i:02d}", ["I10"]) for i in range(20)], "test": [doc("t", ["I10"])]}
    first = restrict_source(docs, [], cfg(max_train_docs=5, seed=1), tab)[0]["train"]
    again = restrict_source(docs, [], cfg(max_train_docs=5, seed=1), tab)[0]["train"]
    other = restrict_source(docs, [], cfg(max_train_docs=5, seed=2), tab)[0]["train"]
    ids = [d.id for d in first]
    assert len(ids) == 5 and ids == sorted(ids) and ids == [d.id for d in again]
    assert ids != [d.id for d in other]


@pytest.mark.parametrize(("kw", "message"), [
    ({"code_pool": ["I10", "XYZ.99"]}, r"docs.code_pool: XYZ.99 not ICD-10-CM"),
    ({"code_pool": ["R52"]}, r"docs.code_pool: none of its 1 codes occurs in a training document"),
    ({"max_train_docs": 0}, r"docs.max_train_docs=0"),
])
def test_bad_values_are_named(tab, kw, message):
    docs = {"train": [doc("a", ["I10"])], "test": [doc("t", ["R52"])]}
    with pytest.raises(ValueError, match=message):
        restrict_source(docs, [], cfg(**kw), tab)


@pytest.mark.skipif(not DATA.exists(), reason=f"CodiEsp reference data not at {DATA}")
def test_codiesp_subset_through_load_source(tab, tmp_path):
    pool = ["R52", "I10", "G43.909"]  # two frequent training codes, one only in dev (test)
    data = load_source(cfg(path=str(DATA), n_val=50, code_pool=pool, max_train_docs=30), tab, tmp_path)
    assert len(data.docs["train"]) == 30
    for split, docs in data.docs.items():
        assert docs and all(d.codes and set(d.codes) <= set(pool) for d in docs), split
        assert all(s.code in pool and d.text[s.start:s.end] == s.text for d in docs for s in d.spans)
    train_codes = {c for d in data.docs["train"] for c in d.codes}
    assert "G43.909" not in train_codes and "G43.909" in {c for d in data.docs["test"] for c in d.codes}
    assert data.stats["subset"]["documents"]["train"]["kept"] == 30
    assert 30 < data.stats["subset"]["documents"]["train"]["before_cap"] < 450
    assert data.stats["subset"]["documents"]["test"]["kept"] == len(data.docs["test"]) < 250
