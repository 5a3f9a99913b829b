import json

import pytest

from ccl.records import (
    RecordError,
    document_from_dict,
    read_documents,
    read_span_pairs,
    span_pair_from_dict,
    write_jsonl,
)

TEXT = "History of type 2 diabetes. Denies chest pain."


def good_doc():
    return {"id": "d1", "text": TEXT, "codes": ["e119"],
            "spans": [{"start": 11, "end": 26, "text": "type 2 diabetes", "code": "E11.9"}]}


def test_document_roundtrip(tmp_path):
    doc = document_from_dict(good_doc())
    assert doc.codes == ["E11.9"] and doc.spans[0].text == TEXT[11:26]
    write_jsonl(tmp_path / "d.jsonl", [doc])
    assert read_documents(tmp_path / "d.jsonl") == [doc]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("text"), "text"),
        (lambda d: d.update(codes="E11.9"), "codes"),
        (lambda d: d.update(codes=["diabetes"]), "codes"),
        (lambda d: d["spans"][0].update(end=999), "spans[0]"),
        (lambda d: d["spans"][0].update(text="type 2 diabetez"), "spans[0]"),
        (lambda d: d["spans"][0].update(start="11"), "start"),
    ],
)
def test_bad_document_names_file_record_and_field(mutate, field):
    d = good_doc()
    mutate(d)
    with pytest.raises(RecordError) as e:
        document_from_dict(d, "notes.jsonl:3")
    msg = str(e.value)
    assert "notes.jsonl:3" in msg and "record d1" in msg and field in msg


def test_bad_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(good_doc()) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"x.jsonl:2: invalid JSON"):
        read_documents(p)


def test_span_pairs(tmp_path):
    pair = span_pair_from_dict({"evidence": "T2DM", "code": "E119", "tier": "gold", "source": "index"})
    assert pair.code == "E11.9"
    write_jsonl(tmp_path / "s.jsonl", [pair])
    assert read_span_pairs(tmp_path / "s.jsonl") == [pair]
    with pytest.raises(RecordError, match="tier"):
        span_pair_from_dict({"evidence": "x", "code": "I10", "tier": "bronze"})
    with pytest.raises(RecordError, match="evidence"):
        span_pair_from_dict({"evidence": "  ", "code": "I10", "tier": "gold"})


def test_a_run_folder_refers_to_notes_without_copying_them(tmp_path):
    """Issue 24 item 5: the data stage wrote a plain-text copy of every note into each run
    folder (1.5 GB at MIMIC-IV size); it now writes references unless copy_notes=true."""
    from omegaconf import OmegaConf
    from rich.console import Console

    from ccl.config import compose_config
    from ccl.records import text_hash
    from ccl.stages.data import build_data

    overrides = ["docs.demo.n_train=6", "docs.n_val=2", "docs.demo.n_test=3", "docs.demo.corpus_size=5",
                 f"paths.cache_dir={tmp_path / 'cache'}", "icd.download=false", "logger=none"]
    cfg = compose_config(overrides)
    bundle = build_data(cfg, tmp_path / "run", Console(quiet=True))
    for split, docs in bundle.docs.items():
        path = tmp_path / "run" / "data" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in rows] == [d.id for d in docs]
        assert all("text" not in r for r in rows)
        assert [(r["source"], r["text_sha256"], r["text_chars"], r["codes"]) for r in rows] == [
            (d.source, text_hash(d.text), len(d.text), d.codes) for d in docs]
        assert not any(d.text[:40] in path.read_text(encoding="utf-8") for d in docs)
        read = read_documents(path, need_text=False)  # what the report reads: codes and spans
        assert [(d.id, d.codes, d.spans) for d in read] == [(d.id, d.codes, d.spans) for d in docs]
        with pytest.raises(RecordError, match="copy_notes=true"):
            read_documents(path)
    copied = build_data(OmegaConf.merge(cfg, {"copy_notes": True}), tmp_path / "copy", Console(quiet=True))
    assert read_documents(tmp_path / "copy" / "data" / "test.jsonl") == copied.docs["test"]
