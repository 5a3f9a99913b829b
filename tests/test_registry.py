"""Sources and span tiers are registered by Hydra ``_target_``: one interface each, one
dispatcher each, and a part of your own needs a YAML and a module, never an edit of ccl."""

import json
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console

from ccl.config import DocsConfig, check_closed, register_configs
from ccl.data.sources import SOURCES, load_source, source_loader
from ccl.records import SpanPair
from ccl.spans.tiers import TierContext, TierResult, build_tiers, resolve_tier
from ccl.utils.run_folder import config_diff

CONF = Path(__file__).resolve().parents[1] / "conf"

SOURCE_MODULE = '''
from ccl.records import Document, EvidenceSpan
from ccl.data.sources import SourceData


def load(cfg, tab, cache_dir, index=None):
    """Two tiny notes per split, from the text file named by docs.path."""
    text = open(cfg.path, encoding="utf-8").read().strip()
    start = text.index("hypertension")
    def doc(i):
        return Document(f"my-{i}", text, ["I10"], [EvidenceSpan(start, start + 12, "hypertension", "I10")],
                        source=cfg.source)
    return SourceData({"train": [doc(0), doc(1)], "val": [], "test": [doc(2)]}, [], {"notes": 3})
'''

TIER_MODULE = '''
from ccl.records import SpanPair
from ccl.spans.tiers import TierResult

SEEN = []


def build(ctx):
    """Copies each earlier-tier pair once, upper-cased, as its own tier."""
    SEEN.append(sorted(ctx.spans))
    pairs = [SpanPair(p.evidence.upper(), p.code, "silver", "mine") for ps in ctx.spans.values() for p in ps]
    return TierResult(pairs, {"copied": len(pairs)})
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A user's module (my_parts.py) and config dir (docs/my_source.yaml), outside ccl."""
    (tmp_path / "my_parts.py").write_text(textwrap.dedent(SOURCE_MODULE))
    (tmp_path / "my_tier.py").write_text(textwrap.dedent(TIER_MODULE))
    (tmp_path / "note.txt").write_text("Assessment: hypertension, well controlled.\n")
    conf = tmp_path / "my_conf" / "docs"
    conf.mkdir(parents=True)
    (conf / "my_source.yaml").write_text(
        f"name: my_source\n_target_: my_parts.load\nsource: my_source\npath: {tmp_path / 'note.txt'}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_every_docs_option_names_a_loader_that_imports():
    for path in sorted((CONF / "docs").glob("*.yaml")):
        cfg = _compose([f"docs={path.stem}"])
        assert cfg.docs._target_, path
        assert callable(source_loader(cfg.docs)), path
    assert set(SOURCES) == {"demo", "mdace", "mimic4", "codiesp", "aci_bench"}


def test_a_source_of_your_own_loads_from_a_yaml_without_editing_ccl(user_code, tab, tmp_path):
    searchpath = f"hydra.searchpath=[file://{user_code / 'my_conf'}]"
    cfg = _compose([searchpath, "docs=my_source"])
    data = load_source(cfg.docs, tab, tmp_path / "cache")
    assert [d.id for d in data.docs["train"]] == ["my-0", "my-1"] and data.stats == {"notes": 3}
    assert data.docs["test"][0].spans[0].code == "I10"
    # The same path serves an extra test set (+docs@test_sets.NAME=...) and the whole data stage.
    cfg = _compose([searchpath, "docs=my_source", "+docs@test_sets.mine=my_source", "spans=[gold]",
                    "icd.download=false", f"paths.cache_dir={tmp_path / 'cache'}"])
    check_closed(cfg)  # _target_ is a declared key of docs and of every test set
    from ccl.stages.data import build_data

    bundle = build_data(cfg, tmp_path / "run", Console(quiet=True))
    assert [d.id for d in bundle.test_sets["mine"]] == ["my-2"]
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())
    assert manifest["documents_stats"] == {"my_source": {"notes": 3}}
    assert manifest["span_tiers"]["gold"]["codes"] == 1 and {p.code for p in bundle.spans["gold"]} == {"I10"}


def test_an_unknown_source_or_target_is_one_clear_line(tab, tmp_path):
    with pytest.raises(ValueError) as err:
        load_source(DocsConfig(name="x", source="mimic3"), tab, tmp_path)
    assert "docs.source='mimic3'" in str(err.value) and "\n" not in str(err.value)
    cfg = OmegaConf.structured(DocsConfig(name="x", source="mine"))
    cfg._target_ = "no_such_module.load"
    with pytest.raises(ValueError, match=r"^docs\._target_='no_such_module\.load' "
                                         r"cannot be imported \(ModuleNotFoundError: No module named") as err:
        load_source(cfg, tab, tmp_path)
    assert "\n" not in str(err.value)


def test_a_test_set_with_a_bad_target_names_its_keys(tab, tmp_path):
    from ccl.stages.data import _build_test_sets

    cfg = _compose(["+docs@test_sets.extra=demo", "test_sets.extra._target_=ccl.data.sources.demo.nothing"])
    with pytest.raises(ValueError, match=r"^test_sets\.extra \(docs=demo\): test_sets\.extra\._target_="):
        _build_test_sets(cfg, tab, [], set())


def test_tiers_run_in_order_through_their_targets(user_code, tab, tmp_path):
    import my_tier

    cfg = OmegaConf.create({"spans": {"silver": {"_target_": "my_tier.build"}, "gold": {"restrict": "docs"}}})
    docs = {"train": [], "test": []}
    gold = [SpanPair("hypertension", "I10", "gold", "index:main")]
    seen = []

    def fake_gold(ctx):  # the gold slot through the same interface
        seen.append(sorted(ctx.spans))
        return TierResult(gold, {"content_hash": "x"})

    cfg.spans.gold._target_ = f"{__name__}.FAKE_GOLD"
    globals()["FAKE_GOLD"] = fake_gold
    spans, reports = build_tiers(TierContext(cfg, tab, docs, cache_dir=tmp_path))
    assert list(spans) == ["gold", "silver"] and seen == [[]] and my_tier.SEEN == [["gold"]]
    assert spans["silver"] == [SpanPair("HYPERTENSION", "I10", "silver", "mine")]
    assert reports == {"gold": {"content_hash": "x"}, "silver": {"copied": 1}}


def test_a_tier_without_target_takes_the_schema_default_and_a_bad_one_is_one_line():
    from ccl.spans import gold, silver, synthetic

    assert resolve_tier("gold", OmegaConf.create({"restrict": "docs"})) is gold.build
    assert resolve_tier("silver", {}) is silver.build and resolve_tier("synthetic", None) is synthetic.build
    with pytest.raises(ValueError, match=r"^spans\.silver\._target_='ccl\.spans\.silver\.nope' cannot be "
                                         r"imported .*build\(ctx: TierContext\) -> TierResult"):
        resolve_tier("silver", OmegaConf.create({"_target_": "ccl.spans.silver.nope"}))
    with pytest.raises(ValueError, match="spans.bronze: not a span tier"):
        resolve_tier("bronze", {})


def test_targets_are_outside_the_run_folder_config_check():
    """A run folder written before sources and tiers were registered stays valid."""
    old = {"docs": {"name": "demo", "source": "demo"}, "spans": {"gold": {"restrict": "docs"}}}
    new = {"docs": {"name": "demo", "source": "demo", "_target_": "ccl.data.sources.demo.load_demo"},
           "spans": {"gold": {"restrict": "docs", "_target_": "ccl.spans.gold.build"}}}
    assert config_diff(old, new) == []
    assert config_diff(old, {**new, "docs": {**new["docs"], "source": "mdace"}}) == ["docs.source"]
