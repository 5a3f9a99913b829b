"""Log a finished run's results to W&B: metrics, per-code table, prediction sample, artifacts.

Offline unless ``logger.mode`` says otherwise. Privacy: without
``logger.log_note_text`` nothing derived from note text leaves the run folder:
the prediction sample and the predictions artifact keep ids and codes only
(evidence phrases and raw outputs are copied from the note, so they stay out).

:func:`build_payload` gathers everything from the run folder (pure, testable);
:func:`log_run_results` sends it, into the active W&B run if one is open (the
training logger's), else into a new run of the same name with ``job_type=eval``.
Runs are grouped by sweep: ``logger.group`` if the config has it, else
``$CCL_SWEEP_GROUP`` (set by :class:`~ccl.report.callback.ReportCallback`), else
the sweep folder's name when the run folder sits in a Hydra multirun.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccl.data.records import read_documents
from ccl.eval.metrics import per_code_metrics
from ccl.report.collect import RunFolderError, flatten
from ccl.report.unseen import read_predictions
from ccl.utils.run_folder import MODEL_META, RunFolder

GROUP_ENV = "CCL_SWEEP_GROUP"
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


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for a dict, DictConfig or dataclass; ``default`` when absent."""
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    return getter(key, default) if callable(getter) else getattr(cfg, key, default)


def sweep_group(run_dir: Path, logger_cfg: Any = None) -> str | None:
    """The W&B group of a run: config, then ``$CCL_SWEEP_GROUP``, then its multirun folder."""
    group = _get(logger_cfg, "group") or os.environ.get(GROUP_ENV)
    if group:
        return str(group)
    if RunFolder(run_dir).in_sweep():
        return Path(run_dir).resolve().parent.name
    return None


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
    with_text = bool(_get(logger_cfg, "log_note_text", False))
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
        project=str(_get(logger_cfg, "project", "ccl")),
        group=sweep_group(run_dir, logger_cfg),
        mode=str(_get(logger_cfg, "mode", "offline")),
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


def log_run_results(run_dir: str | Path, logger_cfg: Any = None, sample_size: int = 20) -> WandbPayload:
    """Send a run folder's results to W&B (see the module docs); return what was sent."""
    payload = build_payload(run_dir, logger_cfg, sample_size)
    run_dir = Path(run_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.run
    own_run = run is None
    if run is None:
        run = wandb.init(
            project=payload.project, name=payload.name, group=payload.group, job_type="eval",
            config=payload.config, tags=[t for t in payload.tags if t], dir=str(run_dir), mode=payload.mode,
            settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False),
        )
    try:
        run.summary.update(payload.summary)
        run.log({
            "results/per_code": wandb.Table(columns=payload.per_code_columns, data=payload.per_code_rows),
            "results/predictions_sample": wandb.Table(columns=payload.sample_columns, data=payload.sample_rows),
        })
        with tempfile.TemporaryDirectory() as tmp:
            preds = Path(tmp) / RunFolder.predictions
            preds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in payload.predictions_rows),
                             encoding="utf-8")
            artifact = wandb.Artifact(_artifact_name(f"{payload.name}-predictions"), type="predictions")
            artifact.add_file(str(preds))  # copied into W&B's staging area at once
        run.log_artifact(artifact)
        if payload.adapter_dir is not None:
            adapter = wandb.Artifact(_artifact_name(f"{payload.name}-adapter"), type="model")
            # Weights and configs only: a tiny backbone's tokenizer is trained on note
            # text, so tokenizer files stay local unless note text may leave the machine.
            for f in sorted(payload.adapter_dir.iterdir()):
                if f.is_file() and (f.name.startswith("adapter_") or f.name == MODEL_META
                                    or payload.with_text):
                    adapter.add_file(str(f))
            run.log_artifact(adapter)
    finally:
        if own_run:
            run.finish()
    return payload
