"""``python -m ccl.run``: compose the config, then data -> train -> predict -> eval.

Each stage is keyed by a content hash of what it reads; a rerun in the same run
folder skips finished stages and resumes an interrupted training from its last
checkpoint. ``stage=data`` (or a comma list) runs a subset.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl.config import register_configs
from ccl.inference.parser import PARSER_VERSION
from ccl.stages.data import build_data, print_data_summary
from ccl.utils.hashing import hash_obj
from ccl.utils.stages import StageLedger, parse_stages

log = logging.getLogger(__name__)
register_configs()


def _require_current(ledger: StageLedger, stage: str, key: str, output: str) -> None:
    """Running a later stage alone must not silently use outputs of another config."""
    if ledger.state.get(stage) != key:
        raise RuntimeError(
            f"{output} in this run folder was not made by the current config's {stage} stage "
            f"(its key {ledger.state.get(stage)!r} != {key!r}): include stage {stage} in stage=..."
        )


def _run_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main (tests call run() directly)
        return Path.cwd()


def run(cfg: DictConfig, run_dir: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the configured stages in ``run_dir``; return the metrics (empty if eval did not run)."""
    console = console or Console()
    run_dir = Path(run_dir or _run_dir())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    stages = parse_stages(cfg.stage)
    ledger = StageLedger(run_dir)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    bundle = build_data(cfg, run_dir, console)
    timings["data"] = time.perf_counter() - t
    print_data_summary(bundle, console)
    if ledger.state.get("data") != bundle.key:
        ledger.invalidate_from("data")
        ledger.mark_done("data", bundle.key)
    if stages == ["data"]:
        return {}

    from ccl.stages.predict import predict_stage
    from ccl.stages.train import train_key, train_stage

    tkey = train_key(cfg, bundle)
    model_dir = run_dir / "model"
    def run_stage(name: str, key: str, output: Path, work: Callable[..., Any]) -> None:
        """Skip a stage finished under ``key``; else redo it and everything after it."""
        if ledger.is_done(name, key, [output]):
            console.print(f"[green]{name}[/]: cached ({key}), skipping")
            return
        ledger.invalidate_from(name)
        t = time.perf_counter()
        work(cfg, bundle, run_dir, console)
        timings[name] = time.perf_counter() - t
        ledger.mark_done(name, key)

    if "train" in stages and cfg.train.mode != "none":
        run_stage("train", tkey, model_dir, train_stage)

    if "predict" in stages and "train" not in stages and cfg.train.mode != "none":
        _require_current(ledger, "train", tkey, "model/")
    pkey = hash_obj({"train": tkey, "infer": OmegaConf.to_container(cfg.infer, resolve=True),
                     "task": str(cfg.task), "parser": PARSER_VERSION})
    preds = run_dir / "predictions.jsonl"
    if "predict" in stages:
        run_stage("predict", pkey, preds, predict_stage)

    metrics: dict[str, Any] = {}
    if "eval" in stages:
        from ccl.stages.evaluate import METRICS, evaluate, print_metrics, read_predictions

        if not preds.exists():
            raise FileNotFoundError(f"{preds}: no predictions to evaluate; run stage=predict first")
        if "predict" not in stages:
            _require_current(ledger, "predict", pkey, "predictions.jsonl")
        split = cfg.infer.split
        if not any(d.codes for d in bundle.docs[split]):
            console.print(f"[yellow]eval[/]: the {split} documents have no gold codes (predict-only): "
                          "predictions written, nothing scored")
            return {}
        # With infer.limit only part of the split is scored: its label space is that part's codes.
        label_space = None if cfg.infer.limit else bundle.label_space
        metrics = evaluate(read_predictions(preds), bundle.docs[split], label_space, bundle.seen_codes)
        metrics["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
        metrics["run"] = {"name": cfg.name, "backbone": cfg.backbone.name, "task": cfg.task,
                          "spans": [k for k, v in cfg.spans.items() if v is not None],
                          "human_evidence": bool(cfg.infer.human_evidence)}
        (run_dir / METRICS).write_text(json.dumps(metrics, indent=2))
        ledger.mark_done("eval", pkey)
        print_metrics(metrics, console, title=f"{cfg.name} ({cfg.backbone.name})")
        if str(cfg.logger.kind) == "wandb" and {"train", "predict"} & set(timings):
            from ccl.report.wandb_log import log_run_results

            log_run_results(run_dir, cfg.logger)
    console.print(f"run folder: {run_dir}")
    return metrics


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    # Returned for Hydra sweepers that optimise a value.
    return metrics.get("codes", {}).get("overall", {}).get("micro_f1") if metrics else None


if __name__ == "__main__":
    main()
