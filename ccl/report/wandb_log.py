"""Log a finished run's results to W&B: metrics, per-code table, prediction sample, files.

Offline unless ``logger.mode`` says otherwise. Privacy: without
``logger.log_note_text`` nothing derived from note text leaves the run folder:
the prediction sample and the uploaded predictions keep ids and codes only
(evidence phrases and raw outputs are copied from the note, so they stay out).

:func:`build_payload` gathers everything from the run folder (pure, testable);
:func:`log_run_results` sends it into the run's one W&B run
(:func:`ccl.utils.loggers.wandb_run`: the training logger's when this ``ccl.run``
trained, else a new one, ``job_type=eval``). Runs are grouped by sweep
(:func:`ccl.utils.loggers.sweep_group`).

The predictions (ids and codes) and a LoRA adapter go up as W&B artifacts when the run
is online. An offline run saves them as run files instead (``files/results/``,
``files/model/``): W&B records an artifact's staged files by absolute path, so an
offline run's artifacts only sync from the machine and folder that made them
(wandb/wandb#3098), while run files are read relative to the run's own folder, so
``wandb sync RUN/wandb`` uploads everything from any machine the run folder is copied to.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccl.eval.metrics import per_code_metrics
from ccl.records import read_documents, read_predictions
from ccl.report.collect import RunFolderError, flatten
from ccl.utils.loggers import GROUP_ENV, config_value, sweep_group, wandb_mode, wandb_run
from ccl.utils.run_folder import MODEL_META, RunFolder

__all__ = ["GROUP_ENV", "WandbPayload", "build_payload", "log_run_results", "sweep_group"]
PER_CODE_COLUMNS = ["code", "subset", "support", "tp", "fp", "fn", "precision", "recall", "f1"]
SAMPLE_COLUMNS = ["id", "gold_codes", "predicted_codes", "tp", "fp", "fn", "n_evidence"]
TEXT_COLUMNS = ["evidence", "raw_output", "note"]


@dataclass
class WandbPayload:
    """Everything :func:`log_run_results` sends, gathered from the run folder."""

    name: str
    project: str
    group: str | None
    mode: str
    config: dict[str, Any]
    summary: dict[str, float | int]
    per_code_columns: list[str]
    per_code_rows: list[list[Any]]
    sample_columns: list[str]
    sample_rows: list[list[Any]]
    predictions_rows: list[dict[str, Any]]  # what the predictions artifact holds
    adapter_dir: Path | None
    tags: list[str] = field(default_factory=list)
    with_text: bool = False  # logger.log_note_text: note-derived content may be uploaded


def _notes(run_dir: Path, split: str) -> dict[str, str]:
    path = RunFolder(run_dir).records(split)
    # Note text only where the run kept a copy (copy_notes=true); references have none.
    return {d.id: d.text for d in read_documents(path, need_text=False) if d.text} if path.is_file() else {}


def build_payload(run_dir: str | Path, logger_cfg: Any = None, sample_size: int = 20) -> WandbPayload:
    """Gather the metrics, per-code rows, prediction sample and artifact contents of a run folder."""
    run_dir = Path(run_dir)
    cfg_path, metrics_path = RunFolder(run_dir).config, RunFolder(run_dir).metrics
    for path in (cfg_path, metrics_path):
        if not path.is_file():
            raise RunFolderError(f"{path}: file not found (not a finished CCL run folder)")
    config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{metrics_path}: invalid JSON ({e.msg})") from None
    with_text = bool(config_value(logger_cfg, "log_note_text", False))
    # A run scored on its test_sets only (infer.split=null) has no predictions of its own.
    own = RunFolder(run_dir).predictions
    preds = read_predictions(own) if own.is_file() or "codes" in metrics else []
    seen = _seen_codes(run_dir)

    summary = {k.replace(".", "/"): v for k, v in flatten(metrics).items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    per_code = per_code_metrics([p["gold_codes"] for p in preds], [p["codes"] for p in preds])
    per_code_rows = [[code, "seen" if code in seen else "unseen",
                      *(m[k] for k in PER_CODE_COLUMNS[2:])] for code, m in per_code.items()]

    notes = _notes(run_dir, str(config.get("infer", {}).get("split", "test"))) if with_text else {}
    sample_rows = []
    for p in preds[:sample_size]:
        gold, pred = set(p["gold_codes"]), set(p["codes"])
        row = [p["id"], " ".join(p["gold_codes"]), " ".join(p["codes"]), len(gold & pred), len(pred - gold),
               len(gold - pred), len(p.get("evidence") or [])]
        if with_text:
            row += [" | ".join(p.get("evidence") or []), p.get("raw_output", ""), notes.get(p["id"], "")]
        sample_rows.append(row)
    keep = None if with_text else ("id", "codes", "gold_codes")
    predictions_rows = [p if keep is None else {k: p[k] for k in keep if k in p} for p in preds]

    model_dir = RunFolder(run_dir).model
    backbone = (config.get("backbone") or {}).get("name", "")
    return WandbPayload(
        name=f"{config.get('name', run_dir.name)}-{backbone}",
        project=str(config_value(logger_cfg, "project", "ccl")),
        group=sweep_group(run_dir, logger_cfg),
        mode=wandb_mode(logger_cfg),
        config=config,
        summary=summary,
        per_code_columns=list(PER_CODE_COLUMNS),
        per_code_rows=per_code_rows,
        sample_columns=SAMPLE_COLUMNS + (TEXT_COLUMNS if with_text else []),
        sample_rows=sample_rows,
        predictions_rows=predictions_rows,
        # LoRA adapters are small; full checkpoints (GBs) are not uploaded.
        adapter_dir=model_dir if (model_dir / "adapter_config.json").is_file() else None,
        tags=[str(config.get("task", "")), backbone],
        with_text=with_text,
    )


def _seen_codes(run_dir: Path) -> set[str]:
    path = RunFolder(run_dir).records("train")
    return {c for d in read_documents(path, need_text=False) for c in d.codes} if path.is_file() else set()


def _artifact_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def _adapter_files(payload: WandbPayload) -> list[Path]:
    """The adapter files that may leave the machine: weights and configs; a tiny backbone's
    tokenizer is trained on note text, so tokenizer files stay local unless note text may."""
    if payload.adapter_dir is None:
        return []
    return [f for f in sorted(payload.adapter_dir.iterdir())
            if f.is_file() and (f.name.startswith("adapter_") or f.name == MODEL_META or payload.with_text)]


def _predictions_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def log_run_results(run_dir: str | Path, logger_cfg: Any = None, sample_size: int = 20) -> WandbPayload:
    """Send a run folder's results to W&B (see the module docs); return what was sent.

    Logs into the run's one W&B run (:func:`ccl.utils.loggers.wandb_run`), opening it
    when this process has none for ``run_dir``; the caller closes it
    (:func:`ccl.utils.loggers.finish_wandb_run`), as the pipeline does.
    Raises :class:`~ccl.report.collect.RunFolderError` for a folder without results.
    """
    payload = build_payload(run_dir, logger_cfg, sample_size)
    run_dir = Path(run_dir)
    import wandb

    run = wandb_run(run_dir, logger_cfg, payload.name, payload.config, job_type="eval", tags=payload.tags)
    run.summary.update(payload.summary)
    run.log({
        "results/per_code": wandb.Table(columns=payload.per_code_columns, data=payload.per_code_rows),
        "results/predictions_sample": wandb.Table(columns=payload.sample_columns, data=payload.sample_rows),
    })
    adapter_files = _adapter_files(payload)
    if payload.mode != "online":  # offline: run files; disabled: nothing is kept
        _save_run_files(run, payload, adapter_files)
        return payload
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / RunFolder.predictions
        preds.write_text(_predictions_jsonl(payload.predictions_rows), encoding="utf-8")
        artifact = wandb.Artifact(_artifact_name(f"{payload.name}-predictions"), type="predictions")
        artifact.add_file(str(preds))  # copied into W&B's staging area (RUN/wandb/data) at once
    run.log_artifact(artifact)
    if adapter_files:
        adapter = wandb.Artifact(_artifact_name(f"{payload.name}-adapter"), type="model")
        for f in adapter_files:
            adapter.add_file(str(f))
        run.log_artifact(adapter)
    return payload


def _save_run_files(run: Any, payload: WandbPayload, adapter_files: list[Path]) -> None:
    """An offline run's predictions and adapter as run files (``files/results/``,
    ``files/model/``), copied (or hard-linked) into the run: the run folder syncs from anywhere."""
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "results" / RunFolder.predictions
        preds.parent.mkdir()
        preds.write_text(_predictions_jsonl(payload.predictions_rows), encoding="utf-8")
        run.save(str(preds), base_path=tmp, policy="now", glob=False)
    for f in adapter_files:
        run.save(str(f), base_path=str(f.parent.parent), policy="now", glob=False)
