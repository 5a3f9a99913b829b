"""``python -m ccl.cli.spans``: composition, an end-to-end build into the run cache, coverage numbers."""

import json

import pytest
from rich.console import Console

from ccl.cli import spans as cli
from ccl.icd.tabular import load_tabular
from ccl.records import SpanPair
from ccl.spans import silver, synthetic
from ccl.spans.coverage import coverage_report


def small(tmp_path):
    return [
        "docs.demo.n_train=24", "docs.n_val=6", "docs.demo.n_test=6", "docs.demo.n_codes=8", "docs.demo.corpus_size=40",
        "icd.download=false", f"paths.cache_dir={tmp_path}/cache", f"paths.output_dir={tmp_path}/out",
        "llm.progress=false",
    ]


def test_command_line_needs_exactly_one_tier():
    with pytest.raises(cli.UsageError, match="tier=silver or tier=synthetic"):
        cli.parse_args(["llm=hf"])
    with pytest.raises(cli.UsageError):
        cli.parse_args(["tier=gold"])
    assert cli.parse_args(["tier=silver", "llm=hf", "docs=demo"]) == ("silver", ["llm=hf", "docs=demo"])
    assert cli.main(["tier=bronze"]) == 2


def test_composition_defaults_tiers_and_methods():
    cfg = cli.tier_config("silver", [])
    assert [k for k, v in cfg.spans.items() if v is not None] == ["gold", "silver"]
    assert cfg.spans.silver.method == "lexical" and cfg.stage == "data"
    cfg = cli.tier_config("synthetic", ["llm=hf"])
    assert [k for k, v in cfg.spans.items() if v is not None] == ["gold", "silver", "synthetic"]
    assert cfg.llm.backend == "hf" and cfg.llm.model == "smollm2_135m"
    assert cfg.spans.synthetic.method == "llm" and cfg.spans.silver.method == "lexical"
    cfg = cli.tier_config("silver", ["llm=openai", "spans.silver.method=lexical"])
    assert cfg.spans.silver.method == "lexical"  # an explicit method wins over the llm choice
    cfg = cli.tier_config("synthetic", ["spans=[gold,synthetic]", "llm=lexical"])
    assert [k for k, v in cfg.spans.items() if v is not None] == ["gold", "synthetic"]
    assert cfg.spans.synthetic.method == "template"
    with pytest.raises(cli.UsageError, match="lacks it"):
        cli.tier_config("silver", ["spans=[gold]"])


def test_conf_llm_files_match_the_schema():
    for name in ("lexical", "hf", "openai", "vllm"):
        cfg = cli.tier_config("silver", [f"llm={name}"])
        assert cfg.llm.backend == name
        assert cfg.llm.allow_credentialed_remote is False


def test_expand_builds_the_tier_that_the_run_reuses(tmp_path, monkeypatch):
    console = Console(quiet=True)
    cfg = cli.tier_config("synthetic", small(tmp_path))
    report = cli.expand(cfg, "synthetic", console)
    saved = json.loads((tmp_path / "out" / "expand" / "default-synthetic" / "coverage.json").read_text())
    assert saved == report
    coverage = report["coverage"]
    assert coverage["billable_total"] == 74719
    assert [row["tiers"] for row in coverage["cumulative"]] == ["gold", "gold+silver", "gold+silver+synthetic"]
    assert coverage["subset"]["codes"] == 8 and coverage["subset"]["cumulative"][-1]["share"] == 1.0
    assert report["tier_report"]["method"] == "template"
    silver_report = json.loads(next((tmp_path / "cache" / "silver").glob("*/report.json")).read_text())
    assert silver_report["documents"] == 40 and silver_report["codes_labelled"] == 8
    assert silver_report["documents_with_evidence"] == 40  # every corpus note yields evidence
    assert coverage["by_tier"]["silver"]["pairs"] == silver_report["pairs"]
    assert (tmp_path / "cache" / "silver").is_dir() and (tmp_path / "cache" / "synthetic").is_dir()

    # ccl.run's data stage, same config: both tiers come from the cache, nothing is rebuilt.
    from ccl.stages.data import build_data

    monkeypatch.setattr(silver, "mine_lexical", lambda *a, **k: pytest.fail("silver rebuilt"))
    monkeypatch.setattr(synthetic, "synthesize", lambda *a, **k: pytest.fail("synthetic rebuilt"))
    bundle = build_data(cfg, tmp_path / "run", console)
    assert len(bundle.spans["silver"]) == coverage["by_tier"]["silver"]["pairs"]


def test_main_prints_and_writes_the_report(tmp_path, capsys):
    assert cli.main(["tier=silver", *small(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Span coverage after silver" in out and '"billable_total": 74719' in out
    assert (tmp_path / "out" / "expand" / "default-silver" / "coverage.json").is_file()


def test_coverage_is_cumulative_and_counts_billable_codes_only():
    tab = load_tabular()
    pair = lambda code, tier: SpanPair("x y", code, tier, "test")  # noqa: E731
    spans = {
        "gold": [pair("E11.9", "gold"), pair("I10", "gold")],
        "silver": [pair("I10", "silver"), pair("J18.9", "silver")],
        "synthetic": [pair("E11.65", "synthetic"), pair("E11", "synthetic")],  # E11 is not billable
    }
    report = coverage_report(tab, spans, codes=["E11.9", "J18.9", "N17.9", "E11"])
    total = len(tab.billable_codes())
    assert report["by_tier"]["synthetic"] == {"pairs": 2, "codes": 2, "billable_codes": 1}
    assert report["cumulative"] == [
        {"tiers": "gold", "new_codes": 2, "codes": 2, "share": round(2 / total, 6)},
        {"tiers": "gold+silver", "new_codes": 1, "codes": 3, "share": round(3 / total, 6)},
        {"tiers": "gold+silver+synthetic", "new_codes": 1, "codes": 4, "share": round(4 / total, 6)},
    ]
    assert report["subset"]["codes"] == 3
    assert [r["codes"] for r in report["subset"]["cumulative"]] == [1, 2, 2]
    assert report["subset"]["uncovered_examples"] == ["N17.9"]
