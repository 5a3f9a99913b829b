"""Silver mining over workers (issue 24): stage 1 split by note id, one merge that refines
once, the same pairs byte for byte as one worker; and the candidates' index by code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccl.cli.mine import mine, prepare
from ccl.config import compose_config
from ccl.data.pairs import gold_pairs
from ccl.records import SpanPair
from ccl.spans import silver
from ccl.spans.tier_cache import PAIRS
from ccl.spans.tiers import TierContext
from tests.test_silver import CODES, config, corpus

ROOT = Path(__file__).resolve().parents[1]
FAST = ["logger=none", "icd.download=false", "docs.demo.n_train=16", "docs.n_val=4", "docs.demo.n_test=6",
        "docs.demo.n_codes=12", "docs.demo.corpus_size=60", "llm.progress=false"]


@pytest.fixture(scope="module")
def gold(tab):  # as tests/test_silver.py's
    return gold_pairs(tab, [], ("description", "inclusion"), CODES) + [
        SpanPair("hypertension", "I10", "gold", "index:main")]


def sharded(cfg, count, index):
    cfg = cfg.copy()
    cfg.spans.silver.shard = {"count": count, "index": index}
    return cfg


def pairs_bytes(cache_dir):
    (entry,) = [p for p in (Path(cache_dir) / "silver").iterdir() if p.name != "shards"]
    return (entry / PAIRS).read_bytes()


def test_shard_of_is_a_stable_partition():
    ids = [f"note-{i}" for i in range(200)]
    for count in (1, 2, 3, 7):
        shards = [silver.shard_of(i, count) for i in ids]
        assert set(shards) <= set(range(count)) and shards == [silver.shard_of(i, count) for i in ids]
    assert silver.shard_of("note-0", 2) == int.from_bytes(
        __import__("hashlib").sha256(b"note-0").digest()[:8], "big") % 2  # the documented rule
    counts = [sum(silver.shard_of(i, 3) == s for i in ids) for s in range(3)]
    assert min(counts) > 40  # spread, not all in one


@pytest.mark.parametrize("method", ["lexical", "llm"])
def test_two_shards_and_a_merge_equal_one_worker(tab, gold, tmp_path, monkeypatch, stand_in_llm, method):
    docs = corpus() + [d.__class__(f"x{i}", d.text, d.codes, source="demo") for i, d in enumerate(corpus())]
    if method == "llm":
        from ccl.spans.llm import cache as llm_cache
        from tests.test_silver import Scripted

        backend = stand_in_llm("hf", "scripted", Scripted.answer)
        monkeypatch.setattr(llm_cache, "make_backend", lambda cfg, cache_dir: backend)
    cfg = config(method=method, k=2, backend="hf" if method == "llm" else "lexical", model="scripted")
    one, report_one = silver.build(TierContext(cfg, tab, {}, docs, {"gold": gold}, tmp_path / "one"))
    many = tmp_path / "many"
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) \[0, 1\] have not run"):
        silver.build(TierContext(sharded(cfg, 2, None), tab, {}, docs, {"gold": gold}, many))
    sizes = []
    for index in (1, 0):
        pairs, report = silver.build(TierContext(sharded(cfg, 2, index), tab, {}, docs, {"gold": gold}, many))
        assert pairs == [] and report["shard"] == {"count": 2, "index": index}
        sizes.append(report["documents"])
    assert sum(sizes) == len(docs) and min(sizes) > 0
    merged, report = silver.build(TierContext(sharded(cfg, 2, None), tab, {}, docs, {"gold": gold}, many))
    assert merged == one and len(one) >= 3
    assert pairs_bytes(many) == pairs_bytes(tmp_path / "one")
    for key in ("per_code", "parse", "candidates", "documents_with_evidence"):
        assert report[key] == report_one[key]
    if method == "llm":  # every extraction call once, over both shards
        assert report["extraction_calls"]["generated"] == report_one["extraction_calls"]["generated"]


def test_shard_index_outside_the_count_is_one_clear_error(tab, gold, tmp_path):
    with pytest.raises(ValueError, match=r"spans.silver.shard.index=2: give 0 \.\. 1"):
        silver.build(TierContext(sharded(config(), 2, 2), tab, {}, corpus(), {"gold": gold}, tmp_path))


def test_ranked_reads_only_the_codes_own_candidates():
    cands = silver.Candidates()
    cands.add(["A", "B"], {"A": ["x", "y", "x"], "B": ["z"]})
    cands.add(["A"], {"A": ["y"]})
    assert cands.ranked("A") == [("y", "y", 2, 2), ("x", "x", 1, 2)]
    assert cands.ranked("B") == [("z", "z", 1, 1)] and cands.ranked("C") == []
    assert cands.codes() == ["A", "B"] and cands.by_code == {"A": {"x": None, "y": None}, "B": {"z": None}}


@pytest.mark.slow
def test_two_shards_through_the_joblib_launcher_equal_one_run(tmp_path):
    """The README's commands: a Hydra multirun of 2 shards on the joblib launcher, then the
    merge; the tier's pairs equal a 1-shard run's byte for byte."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    many, one = tmp_path / "many", tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "ccl.cli.mine", "-m", *FAST, f"paths.cache_dir={many}",
         "spans.silver.shard.count=2", "spans.silver.shard.index=0,1",
         "hydra/launcher=local_parallel", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (many / "silver" / "shards").glob("*/*.json")) == ["0-of-2.json", "1-of-2.json"]
    merge = [*FAST, f"paths.cache_dir={many}", f"paths.output_dir={tmp_path / 'out'}", "spans.silver.shard.count=2"]
    merged = mine(prepare(compose_config(["spans=[gold,silver]", *merge]), merge))
    single = [*FAST, f"paths.cache_dir={one}", f"paths.output_dir={tmp_path / 'out'}"]
    alone = mine(prepare(compose_config(["spans=[gold,silver]", *single]), single))
    assert merged["shards"] == 2 and merged["pairs"] == alone["pairs"] > 0
    assert pairs_bytes(many) == pairs_bytes(one)


@pytest.mark.parametrize(("shard", "key"), [(["spans.silver.shard.count=2", "spans.silver.shard.index=0"],
                                             "spans.silver.shard.index=0"),
                                            (["spans.silver.shard.count=3"], "spans.silver.shard.count=3")])
def test_a_run_refuses_silver_shards_and_points_at_the_mining_command(tmp_path, shard, key):
    from ccl.run import run

    cfg = compose_config([*FAST, "backbone=tiny", f"paths.cache_dir={tmp_path / 'cache'}", "spans=[gold,silver]",
                          *shard])
    with pytest.raises(ValueError) as err:
        run(cfg, tmp_path / "run")
    message = str(err.value)
    assert message.startswith(f"{key}:") and "python -m ccl.cli.mine" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_a_run_cli_refuses_a_silver_shard_in_one_line(tmp_path):
    from tests.test_run_folder import cli, one_line_error

    done = cli("ccl.run", *FAST, "backbone=tiny", "spans=[gold,silver]", "spans.silver.shard.count=2",
               "spans.silver.shard.index=1", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}")
    assert done.returncode == 1
    line = one_line_error(done.stderr, "ccl.run")
    assert "spans.silver.shard.index=1" in line and "python -m ccl.cli.mine" in line
