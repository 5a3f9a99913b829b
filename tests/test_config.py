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


# ---------------------------------------------------------------- one source of defaults

def _leaves(obj, prefix=""):
    """``{"lora.top_layers": 8, ...}`` of a nested mapping (a list is a leaf)."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _group_defaults():
    """(group, dataclass, default option's file, every option's file) for each schema group."""
    import yaml

    from ccl import config as schema

    kinds = {"icd": schema.ICDConfig, "backbone": schema.BackboneConfig, "docs": schema.DocsConfig,
             "mix": schema.MixConfig, "train": schema.TrainConfig, "trainer": schema.TrainerConfig,
             "infer": schema.InferConfig,
             "eval": schema.EvalConfig, "logger": schema.LoggerConfig, "paths": schema.PathsConfig,
             "llm": schema.LLMConfig, "audit": schema.AuditConfig}
    chosen = {}
    for item in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]:
        if isinstance(item, dict):
            chosen.update(item)
    rows = [(g, kind, CONF / g / f"{chosen[g]}.yaml", sorted((CONF / g).glob("*.yaml"))) for g, kind in kinds.items()]
    # Each span tier is its own option file (spans: [gold, silver, ...]) under its tier's key.
    tiers = {"gold": schema.GoldSpansConfig, "silver": schema.SilverSpansConfig,
             "synthetic": schema.SyntheticSpansConfig}
    rows += [(f"spans.{t}", kind, CONF / "spans" / f"{t}.yaml", [CONF / "spans" / f"{t}.yaml"]) for t, kind in tiers.items()]
    return rows


@pytest.mark.parametrize("group,kind,default,options", _group_defaults(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_dataclass_defaults_are_the_yaml_defaults(group, kind, default, options):
    """One source of defaults (ccl/config.py docstring): a dataclass default equals the value
    its group's default option sets, unless every option of a group with several options sets
    the key itself (backbones: each says its kind, dtype and length)."""
    import yaml
    from omegaconf import OmegaConf

    def load(path):
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        return data[group.split(".")[1]] if group.startswith("spans.") else data

    declared = _leaves(OmegaConf.to_container(OmegaConf.structured(kind), enum_to_str=True))
    # Keys every option of a group with several options sets: no YAML ever falls back on the schema.
    set_by_all = set.intersection(*(set(_leaves(load(p))) for p in options)) if len(options) > 1 else set()
    wrong = {key: (declared.get(key, "<undeclared>"), value) for key, value in _leaves(load(default)).items()
             if key not in set_by_all and declared.get(key, "<undeclared>") not in (value, "???")}
    assert not wrong, f"{group}: schema default vs {default.name}: {wrong}"
    assert set(_leaves(load(default))) <= set(declared), "every YAML key is declared"


# ---------------------------------------------------------------- the trainer group


def test_trainer_group_takes_its_arguments_from_train():
    """conf/trainer/default.yaml restates train.*: the README's train.* overrides reach the
    Lightning Trainer, and a trainer.* value of its own is refused (it is outside the train key)."""
    from hydra.utils import instantiate

    from ccl.config import check_trainer, trainer_mirrors

    cfg = _compose(["train.accelerator=cpu", "train.precision=bf16-mixed", "train.grad_accum=3",
                    "train.log_every_n_steps=7"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accumulate_grad_batches == 3
    assert trainer_mirrors()["accumulate_grad_batches"] == "grad_accum"
    assert set(trainer_mirrors()) >= {"accelerator", "devices", "num_nodes", "strategy", "precision"}
    check_trainer(cfg)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.accumulate_grad_batches == 3 and trainer.log_every_n_steps == 7
    assert trainer.precision == "bf16-mixed"
    with pytest.raises(ValueError, match=r"trainer.precision=16-mixed but train.precision=32-true.*"
                                         r"set train.precision=16-mixed"):
        check_trainer(_compose(["trainer.precision=16-mixed"]))


def test_trainer_group_is_outside_the_train_key_and_free_in_a_run_folder():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ccl.stages.keys import train_key
    from ccl.utils.run_folder import config_diff

    cfg = _compose([])
    other = _compose(["trainer.enable_model_summary=true"])
    bundle = SimpleNamespace(key="data")
    assert train_key(cfg, bundle) == train_key(other, bundle)
    old = OmegaConf.to_container(cfg, resolve=True)
    old.pop("trainer")  # a run folder written before the trainer group existed
    assert config_diff(old, OmegaConf.to_container(other, resolve=True)) == []


def test_a_trainer_argument_of_its_own_is_keyed_and_compared():
    """A trainer argument that restates no train.* key (e.g. gradient clipping, added to
    TrainerConfig later) shapes the model: it enters the train key, and a run folder's config
    may not differ in it, so a stale checkpoint is never resumed under it."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ccl.stages.keys import train_key
    from ccl.utils.run_folder import config_diff

    cfg = OmegaConf.create(OmegaConf.to_container(_compose([]), resolve=True))
    clipped = OmegaConf.merge(cfg, {"trainer": {"gradient_clip_val": 1.0}})
    bundle = SimpleNamespace(key="data")
    assert train_key(cfg, bundle) != train_key(clipped, bundle)
    diff = config_diff(OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(clipped, resolve=True))
    assert any("trainer.gradient_clip_val" in line for line in diff)
