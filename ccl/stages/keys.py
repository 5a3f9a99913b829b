"""Content keys of the train and predict stages: what each stage's output depends on.

A stage is skipped on a rerun when its key is unchanged (:class:`ccl.utils.run_folder.StageLedger`).
The settings no key covers are listed once, in
:data:`ccl.utils.run_folder.OUTSIDE_STAGE_KEYS`, which also decides which of them a run
folder's config may change freely.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ccl.config import legacy_layout, trainer_mirrors
from ccl.data.prompts import PROMPT_VERSION
from ccl.generation.engine import guard_applies
from ccl.generation.guards import GUARD_VERSION
from ccl.model.module import OBJECTIVE_VERSION
from ccl.predict.parser import PARSER_VERSION
from ccl.stages.data import DataBundle
from ccl.utils.hashing import hash_obj
from ccl.utils.run_folder import outside_stage_keys


def train_key(cfg: DictConfig, bundle: DataBundle) -> str:
    """Content key of the training stage: data key + everything that shapes the model."""
    parts = {}
    for group in ("backbone", "mix", "train"):
        # In the layout keys were first written in (moved and retired keys as they were then):
        # a key that moved under a block, or an option retired at its only value, keys nothing new.
        values = legacy_layout(group, OmegaConf.to_container(cfg[group], resolve=True))
        parts[group] = {k: v for k, v in values.items() if k not in outside_stage_keys(group)}
    # A trainer argument that restates no train.* key (none today) shapes the fit on its own;
    # only then is the group keyed, so keys written before the group existed stay valid.
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.get("trainer") or {}, resolve=True).items()
               if k not in trainer_mirrors() and k not in outside_stage_keys("trainer")}
    if trainer:
        parts["trainer"] = trainer
    return hash_obj({"data": bundle.key, "task": str(cfg.task), "seed": cfg.seed,
                     "prompts": PROMPT_VERSION, "objective": OBJECTIVE_VERSION, **parts})


def predict_key(cfg: DictConfig, tkey: str) -> str:
    """Content key of the run's own predictions: the model, inference settings, task, parser."""
    infer = {k: v for k, v in legacy_layout("infer", OmegaConf.to_container(cfg.infer, resolve=True)).items()
             if k not in outside_stage_keys("infer")}
    guard = GUARD_VERSION if guard_applies(cfg.infer) else None
    if guard is None:  # vLLM decodes without the guard: the switch does not shape its predictions
        infer.pop("stop_repeated_lines", None)
    return hash_obj({"train": tkey, "infer": infer, "task": str(cfg.task), "parser": PARSER_VERSION,
                     "guard": guard})
