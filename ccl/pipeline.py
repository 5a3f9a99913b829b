"""The stages of one run, in order: data -> train -> predict -> eval, in a locked run folder.

Each stage is keyed by a content hash of what it reads (:mod:`ccl.stages.keys`); a rerun
in the same folder skips finished stages (the ledger, ``stages.json``) and resumes an
interrupted training from its last checkpoint. ``python -m ccl.run`` (:mod:`ccl.run`)
checks and locks the folder, then calls :func:`run_stages`.

``infer.also_human_evidence`` adds human-evidence predictions and metrics of the same
model (``human_evidence/``, ``test_sets/<name>/human_evidence/``); it is left out of
the predict key, so switching it on for a finished run predicts those only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from ccl.config import check_trainer
from ccl.eval.extended import threshold_from
from ccl.predict.constrained import allowed_codes
from ccl.records import read_predictions
from ccl.stages.data import DataBundle, build_data, print_data_summary
from ccl.stages.evaluate import check_complete, evaluate, print_metrics
from ccl.stages.keys import predict_key, train_key
from ccl.stages.predict import (
    Target,
    clear_outputs,
    predict_stage,
    prediction_targets,
    truncated_answers,
    tuning_target,
)
from ccl.stages.train import train_stage
from ccl.utils.atomic import write_json_atomic
from ccl.utils.distributed import (
    check_launch,
    check_strategy,
    is_main_process,
    rank0_decision,
    rank0_first,
)
from ccl.utils.loggers import finish_wandb_run
from ccl.utils.run_folder import RunFolder, StageLedger, StaleStageOutput, trained_model_meta


def require_current(ledger: StageLedger, stage: str, key: str, output: str, entry: str | None = None) -> None:
    """Running a later stage alone must not silently use outputs of another config.

    ``entry`` is the ledger entry when it is not the stage's name (``predict@NAME``).
    Raises :class:`StaleStageOutput` naming the output and the stage to include.
    """
    found = ledger.state.get(entry or stage)
    if found != key:
        raise StaleStageOutput(
            f"{output} in this run folder was not made by the current config's {stage} stage "
            f"(its key {found!r} != {key!r}): include stage {stage} in stage=..."
        )


def run_stages(cfg: DictConfig, run_dir: Path, console: Console, stages: list[str]) -> dict[str, Any]:
    """Run ``stages`` of ``cfg`` in a checked and locked ``run_dir``; the metrics (empty when
    eval did not run or scored nothing)."""
    return Pipeline(cfg, RunFolder(run_dir), console, stages).run()


class Pipeline:
    """One invocation's stages over one run folder: the ledger, the data and the timings."""

    def __init__(self, cfg: DictConfig, folder: RunFolder, console: Console, stages: list[str]) -> None:
        self.cfg, self.folder, self.console, self.stages = cfg, folder, console, stages
        self.main = is_main_process()  # DDP: rank 0 alone writes the run folder
        self.ledger = StageLedger(folder.root)
        self.timings: dict[str, float] = {}
        self.bundle: DataBundle | None = None

    @property
    def trains(self) -> bool:
        """Whether this run trains a model (``train.mode`` other than ``none``)."""
        return self.cfg.train.mode != "none"

    def run(self) -> dict[str, Any]:
        """Run the chosen stages in order (data, train, predict, evaluate), each skipped when
        the ledger holds its key; return the run's metrics (``metrics.json``).

        The W&B run the stages opened (one per invocation: the training logger's, which the
        results then go to) is closed at the end, marked failed when a stage raised.
        """
        try:
            metrics = self._run()
        except BaseException:
            with contextlib.suppress(Exception):  # the stage's error is the one to report
                finish_wandb_run(exit_code=1)
            raise
        finish_wandb_run()
        return metrics

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        if "train" in self.stages and self.trains:
            check_strategy(str(cfg.train.strategy))  # before any work is done
            check_trainer(cfg)
            check_launch(cfg.train)
        bundle = self.data()
        if self.stages == ["data"]:
            return {}
        tkey = train_key(cfg, bundle)
        if "train" in self.stages and self.trains:
            self.train(tkey)
        if not is_main_process():
            return {}  # multi-GPU: every rank trains, rank 0 alone saves, predicts and scores
        if "predict" in self.stages and "train" not in self.stages and self.trains:
            require_current(self.ledger, "train", tkey, f"{RunFolder.model}/")
        pkey = predict_key(cfg, tkey)
        active = self.targets(pkey)
        if "predict" in self.stages:
            self.predict(active)
        metrics: dict[str, Any] = {}
        if "eval" in self.stages:
            metrics = self.evaluate(active, pkey)
        self.console.print(f"run folder: {self.folder.root}")
        return metrics

    # ---------------------------------------------------------------- data and train

    def data(self) -> DataBundle:
        """The data stage: documents, span tiers and the manifest (rank 0 first under DDP)."""
        cfg, run_dir, console = self.cfg, self.folder.root, self.console
        t = time.perf_counter()
        with rank0_first():  # under torchrun, ranks > 0 read the data once rank 0 has built its caches
            bundle = build_data(cfg, run_dir, console) if self.main else build_data(cfg, run_dir, console, write=False)
        self.timings["data"] = time.perf_counter() - t
        print_data_summary(bundle, console)
        if self.main and self.ledger.state.get("data") != bundle.key:
            self.ledger.invalidate_from("data")
            self.ledger.mark_done("data", bundle.key)
        self.bundle = bundle
        return bundle

    def train(self, key: str) -> None:
        """Skip a training finished under ``key``; else redo it and invalidate what follows."""

        work: Callable[..., Any] = train_stage
        args = (self.cfg, self.bundle, self.folder.root, self.console)
        # Under torchrun all ranks skip or all work: rank 0's ledger decides (else ranks > 0
        # would wait in fit for a rank 0 that skipped it).
        cached = rank0_decision(is_main_process() and self.ledger.is_done("train", key, [self.folder.model]))
        if not is_main_process():  # a DDP rank > 0 joins the training; the ledger is rank 0's
            if not cached:
                work(*args)
            return
        if cached:
            trained_model_meta(self.folder.root)  # a cut or changed model file is named, not skipped over
            self.console.print(f"[green]train[/]: cached ({key}), skipping")
            return
        self.ledger.invalidate_from("train")
        t = time.perf_counter()
        work(*args)
        self.timings["train"] = time.perf_counter() - t
        self.ledger.record_seconds("train", self.timings["train"])
        self.ledger.mark_done("train", key)

    # ---------------------------------------------------------------- predict

    def targets(self, pkey: str) -> list[Target]:
        """The prediction targets not skipped; a skipped one loses its earlier outputs."""
        cfg, bundle = self.cfg, self.bundle
        if cfg.infer.human_evidence and cfg.infer.also_human_evidence:
            self.console.print("[yellow]infer.also_human_evidence[/]: ignored, infer.human_evidence=true "
                               "already makes the run's predictions human-evidence ones")
        if not {"predict", "eval"} & set(self.stages):
            return []
        targets = prediction_targets(cfg, bundle, self.folder.root, pkey)
        if targets:
            targets += [t for t in [tuning_target(cfg, bundle, self.folder.root, pkey)] if t is not None]
        for target in targets:
            if target.skip:
                self.console.print(f"[yellow]{target.label}[/]: skipped: {target.skip}")
                clear_outputs(target)
                self.ledger.state.pop(target.stage, None)
        return [t for t in targets if not t.skip]

    def predict(self, active: list[Target]) -> None:
        """Predict every target in ``active`` whose predictions the ledger does not hold."""
        pending = [t for t in active if not self.ledger.is_done(t.stage, t.key, [t.predictions])]
        for target in active:
            if target not in pending:
                self.console.print(f"[green]predict[/] ({target.label}): cached ({target.key}), skipping")
        if not pending:
            return
        # Predictions of the run's own split feed its eval; a new test set (or a
        # human-evidence copy) only its own.
        self.ledger.invalidate_from("predict" if any(t.name is None and not t.extra for t in pending) else "eval")
        self._last = time.perf_counter()
        predict_stage(self.cfg, self.bundle, self.folder.root, self.console, pending, on_done=self._predicted)

    def _predicted(self, target: Target) -> None:
        """Time and mark a finished target (human-evidence predictions are timed apart; the
        model load counts to the first target)."""
        now = time.perf_counter()
        part = "predict_human_evidence" if target.extra else "predict"
        self.timings[part] = self.timings.get(part, 0.0) + now - self._last
        self.ledger.record_seconds(part, self.timings[part])
        self._last = now
        self.ledger.mark_done(target.stage, target.key)

    # ---------------------------------------------------------------- eval

    def evaluate(self, active: list[Target], pkey: str) -> dict[str, Any]:
        """Score the targets' predictions and write their ``metrics.json``; return the run's own."""
        cfg, timings = self.cfg, self.timings
        metrics = score_targets(cfg, self.bundle, active, self.ledger, "predict" not in self.stages, self.console)
        if not metrics:
            return {}
        # Stages skipped as cached report the time they took when they ran.
        metrics["timings_s"] = {**self.ledger.seconds, **{k: round(v, 1) for k, v in timings.items()}}
        metrics["stages_run"] = sorted(timings)  # what this invocation ran (the rest was cached)
        metrics["run"] = {"name": cfg.name, "backbone": cfg.backbone.name, "task": cfg.task,
                          "spans": [k for k, v in cfg.spans.items() if v is not None],
                          "human_evidence": bool(cfg.infer.human_evidence)}
        write_metrics(self.folder, metrics)
        self.ledger.mark_done("eval", pkey)
        if str(cfg.logger.kind) == "wandb" and {"train", "predict", "predict_human_evidence"} & set(timings):
            # local import: ccl.report.wandb_log imports pandas; only wandb runs need it
            from ccl.report.wandb_log import log_run_results

            log_run_results(self.folder.root, cfg.logger)
        return metrics


def score_targets(
    cfg: DictConfig, bundle: Any, targets: list[Target], ledger: StageLedger, eval_only: bool, console: Console
) -> dict[str, Any]:
    """Score each target: the run's own split at the top level, test sets under ``test_sets``,
    human-evidence copies likewise under ``human_evidence``.

    Empty when nothing could be scored (no target has gold codes).
    """

    metrics: dict[str, Any] = {}
    threshold, vocabulary = _tuning(cfg, bundle, targets, ledger, eval_only)
    for target in targets:
        if target.tuning:
            continue
        where = target.predictions.relative_to(ledger.path.parent).as_posix()
        if not target.predictions.exists():
            raise FileNotFoundError(f"{target.predictions}: no predictions to evaluate; run stage=predict first")
        if eval_only:
            require_current(ledger, "predict", target.key, where, target.stage)
        if not any(d.codes for d in target.docs):
            console.print(f"[yellow]eval[/]: {target.label} has no gold codes (predict-only): "
                          "predictions written, nothing scored")
            if target.name is not None or target.extra:
                target.folder.metrics.unlink(missing_ok=True)
            continue
        # With infer.limit only part of a split is scored: its label space is that part's codes.
        label_space = bundle.label_space if target.name is None and not cfg.infer.limit else target.label_space
        rows = read_predictions(target.predictions)
        check_complete(target.predictions, rows, target.docs)
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

    vocabulary = allowed_codes(bundle.code_vocabulary(), bundle.tab)
    for target in targets:
        if target.tuning and target.predictions.exists():
            if eval_only:
                where = f"{RunFolder.TUNING}/{RunFolder.predictions}"
                require_current(ledger, "predict", target.key, where, target.stage)
            return threshold_from(read_predictions(target.predictions)), vocabulary
    return None, vocabulary


def write_metrics(folder: RunFolder, metrics: dict[str, Any]) -> None:
    """``metrics.json`` of the run, of each test set, and of each human-evidence copy.

    By rename: the report takes an existing ``metrics.json`` as a finished result.
    """
    shared = {"timings_s": metrics["timings_s"], "run": metrics["run"]}
    human = metrics.get("human_evidence") or {}
    he_run = {**metrics["run"], "human_evidence": True, "also_human_evidence": True}
    for name, part in metrics.get("test_sets", {}).items():
        write_json_atomic(folder.test_set(name).metrics, {**part, **shared})
    for name, part in human.get("test_sets", {}).items():
        write_json_atomic(folder.test_set(name).human_evidence().metrics, {**part, **shared, "run": he_run})
    if "codes" in human:
        own = {k: v for k, v in human.items() if k != "test_sets"}
        write_json_atomic(folder.human_evidence().metrics, {**own, **shared, "run": he_run})
    write_json_atomic(folder.metrics, metrics)
