"""``python -m ccl.run``: compose the config, then data -> train -> predict -> eval.

Each stage is keyed by a content hash of what it reads; a rerun in the same run
folder skips finished stages and resumes an interrupted training from its last
checkpoint. ``stage=data`` (or a comma list) runs a subset.

``infer.also_human_evidence`` adds human-evidence predictions and metrics of the same
model (``human_evidence/``, ``test_sets/<name>/human_evidence/``); it is left out of
the predict key, so switching it on for a finished run predicts those only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ccl.cli_errors import cli_errors, hydra_debug_flag
from ccl.config import UnknownConfigKey, check_closed, register_configs
from ccl.inference.engine import guard_applies
from ccl.inference.guards import GUARD_VERSION
from ccl.inference.parser import PARSER_VERSION
from ccl.stages.data import build_data, print_data_summary
from ccl.utils.hashing import hash_obj
from ccl.utils.run_folder import (
    KeepHydraFiles,
    RunLock,
    RunRefused,
    StaleStageOutput,
    check_config,
    merged_stage,
)
from ccl.utils.stages import StageLedger, parse_stages, write_json_atomic

if TYPE_CHECKING:
    from ccl.stages.predict import Target

log = logging.getLogger(__name__)
register_configs()


def _require_current(ledger: StageLedger, stage: str, key: str, output: str, entry: str | None = None) -> None:
    """Running a later stage alone must not silently use outputs of another config.

    ``entry`` is the ledger entry when it is not the stage's name (``predict@NAME``).
    """
    found = ledger.state.get(entry or stage)
    if found != key:
        raise StaleStageOutput(
            f"{output} in this run folder was not made by the current config's {stage} stage "
            f"(its key {found!r} != {key!r}): include stage {stage} in stage=..."
        )


# Infer settings that do not shape a target's predictions (each extra mode has its own key).
_NOT_IN_PREDICT_KEY = ("also_human_evidence", "gpu_memory_utilization")


def predict_key(cfg: DictConfig, tkey: str) -> str:
    """Content key of the run's own predictions: the model, inference settings, task, parser."""
    infer = {k: v for k, v in OmegaConf.to_container(cfg.infer, resolve=True).items()
             if k not in _NOT_IN_PREDICT_KEY}
    guard = GUARD_VERSION if guard_applies(cfg.infer) else None
    if guard is None:  # vLLM decodes without the guard: the switch does not shape its predictions
        infer.pop("stop_repeated_lines", None)
    return hash_obj({"train": tkey, "infer": infer, "task": str(cfg.task), "parser": PARSER_VERSION,
                     "guard": guard})


def _evaluate(
    cfg: DictConfig, bundle: Any, targets: list[Target], ledger: StageLedger, eval_only: bool, console: Console
) -> dict[str, Any]:
    """Score each target: the run's own split at the top level, test sets under ``test_sets``,
    human-evidence copies likewise under ``human_evidence``.

    Empty when nothing could be scored (no target has gold codes).
    """
    from ccl.stages.evaluate import evaluate, print_metrics, read_predictions
    from ccl.stages.predict import truncated_answers

    metrics: dict[str, Any] = {}
    threshold, vocabulary = _tuning(cfg, bundle, targets, ledger, eval_only)
    for target in targets:
        if target.tuning:
            continue
        where = target.predictions.relative_to(ledger.path.parent).as_posix()
        if not target.predictions.exists():
            raise FileNotFoundError(f"{target.predictions}: no predictions to evaluate; run stage=predict first")
        if eval_only:
            _require_current(ledger, "predict", target.key, where, target.stage)
        if not any(d.codes for d in target.docs):
            console.print(f"[yellow]eval[/]: {target.label} has no gold codes (predict-only): "
                          "predictions written, nothing scored")
            if target.name is not None or target.extra:
                (target.out_dir / "metrics.json").unlink(missing_ok=True)
            continue
        # With infer.limit only part of a split is scored: its label space is that part's codes.
        label_space = bundle.label_space if target.name is None and not cfg.infer.limit else target.label_space
        rows = read_predictions(target.predictions)
        result = evaluate(rows, target.docs, label_space, bundle.seen_codes,
                          bundle.tab, cfg.get("eval"), vocabulary, threshold)
        result["n_truncated_answers"] = truncated_answers(rows)  # answers cut by the length bound
        title = f"{cfg.name} ({cfg.backbone.name})"
        # The human-evidence copies mirror the layout of the normal results under "human_evidence".
        into = metrics.setdefault("human_evidence", {}) if target.extra else metrics
        if target.name is None:
            into.update(result)
        else:
            info = bundle.manifest.get("test_sets", {}).get(target.name, {})
            result["test_set"] = {"name": target.name, "docs": info.get("docs"), "split": info.get("split"),
                                  "content_hash": info.get("content_hash")}
            into.setdefault("test_sets", {})[target.name] = result
            title += f" on {target.name}"
        print_metrics(result, console, title=title + (", human evidence" if target.extra else ""))
    if metrics.get("human_evidence") == {}:
        del metrics["human_evidence"]
    return metrics


def _tuning(
    cfg: DictConfig, bundle: Any, targets: list[Target], ledger: StageLedger, eval_only: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the threshold tuned on the validation predictions or None, the model's code vocabulary)."""
    from ccl.eval.extended import threshold_from
    from ccl.inference.constrained import allowed_codes
    from ccl.stages.evaluate import read_predictions
    from ccl.stages.train import model_codes

    vocabulary = allowed_codes(model_codes(bundle), bundle.tab)
    for target in targets:
        if target.tuning and target.predictions.exists():
            if eval_only:
                _require_current(ledger, "predict", target.key, "val/predictions.jsonl", target.stage)
            return threshold_from(read_predictions(target.predictions)), vocabulary
    return None, vocabulary


def _write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` of the run, of each test set, and of each human-evidence copy."""
    from ccl.stages.evaluate import METRICS
    from ccl.stages.predict import HUMAN_EVIDENCE_DIR, TEST_SETS_DIR

    shared = {"timings_s": metrics["timings_s"], "run": metrics["run"]}
    human = metrics.get("human_evidence") or {}
    he_run = {**metrics["run"], "human_evidence": True, "also_human_evidence": True}
    # By rename: the report takes an existing metrics.json as a finished result.
    for name, part in metrics.get("test_sets", {}).items():
        write_json_atomic(run_dir / TEST_SETS_DIR / name / METRICS, {**part, **shared})
    for name, part in human.get("test_sets", {}).items():
        write_json_atomic(run_dir / TEST_SETS_DIR / name / HUMAN_EVIDENCE_DIR / METRICS,
                          {**part, **shared, "run": he_run})
    if "codes" in human:
        own = {k: v for k, v in human.items() if k != "test_sets"}
        write_json_atomic(run_dir / HUMAN_EVIDENCE_DIR / METRICS, {**own, **shared, "run": he_run})
    write_json_atomic(run_dir / METRICS, metrics)


def is_main_process() -> bool:
    """Rank 0 of a multi-GPU (DDP) job, or a single process (Lightning sets the rank)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def _run_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main (tests call run() directly)
        return Path.cwd()


def run(cfg: DictConfig, run_dir: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the configured stages in ``run_dir``; return the metrics (empty if eval did not run).

    The folder is locked for the whole run (:class:`ccl.utils.run_folder.RunLock`; a
    second run into it raises ``RunFolderBusy``), and a folder holding another config's
    results raises ``RunFolderConflict`` unless ``overwrite=true``. Keys the schema
    does not declare raise ``UnknownConfigKey``.
    """
    console = console or Console()
    run_dir = Path(run_dir or _run_dir())
    check_closed(cfg)
    stages = parse_stages(cfg.stage)
    if not is_main_process():  # a DDP rank > 0 joins rank 0's training; rank 0 holds the folder
        return _run(cfg, run_dir, console, stages)
    with RunLock(run_dir) as lock:
        if lock.took_over:
            console.print(f"[yellow]run folder[/]: took over the lock of process {lock.took_over}, "
                          "which is no longer running")
        old = check_config(run_dir, cfg)
        record = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        record["stage"] = merged_stage(old, str(cfg.stage))
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(record))
        return _run(cfg, run_dir, console, stages)


def _run(cfg: DictConfig, run_dir: Path, console: Console, stages: list[str]) -> dict[str, Any]:
    """The stages of :func:`run`, in a checked and locked folder."""
    main = is_main_process()  # DDP: rank 0 alone writes the run folder
    ledger = StageLedger(run_dir)
    timings: dict[str, float] = {}

    if "train" in stages and cfg.train.mode != "none":
        from ccl.stages.train import check_launch, check_strategy

        check_strategy(str(cfg.train.strategy))  # before any work is done
        check_launch(cfg.train)
    from ccl.stages.train import rank0_first

    t = time.perf_counter()
    with rank0_first():  # under torchrun, ranks > 0 read the data once rank 0 has built its caches
        bundle = build_data(cfg, run_dir, console) if main else build_data(cfg, run_dir, console, write=False)
    timings["data"] = time.perf_counter() - t
    print_data_summary(bundle, console)
    if main and ledger.state.get("data") != bundle.key:
        ledger.invalidate_from("data")
        ledger.mark_done("data", bundle.key)
    if stages == ["data"]:
        return {}

    from ccl.stages.predict import clear_outputs, predict_stage, prediction_targets
    from ccl.stages.train import rank0_decision, train_key, train_stage

    tkey = train_key(cfg, bundle)
    model_dir = run_dir / "model"
    def run_stage(name: str, key: str, output: Path, work: Callable[..., Any]) -> None:
        """Skip a stage finished under ``key``; else redo it and everything after it."""
        # Under torchrun all ranks skip or all work: rank 0's ledger decides (else ranks > 0
        # would wait in fit for a rank 0 that skipped it).
        cached = rank0_decision(is_main_process() and ledger.is_done(name, key, [output]))
        if not is_main_process():  # a DDP rank > 0 joins the training; the ledger is rank 0's
            if not cached:
                work(cfg, bundle, run_dir, console)
            return
        if cached:
            console.print(f"[green]{name}[/]: cached ({key}), skipping")
            return
        ledger.invalidate_from(name)
        t = time.perf_counter()
        work(cfg, bundle, run_dir, console)
        timings[name] = time.perf_counter() - t
        ledger.record_seconds(name, timings[name])
        ledger.mark_done(name, key)

    if "train" in stages and cfg.train.mode != "none":
        run_stage("train", tkey, model_dir, train_stage)

    if not is_main_process():
        return {}  # multi-GPU: every rank trains, rank 0 alone saves, predicts and scores

    if "predict" in stages and "train" not in stages and cfg.train.mode != "none":
        _require_current(ledger, "train", tkey, "model/")
    pkey = predict_key(cfg, tkey)
    if cfg.infer.human_evidence and cfg.infer.also_human_evidence:
        console.print("[yellow]infer.also_human_evidence[/]: ignored, infer.human_evidence=true already "
                      "makes the run's predictions human-evidence ones")
    targets = prediction_targets(cfg, bundle, run_dir, pkey) if {"predict", "eval"} & set(stages) else []
    if targets:
        from ccl.stages.predict import tuning_target

        targets += [t for t in [tuning_target(cfg, bundle, run_dir, pkey)] if t is not None]
    for target in targets:
        if target.skip:
            console.print(f"[yellow]{target.label}[/]: skipped: {target.skip}")
            clear_outputs(target)
            ledger.state.pop(target.stage, None)
    active = [t for t in targets if not t.skip]

    if "predict" in stages:
        pending = [t for t in active if not ledger.is_done(t.stage, t.key, [t.predictions])]
        for target in active:
            if target not in pending:
                console.print(f"[green]predict[/] ({target.label}): cached ({target.key}), skipping")
        if pending:
            # Predictions of the run's own split feed its eval; a new test set (or a
            # human-evidence copy) only its own.
            ledger.invalidate_from("predict" if any(t.name is None and not t.extra for t in pending) else "eval")
            last = time.perf_counter()

            def done(target: Target) -> None:
                # Human-evidence predictions are timed apart (the model load counts to the first target).
                nonlocal last
                now = time.perf_counter()
                part = "predict_human_evidence" if target.extra else "predict"
                timings[part] = timings.get(part, 0.0) + now - last
                ledger.record_seconds(part, timings[part])
                last = now
                ledger.mark_done(target.stage, target.key)

            predict_stage(cfg, bundle, run_dir, console, pending, on_done=done)

    metrics: dict[str, Any] = {}
    if "eval" in stages:
        metrics = _evaluate(cfg, bundle, active, ledger, "predict" not in stages, console)
        if not metrics:
            console.print(f"run folder: {run_dir}")
            return {}
        # Stages skipped as cached report the time they took when they ran.
        metrics["timings_s"] = {**ledger.seconds, **{k: round(v, 1) for k, v in timings.items()}}
        metrics["stages_run"] = sorted(timings)  # what this invocation ran (the rest was cached)
        metrics["run"] = {"name": cfg.name, "backbone": cfg.backbone.name, "task": cfg.task,
                          "spans": [k for k, v in cfg.spans.items() if v is not None],
                          "human_evidence": bool(cfg.infer.human_evidence)}
        _write_metrics(run_dir, metrics)
        ledger.mark_done("eval", pkey)
        if str(cfg.logger.kind) == "wandb" and {"train", "predict", "predict_human_evidence"} & set(timings):
            from ccl.report.wandb_log import log_run_results

            log_run_results(run_dir, cfg.logger)
    console.print(f"run folder: {run_dir}")
    return metrics


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # Hydra records each failed job of a sweep itself
        metrics = run(cfg)
    else:
        with cli_errors("ccl.run"):
            try:
                metrics = run(cfg)
            except (RunRefused, UnknownConfigKey):
                KeepHydraFiles.restore()  # refused: the folder stays as it was
                raise
    # Returned for Hydra sweepers that optimise a value.
    return metrics.get("codes", {}).get("overall", {}).get("micro_f1") if metrics else None


if __name__ == "__main__":
    hydra_debug_flag()  # --debug: the full traceback (as HYDRA_FULL_ERROR=1)
    main()
