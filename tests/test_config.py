"""Every config composes; the schema turns typos into errors."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from ccl.config import register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    assert cfg.name == experiment


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_composes(backbone):
    cfg = _compose([f"backbone={backbone}"])
    assert cfg.backbone.name == backbone


def test_ablation_rows_differ_as_in_the_paper():
    r1, r2, r3, r4, r5 = (_compose([f"+experiment=ablation_row{i}"]) for i in range(1, 6))
    assert r1.train.mode == "none" and r1.task == "cot"
    assert r2.task == "codes_only" and r2.spans.gold is None
    assert r3.task == "evidence" and r3.spans.gold is None
    assert r4.spans.gold is not None and r4.spans.silver is None
    assert r5.spans.silver is not None and r5.spans.synthetic is not None


@pytest.mark.parametrize("override", ["train.lrr=1", "docs.n_trian=3", "train.max_steps=many", "task=evidense", "train.mode=qlora"])
def test_typos_and_bad_types_are_errors(override):
    with pytest.raises(ConfigCompositionException):
        _compose([override])


def test_stage_lists():
    from ccl.utils.stages import parse_stages

    assert parse_stages("all") == ["data", "train", "predict", "eval"]
    assert parse_stages("eval+data") == ["data", "eval"]
    assert parse_stages("data,train") == ["data", "train"]
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("data+trian")
