"""Every config composes; the schema turns typos into errors."""

import re
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


@pytest.mark.parametrize(
    "override", ["train.lrr=1", "docs.n_trian=3", "train.max_steps=many", "task=evidense", "train.mode=qlora"])
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
    """``{"lora.top_layers": 8, ...}`` of a nested mapping (a list or an empty mapping is a leaf)."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _skeleton(obj):
    """The nested mappings of ``obj`` without their leaves: merged onto the schema, it switches on
    each Optional block the file sets (``tiny: {}``) at its dataclass's defaults."""
    return {k: _skeleton(v) for k, v in obj.items() if isinstance(v, dict)}


def _option_files():
    """(file, dataclass the file's top level fills) for every YAML file that sets schema values:
    each option of each config group (``conf/spans/gold.yaml`` fills SpansConfig under its tier's
    key) and the root files (``conf/config.yaml``, ``conf/mine.yaml``)."""
    from ccl import config as schema

    kinds = {"icd": schema.ICDConfig, "backbone": schema.BackboneConfig, "docs": schema.DocsConfig,
             "spans": schema.SpansConfig, "mix": schema.MixConfig, "train": schema.TrainConfig,
             "trainer": schema.TrainerConfig, "infer": schema.InferConfig, "eval": schema.EvalConfig,
             "logger": schema.LoggerConfig, "paths": schema.PathsConfig, "llm": schema.LLMConfig,
             "audit": schema.AuditConfig}
    groups = {p.name for p in CONF.iterdir() if p.is_dir()} - {"experiment", "hydra", "test_sets"}
    assert groups == set(kinds), f"a config group without its dataclass here: {groups ^ set(kinds)}"
    rows = [(path, kind) for group, kind in kinds.items() for path in sorted((CONF / group).glob("*.yaml"))]
    return rows + [(CONF / "config.yaml", schema.CCLConfig), (CONF / "mine.yaml", schema.CCLConfig)]


@pytest.mark.parametrize("path,kind", _option_files(), ids=lambda v: v.parent.name + "/" + v.name
                         if isinstance(v, Path) else "")
def test_no_default_is_written_twice(path, kind):
    """One source of defaults, the schema (ccl/config.py docstring): an option file writes only
    where it departs from the schema's default (or from the option it extends, ``defaults:
    [mdace]``), never the default itself, and only declared keys."""
    import yaml
    from omegaconf import OmegaConf

    data = yaml.safe_load(path.read_text()) or {}
    parents = [p for p in data.pop("defaults", [])
               if isinstance(p, str) and p not in ("_self_", "config", "ccl_schema")]
    data.pop("hydra", None)
    base = OmegaConf.structured(kind)
    for parent in parents:  # an option that extends another of its group
        base = OmegaConf.merge(base, yaml.safe_load((path.parent / f"{parent}.yaml").read_text()) or {})
    reference = _leaves(OmegaConf.to_container(OmegaConf.merge(base, _skeleton(data)), enum_to_str=True))
    written = _leaves(data)
    blocks = {key.rsplit(".", n)[0] for key in reference for n in range(1, key.count(".") + 1)}
    assert set(written) <= set(reference) | blocks, f"{path.name}: undeclared {set(written) - set(reference)}"
    twice = {key: value for key, value in written.items() if reference.get(key, "<block>") == value}
    assert not twice, (f"{path.relative_to(CONF.parent)} restates the schema's default for {twice}: "
                       "drop them (ccl/config.py holds the defaults)")


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


# ---------------------------------------------------------------- moved and retired keys

# train_key / predict_key (bundle key "data") as the code before the config's second pass
# computed them (flat backbone and docs, train.loss_positions and backbone.code_token_side
# still keys): moving a key under a block or retiring an option at its only value keys nothing new.
KEYS_BEFORE_THE_MOVE = {
    "": ("2933af5dce56e5d0", "dffe5603ca62d5ef"),
    "backbone=tiny": ("039d4d5bcd91ef6a", "0ed637753338a4b1"),
    "backbone=tiny_l": ("bede0c3b02a4bbcb", "edb7d70f0f97a1c4"),
    "backbone=qwen3_4b train=lora_gpu": ("d227e90b23d54103", "9cfb82db5b31e0ce"),
    "train=full": ("6cece28216e81227", "be7ab1f52b457797"),
    "train=none +experiment=ablation_row1": ("c4ddf1f37cea912d", "3042722bcd71b1a0"),
    "infer=vllm": ("2933af5dce56e5d0", "e634490f0d5bdebb"),
    "+experiment=ablation_row5 backbone=tiny_s": ("578a5214099afbd6", "59e9eee0a5846800"),
    "+experiment=codiesp_row4": ("202dd74d8f50e542", "13f9faa4de326d80"),
    "+experiment=table1_ccl backbone=llama31_8b": ("7b050e448554a877", "b45e6c9825427681"),
}


@pytest.mark.parametrize("overrides", sorted(KEYS_BEFORE_THE_MOVE))
def test_stage_keys_survive_moved_and_retired_keys(overrides):
    from types import SimpleNamespace

    from ccl.stages.keys import predict_key, train_key

    cfg = _compose(overrides.split())
    tkey = train_key(cfg, SimpleNamespace(key="data"))
    assert (tkey, predict_key(cfg, tkey)) == KEYS_BEFORE_THE_MOVE[overrides]


def test_legacy_layout_flattens_blocks_and_restores_retired_options():
    from omegaconf import OmegaConf

    from ccl.config import legacy_config, legacy_layout

    hub = OmegaConf.to_container(_compose(["backbone=qwen3_4b"]).backbone, resolve=True)
    flat = legacy_layout("backbone", hub)  # a hub backbone's (unread) tiny block, as the flat keys had it
    assert "tiny" not in flat and (
        (flat["hidden_size"], flat["vocab_size"], flat["code_token_side"]) == (256, 4096, "output"))
    tiny_l = legacy_layout("backbone", OmegaConf.to_container(_compose(["backbone=tiny_l"]).backbone))
    assert (tiny_l["hidden_size"], tiny_l["num_layers"], tiny_l["vocab_size"]) == (384, 6, 4096)
    assert legacy_layout("backbone", flat) == flat  # the old layout comes back unchanged
    run = OmegaConf.to_container(_compose(["test_sets=codiesp", "docs=mdace_profee"]), resolve=True)
    old = legacy_config(run)
    assert old["docs"]["subset"] == "Profee" and old["docs"]["n_train"] == 120 and "mdace" not in old["docs"]
    assert old["test_sets"]["codiesp_en"]["language"] == "en" and old["train"]["loss_positions"] == "answer"


@pytest.mark.parametrize("argv,message", [
    (["train.loss_positions=all"], "train.loss_positions was removed (every run uses answer)"),
    (["+backbone.code_token_side=both"], "backbone.code_token_side was removed (every run uses output)"),
    (["docs.n_train=16"], "docs.n_train is now docs.demo.n_train: write docs.demo.n_train=16"),
    (["backbone.hidden_size=32"], "backbone.hidden_size is now backbone.tiny.hidden_size"),
    (["docs.language=en"], "docs.language is now docs.codiesp.language"),
    (["test_sets.mdace.subset=Profee"], "test_sets.mdace.subset is now test_sets.mdace.mdace.subset"),
    (["+experiment=table1_ccl_he"], "experiment=table1_ccl_he was removed: use +experiment=table1_ccl"),
])
def test_moved_and_retired_keys_name_their_replacement(argv, message):
    from ccl.config import check_retired, compose_config

    with pytest.raises(ValueError, match=re.escape(message)):
        check_retired(["hydra.run.dir=x", "--multirun", *argv])
    with pytest.raises(ValueError, match=re.escape(message)):
        compose_config(argv)  # ccl.bench, ccl.cli.stats, ...
    check_retired(["docs.demo.n_train=16", "train.lr=1e-3", "+experiment=table1_ccl"])  # current keys: fine


def test_a_moved_key_is_one_line_on_the_command_line(capsys):
    from test_run_folder import one_line_error

    from ccl.cli.stats import main as stats_main

    with pytest.raises(SystemExit):
        stats_main(["docs.unseen_share=0.5"])
    line = one_line_error(capsys.readouterr().err, "ccl.cli.stats")
    assert "docs.unseen_share is now docs.demo.unseen_share: write docs.demo.unseen_share=0.5" in line
