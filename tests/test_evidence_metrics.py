"""Evidence metrics: exact and overlap matching, hand-computed and on CodiEsp spans."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from ccl.eval.evidence import evidence_metrics, locate, normalise
from ccl.records import EvidenceSpan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

NOTE = "Pt has chest pain. No fever. Type 2 diabetes mellitus, chest pain on exertion."
#       0         1         2         3         4         5         6         7
#       0123456789012345678901234567890123456789012345678901234567890123456789012345678
CHEST_1 = (7, 17, "chest pain")
DIABETES = (29, 53, "Type 2 diabetes mellitus")
CHEST_2 = (55, 65, "chest pain")
GOLD = [CHEST_1, DIABETES, CHEST_2]


def test_offsets_of_the_fixture() -> None:
    assert all(NOTE[s:e] == t for s, e, t in GOLD)


def test_normalise() -> None:
    assert normalise('  "Chest\n\tPAIN."  ') == "chest pain"
    assert normalise("(type 2 diabetes)") == "type 2 diabetes"
    assert normalise("...") == ""


def test_hand_computed_exact_and_overlap() -> None:
    pred = ["Chest pain.", "type 2  diabetes", "chest pain on exertion", "fever"]
    m = evidence_metrics([(NOTE, GOLD, pred)])
    assert (m["n_pred"], m["n_gold"], m["n_docs"]) == (4, 3, 1)
    # exact: only "chest pain" equals a gold string (gold has it twice, pred once): tp 1.
    assert m["exact_tp"] == 1
    assert m["exact_precision"] == pytest.approx(1 / 4)
    assert m["exact_recall"] == pytest.approx(1 / 3)
    assert m["exact_f1"] == pytest.approx(2 / 7)  # 2*1 / (4 + 3)
    # overlap: "Chest pain." -> 7..17 (CHEST_1); "type 2 diabetes" -> 29..44 (DIABETES);
    # "chest pain on exertion" -> 55..77 (CHEST_2); "fever" -> 22..27, no gold: tp 3.
    assert locate(NOTE, pred) == [(7, 17), (29, 44), (55, 77), (22, 27)]
    assert m["overlap_tp"] == 3
    assert m["overlap_precision"] == pytest.approx(3 / 4)
    assert m["overlap_recall"] == pytest.approx(1.0)
    assert m["overlap_f1"] == pytest.approx(6 / 7)  # 2*3 / (4 + 3)


def test_same_text_at_two_offsets_counts_twice_and_takes_the_next_unused_occurrence() -> None:
    assert locate(NOTE, ["chest pain", "CHEST PAIN"]) == [(7, 17), (55, 65)]
    m = evidence_metrics([(NOTE, GOLD, ["chest pain", "chest pain"])])
    assert (m["exact_tp"], m["overlap_tp"], m["n_gold"]) == (2, 2, 3)
    # A third copy has no unused occurrence left: it sits on the first and matches nothing.
    m = evidence_metrics([(NOTE, GOLD, ["chest pain"] * 3)])
    assert (m["exact_tp"], m["overlap_tp"], m["n_pred"]) == (2, 2, 3)


def test_nested_phrase_takes_the_first_occurrence_when_all_are_used() -> None:
    # "pain" occurs at 13 (inside the first "chest pain") and 61 (inside the second).
    assert locate(NOTE, ["chest pain", "chest pain", "pain"]) == [(7, 17), (55, 65), (13, 17)]


def test_one_to_one_matching() -> None:
    # Both phrases overlap DIABETES; only one may match it.
    m = evidence_metrics([(NOTE, [DIABETES], ["type 2", "diabetes mellitus"])])
    assert (m["overlap_tp"], m["overlap_precision"], m["overlap_recall"]) == (1, 0.5, 1.0)
    assert m["exact_tp"] == 0


def test_greedy_in_document_order() -> None:
    # "mellitus, chest" (45..60) overlaps DIABETES and CHEST_2: it takes DIABETES, the
    # first in document order, so the later "chest pain on exertion" still gets CHEST_2.
    pred = ["chest pain on exertion", "mellitus, chest"]
    assert locate(NOTE, pred) == [(55, 77), (45, 60)]
    assert evidence_metrics([(NOTE, [DIABETES, CHEST_2], pred)])["overlap_tp"] == 2
    # Phrases are matched in document order, not output order, and greedily (not a
    # maximum matching): "2 diabetes mellitus, chest" (34..60) comes first and takes
    # DIABETES, so "mellitus" (45..53), output first, finds nothing left: tp 1, not 2.
    pred = ["mellitus", "2 diabetes mellitus, chest"]
    assert locate(NOTE, pred) == [(45, 53), (34, 60)]
    assert evidence_metrics([(NOTE, [DIABETES, CHEST_2], pred)])["overlap_tp"] == 1


def test_unlocatable_and_empty_phrases_are_false_positives() -> None:
    m = evidence_metrics([(NOTE, GOLD, ["headache", "...", "chest pain"])])
    assert locate(NOTE, ["headache", "..."]) == [None, None]
    assert (m["exact_tp"], m["overlap_tp"], m["n_pred"]) == (1, 1, 3)


def test_location_ignores_case_and_whitespace_and_maps_back_to_note_offsets() -> None:
    note = "İstanbul:  CHEST\n\n   pain noted"
    # 'İ'.lower() is two characters; offsets must still point into the original note.
    assert locate(note, ["chest pain", "noted."]) == [(11, 25), (26, 31)]
    assert note[11:25] == "CHEST\n\n   pain"


def test_gold_spans_deduplicated_by_offsets_and_record_objects_accepted() -> None:
    spans = [
        EvidenceSpan(29, 53, "Type 2 diabetes mellitus", "E11.9"),
        EvidenceSpan(29, 53, "Type 2 diabetes mellitus", "Z79.4"),
    ]
    m = evidence_metrics([(NOTE, spans, ["type 2 diabetes mellitus"])])
    assert (m["n_gold"], m["exact_tp"], m["overlap_tp"], m["exact_f1"]) == (1, 1, 1, 1.0)


def test_micro_average_over_documents() -> None:
    m = evidence_metrics(
        [(NOTE, GOLD, ["chest pain"]), ("no findings", [], ["no findings"]), (NOTE, [], [])]
    )
    # doc1: 1 pred, 3 gold, tp 1; doc2: 1 pred, 0 gold; doc3: nothing.
    assert (m["n_pred"], m["n_gold"], m["exact_tp"], m["n_docs"]) == (2, 3, 1, 3)
    assert m["exact_precision"] == pytest.approx(1 / 2)
    assert m["exact_recall"] == pytest.approx(1 / 3)


def test_no_documents_and_no_predictions() -> None:
    assert evidence_metrics([])["exact_f1"] == 0.0
    m = evidence_metrics([(NOTE, GOLD, [])])
    assert (m["exact_precision"], m["exact_recall"], m["overlap_f1"]) == (0.0, 0.0, 0.0)


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="evidence doc 1: gold span .* outside the note"):
        evidence_metrics([(NOTE, GOLD, []), ("short", [(0, 99, "x")], [])])
    with pytest.raises(TypeError, match="evidence doc 0"):
        evidence_metrics([(NOTE, GOLD, "chest pain")])


def test_codiesp_gold_phrases_score_perfectly_where_unambiguous() -> None:
    folder = DATA / "codiesp" / "train"
    if not (folder / "trainX.tsv").exists():
        pytest.skip(f"CodiEsp data not found under {folder}")
    spans: dict[str, set[tuple[int, int, str]]] = defaultdict(set)
    with open(folder / "trainX.tsv", encoding="utf-8", newline="") as f:
        for doc, kind, _code, text, offsets in csv.reader(f, delimiter="\t"):
            if kind == "DIAGNOSTICO" and ";" not in offsets:  # continuous spans only
                start, end = map(int, offsets.split())
                spans[doc].add((start, end, text))
    docs = []
    for doc in sorted(spans)[:30]:
        note = (folder / "text_files" / f"{doc}.txt").read_text(encoding="utf-8")
        gold = sorted(spans[doc])
        assert all(note[s:e] == t for s, e, t in gold)
        # A phrase that occurs once in the note must be located at its gold offsets.
        for (s, e, t), where in zip(gold, locate(note, [t for _, _, t in gold]), strict=True):
            if note.lower().count(t.lower()) == 1:
                assert where == (s, e), t
        docs.append((note, gold, [t for _, _, t in gold]))
    m = evidence_metrics(docs)
    assert m["n_pred"] == m["n_gold"] > 250
    assert m["exact_f1"] == 1.0
    # Overlap is below 1 only where a phrase also occurs, unannotated, earlier in the note.
    assert 0.9 < m["overlap_f1"] <= 1.0


def test_nfd_note_against_nfc_output_scores_one() -> None:
    """Issue 23: a note stored decomposed (NFD) and a model writing composed text (NFC,
    as Qwen tokenizers return it) are the same evidence: F1 1.0, not 0.333."""
    import unicodedata

    nfc = "Neumonía bilateral y diabetes. Hipertensión arterial; también insuficiencia cardíaca."
    note = unicodedata.normalize("NFD", nfc)
    assert note != nfc
    phrases = ["Neumonía bilateral", "Hipertensión arterial", "insuficiencia cardíaca"]
    gold = []
    for phrase in phrases:
        at = note.find(unicodedata.normalize("NFD", phrase))
        gold.append((at, at + len(unicodedata.normalize("NFD", phrase)),
                     note[at: at + len(unicodedata.normalize("NFD", phrase))]))
    m = evidence_metrics([(note, gold, phrases)])
    assert (m["exact_f1"], m["overlap_f1"]) == (1.0, 1.0)
    # Located ranges are the note's own (NFD) offsets: the whole decomposed phrase.
    assert [note[s:e] for s, e in locate(note, phrases)] == [g[2] for g in gold]
    # And the other way round: an NFC note, NFD output.
    nfd_phrases = [unicodedata.normalize("NFD", p) for p in phrases]
    gold_nfc = [(nfc.find(p), nfc.find(p) + len(p), p) for p in phrases]
    m = evidence_metrics([(nfc, gold_nfc, nfd_phrases)])
    assert (m["exact_f1"], m["overlap_f1"]) == (1.0, 1.0)
