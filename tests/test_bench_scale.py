"""The scale benchmark's synthetic MIMIC-IV-shaped corpus loads through docs=mimic4 (issue 24 item 1)."""

from __future__ import annotations

from pathlib import Path

from ccl.bench.scale import SPLIT_SHARE, corpus_files, measure, step_overrides, write_corpus
from ccl.config import compose_config
from ccl.data.sources import load_source


def test_the_synthetic_corpus_is_what_docs_mimic4_reads(tmp_path, tab):
    counts = write_corpus(tmp_path, 40, seed=3, tab=tab)
    assert counts["admissions"] == {s: max(1, round(40 * share)) for s, share in SPLIT_SHARE.items()}
    assert 900 < counts["words_per_note"] < 2200 and 9 < counts["codes_per_note"] < 18
    cfg = compose_config(step_overrides(tmp_path, "load", []))
    data = load_source(cfg.docs, tab, Path(cfg.paths.cache_dir), None)
    assert {k: len(v) for k, v in data.docs.items()} == counts["admissions"]
    doc = data.docs["train"][0]
    assert doc.source == "mimic4" and all(c in tab.billable_codes() for c in doc.codes)
    assert all(tab.description(c) in doc.text for c in doc.codes)  # the silver miner has evidence
    again = tmp_path / "again"
    write_corpus(again, 40, seed=3, tab=tab)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(corpus_files(tmp_path).values(),
                                                               corpus_files(again).values(), strict=True))


def test_a_step_is_measured_in_its_own_process():
    m = measure(["python", "-c", "import json; x = bytearray(80 * 2**20); print(json.dumps({'ok': 1}))"])
    assert m["result"] == {"ok": 1} and m["peak_rss_gb"] >= 80 / 1024


def test_a_small_step_is_not_charged_the_benchmarks_own_memory():
    """Forked from a big process, a child's ru_maxrss starts at the parent's RSS (Linux keeps
    the high-water mark across exec): every small step read the benchmark's 0.45 GB."""
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident
    m = measure(["python", "-c", "print('{}')"])
    assert m["peak_rss_gb"] < 0.2
