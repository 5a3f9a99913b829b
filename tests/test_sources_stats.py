"""``python -m ccl.cli.stats``: the tokenizer, the per-split numbers, and the CLI on real data."""

import subprocess
import sys
from pathlib import Path

import pytest

from ccl.cli.stats import main
from ccl.data.stats import count_tokens, describe, summarize
from ccl.records import Document, EvidenceSpan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"reference data not at {DATA}")


def test_token_count_splits_words_and_punctuation():
    assert count_tokens("HbA1c 7.2%") == 5  # HbA1c 7 . 2 %
    assert count_tokens("Pt c/o SOB, no CP.") == 9  # Pt c / o SOB , no CP .
    assert count_tokens("  ") == 0


def test_describe_hand_computed():
    docs = [
        Document(
            "a",
            "type 2 diabetes, stable.",
            ["E11.9", "I10"],
            [EvidenceSpan(0, 15, "type 2 diabetes", "E11.9")],
        ),
        Document("b", "cough", ["R05.9"]),
    ]
    row = describe(docs)
    assert row == {
        "documents": 2,
        "with_evidence": 1,
        "evidence_spans": 1,
        "distinct_codes": 3,
        "codes_per_doc": 1.5,
        "words_per_doc": 2.5,  # (4 + 1) / 2
        "tokens_per_doc": 3.5,  # (type 2 diabetes , stable . = 6, cough = 1) / 2
    }
    rows = summarize({"train": docs, "test": docs[:1]}, corpus=[])
    assert rows["all"]["documents"] == 3 and rows["val"]["documents"] == 0 and "corpus" not in rows


@needs_data
def test_codiesp_table(tmp_path, capsys):
    result = main(["docs=codiesp", f"docs.path={DATA / 'codiesp'}", f"paths.cache_dir={tmp_path}"])
    rows = result["rows"]
    assert [rows[s]["documents"] for s in ("train", "val", "test", "corpus")] == [450, 50, 250, 450]
    assert rows["all"]["evidence_spans"] == result["details"]["evidence_spans"]
    assert rows["corpus"]["evidence_spans"] == 0
    out = capsys.readouterr().out
    assert "docs=codiesp" in out and "tokens/doc" in out and "mapped to a billable code" in out


@needs_data
def test_mdace_without_notes_reports_annotations_only(tmp_path, capsys):
    result = main(["docs=mdace", f"docs.path={DATA / 'mdace'}", f"paths.cache_dir={tmp_path}"])
    rows = result["rows"]
    assert [rows[s]["documents"] for s in ("train", "val", "test", "all")] == [181, 60, 61, 302]
    assert rows["all"]["evidence_spans"] == 3662 and rows["all"]["notes"] == 604
    assert "words_per_doc" not in rows["all"]
    assert "annotations only" in capsys.readouterr().out


@needs_data
def test_module_entry_point_on_aci_bench(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ccl.cli.stats", "docs=aci_bench",
         f"docs.path={DATA / 'aci-bench'}", f"paths.cache_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no labels: predict-only" in proc.stdout
    assert "│ test  │       120 │" in proc.stdout


@needs_data
def test_remap_table_for_mdace_and_codiesp_with_the_index(tmp_path, capsys):
    """Every remapped label is listed with its code, rule and count (issue 14, kind 1)."""
    index = [f"icd.index_xml={DATA / 'icd10cm' / 'icd10cm-index-2025-rebuilt.xml'}", "icd.download=false"]
    result = main(["docs=mdace", f"docs.path={DATA / 'mdace'}", f"paths.cache_dir={tmp_path}", *index])
    codes = result["details"]["codes"]
    rows = {r["label"]: r for r in codes["remaps"]}
    assert (rows["G20"]["code"], rows["G20"]["rule"], rows["G20"]["count"]) == ("G20.A1", "index_descendant", 5)
    assert sum(r["count"] for r in codes["remaps"]) == sum(codes["mapped"].values()) == 80
    out = capsys.readouterr().out
    assert "labels remapped to billable codes" in out and "remaps by rule:" in out
    assert "│ G20  " in out and "G20.A1" in out

    result = main(["docs=codiesp", f"docs.path={DATA / 'codiesp'}", f"paths.cache_dir={tmp_path}", *index])
    codes = result["details"]["codes"]
    rows = {r["label"]: r for r in codes["remaps"]}
    assert rows["K22.8"]["code"] == "K22.89" and rows["A04.7"]["code"] == "A04.72"
    assert sum(r["count"] for r in codes["remaps"]) == sum(codes["mapped"].values()) == 673
    assert codes["mapped"]["first_descendant"] < 47  # the count before meaning chose


def test_help_prints_the_usage_instead_of_a_parse_error(capsys):
    assert main(["--help"]) == {}
    assert "python -m ccl.cli.stats docs=NAME" in capsys.readouterr().out
