"""Contamination audit (issue 14, kind 5): planted duplicates in the demo world are found, and only they."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from ccl.config import DemoDocsConfig, DocsConfig
from ccl.data.audit import AuditSettings, audit_documents, audit_spans, shingles
from ccl.data.demo import build_demo_world
from ccl.records import Document, SpanPair


@pytest.fixture(scope="module")
def world(tab):
    cfg = DocsConfig(name="demo", n_val=10, demo=DemoDocsConfig(n_train=40, n_test=15, corpus_size=120))
    return build_demo_world(cfg, tab, None)


def copy(doc: Document, new_id: str, text: str | None = None) -> Document:
    return dataclasses.replace(doc, id=new_id, text=doc.text if text is None else text, spans=[])


def planted(world):
    """Train, val and corpus with three planted copies of test documents."""
    t0, t1, t2 = world.test[:3]
    words = t1.text.split()
    edited = " ".join(w if i % 25 else "REDACTED" for i, w in enumerate(words))  # a few words changed
    longer = world.train[5].text + "\n\n" + t2.text + "\n\n" + world.train[6].text  # a note inside an admission
    docs = {"train": [*world.train, copy(t0, "leak-exact")], "val": [*world.val, copy(t2, "leak-inside", longer)],
            "test": list(world.test)}
    corpus = [*world.corpus, copy(t1, "leak-edited", edited)]
    return docs, corpus


def test_shingles():
    assert shingles("Type 2 diabetes, with CKD!", 3) == {"type 2 diabetes", "2 diabetes with", "diabetes with ckd"}
    assert shingles("Cough.", 5) == {"cough"}
    assert shingles("  ", 5) == set()


def test_clean_demo_world_has_no_pairs(world):
    docs = {"train": world.train, "val": world.val, "test": world.test}
    _, _, report = audit_documents(docs, world.corpus, {}, AuditSettings())
    assert report["document_pairs"] == 0
    assert report["compared"] == {"test": {"test": 15}, "other": {"train": 40, "val": 10, "corpus": 120}}


def test_planted_duplicates_are_found_and_only_they(world):
    docs, corpus = planted(world)
    t0, t1, t2 = (d.id for d in world.test[:3])
    kept_docs, kept_corpus, report = audit_documents(docs, corpus, {}, AuditSettings())
    found = {(p["test_id"], p["other_part"], p["other_id"]): p for p in report["pairs"]}
    assert set(found) == {(t0, "train", "leak-exact"), (t1, "corpus", "leak-edited"), (t2, "val", "leak-inside")}
    assert found[(t0, "train", "leak-exact")]["jaccard"] == 1.0
    assert 0.5 <= found[(t1, "corpus", "leak-edited")]["jaccard"] < 1.0
    inside = found[(t2, "val", "leak-inside")]
    assert inside["test_contained"] == 1.0 and inside["jaccard"] < 0.5  # found by containment
    assert report["test_documents_flagged"] == 3
    assert report["pairs_by_part"] == {"test ~ train": 1, "test ~ corpus": 1, "test ~ val": 1}
    assert kept_docs is docs and kept_corpus is corpus and "dropped" not in report  # drop is off


def test_drop_removes_the_training_side_copies_never_test(world):
    docs, corpus = planted(world)
    kept_docs, kept_corpus, report = audit_documents(docs, corpus, {}, AuditSettings(drop=True))
    assert report["dropped"] == {"train": 1, "val": 1, "corpus": 1}
    assert [d.id for d in kept_docs["train"]] == [d.id for d in world.train]
    assert [d.id for d in kept_corpus] == [d.id for d in world.corpus]
    assert kept_docs["test"] == docs["test"]


def test_extra_test_sets_are_audited(world):
    docs = {"train": [*world.train, copy(world.test[0], "x")], "val": world.val, "test": []}
    _, _, report = audit_documents(docs, world.corpus, {"other": world.test[:2]}, AuditSettings())
    assert [(p["test_part"], p["other_id"]) for p in report["pairs"]] == [("test_set:other", "x")]


def test_span_pairs_copied_from_test_notes(world):
    note = world.test[4].text
    sentence = " ".join(note.split()[:20])
    tiers = {"silver": [SpanPair("type 2 diabetes", "E11.9", "silver", "lexical"),
                        SpanPair(sentence, "E11.9", "silver", "lexical"),
                        SpanPair("an unrelated passage of twenty words that no note of the demo world "
                                 "ever holds in any of its sentences at all", "I10", "silver", "lexical")],
             "gold": [SpanPair("essential hypertension", "I10", "gold", "index")]}
    docs = {"train": world.train, "val": world.val, "test": world.test}
    kept, report = audit_spans(docs, {}, tiers, AuditSettings())
    assert [(f["tier"], f["index"], f["test_id"]) for f in report["spans"]] == [("silver", 1, world.test[4].id)]
    assert report["span_pairs_too_short_to_audit"] == {"silver": 1, "gold": 1}
    assert report["span_pairs_flagged"] == report["span_pair_matches"] == 1
    # The same copied sentence in a second test note: still one flagged pair, two matches.
    twin = replace(world.test[5], text=world.test[5].text + " " + sentence)
    docs2 = {**docs, "test": [*world.test[:5], twin, *world.test[6:]]}
    _, report2 = audit_spans(docs2, {}, tiers, AuditSettings())
    assert (report2["span_pairs_flagged"], report2["span_pair_matches"]) == (1, 2)
    assert report2["span_pairs_by_tier"] == {"silver": 1}
    assert kept is tiers
    kept, report = audit_spans(docs, {}, tiers, AuditSettings(drop=True))
    assert [p.evidence for p in kept["silver"]] == [tiers["silver"][0].evidence, tiers["silver"][2].evidence]
    assert report["dropped_span_pairs"] == {"silver": 1, "gold": 0}


def test_settings_are_checked():
    from omegaconf import OmegaConf

    s = AuditSettings.from_config(OmegaConf.create({"shingle": 3, "threshold": 0.7, "enabled": True}))
    assert (s.shingle, s.threshold, s.containment) == (3, 0.7, 0.8)
    with pytest.raises(ValueError, match="audit.threshold"):
        AuditSettings.from_config(OmegaConf.create({"threshold": 1.5}))


def test_cli_runs_the_data_stage_audit(tmp_path, capsys):
    from ccl.cli.audit import main

    report = main(["docs.demo.n_train=20", "docs.n_val=5", "docs.demo.n_test=8", "docs.demo.corpus_size=30",
                   f"paths.cache_dir={tmp_path}", "icd.download=false", "audit.shingle=4"])
    assert report["enabled"] is True and report["settings"]["shingle"] == 4
    assert report["document_pairs"] == 0 and report["compared"]["other"]["corpus"] == 30
    out = capsys.readouterr().out
    assert "Contamination audit" in out and "near-duplicate document pairs: 0" in out


def test_the_audit_command_prints_its_usage_on_help(capsys):
    from ccl.cli.audit import main

    assert main(["--help"]) == {}
    assert "python -m ccl.cli.audit docs=NAME" in capsys.readouterr().out


def test_a_short_test_note_inside_a_much_longer_training_text_is_found(world):
    """Issue 23 item 7: containment was checked only on pairs the Jaccard >= 0.4 LSH returned,
    so a note copied into a text more than ~2.5x its length was missed."""
    short = world.test[3]
    filler = "\n\n".join(d.text for d in world.corpus[:12])  # many times the note's length
    host = copy(world.train[0], "leak-in-long-admission", filler + "\n\n" + short.text + "\n\n" + filler)
    assert len(host.text) > 10 * len(short.text)
    docs = {"train": [*world.train, host], "val": world.val, "test": world.test}
    _, _, report = audit_documents(docs, world.corpus, {}, AuditSettings())
    [pair] = report["pairs"]
    assert (pair["test_id"], pair["other_id"]) == (short.id, "leak-in-long-admission")
    assert pair["test_contained"] == 1.0 and pair["jaccard"] < 0.2


def test_the_corpus_that_is_the_training_split_is_compared_once(world):
    """docs=mimic4 mines its own training split: each training note was hashed and reported twice."""
    train = [*world.train, copy(world.test[0], "leak")]
    docs = {"train": train, "val": world.val, "test": world.test}
    _, _, report = audit_documents(docs, train, {}, AuditSettings())
    assert [(p["other_part"], p["other_id"]) for p in report["pairs"]] == [("train", "leak")]
    assert report["corpus_also_training"] == len(train)
    kept, kept_corpus, report = audit_documents(docs, train, {}, AuditSettings(drop=True))
    assert report["dropped"] == {"train": 1, "val": 0, "corpus": 1}
    assert "leak" not in {d.id for d in kept["train"]} | {d.id for d in kept_corpus}


def test_the_icd_books_own_text_is_not_contamination(world, tab):
    """A test note that quotes a long Tabular description does not make the book-derived gold
    pair a copy of the test note; a silver pair with the same evidence still is."""
    code, description = next((c, tab.description(c)) for c in tab.billable_codes()
                             if len(tab.description(c).split()) >= 12)
    note = copy(world.test[0], "quotes-the-book", world.test[0].text + "\n" + description + ".")
    docs = {"train": world.train, "val": world.val, "test": [note, *world.test[1:]]}
    tiers = {"gold": [SpanPair(description, code, "gold", "tabular:description")],
             "silver": [SpanPair(description, code, "silver", "lexical")]}
    _, report = audit_spans(docs, {}, tiers, AuditSettings())
    assert [(f["tier"], f["test_id"]) for f in report["spans"]] == [("silver", "quotes-the-book")]
    assert report["span_pairs_book_text"] == {"gold": 1}


def test_shingle_hashes_match_the_shingles():
    from ccl.data.audit import ShingleHasher

    text = "Type 2 diabetes, with CKD! Type 2 diabetes with ckd again"
    for k in (1, 3, 5, 20):
        assert len(ShingleHasher(k)(text)) == len(shingles(text, k))
    assert len(ShingleHasher(5)("  ")) == 0
    a, b = ShingleHasher(3)("a b c d"), ShingleHasher(3)("x a b c")
    assert len(set(a.tolist()) & set(b.tolist())) == 1  # "a b c"
