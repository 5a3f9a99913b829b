"""Run folders -> one results table: a row per run, written as Parquet and CSV.

A run folder is what ``ccl.run`` writes: ``config.yaml`` and ``metrics.json``
(required), ``data_manifest.json`` and ``model/ccl_model.json`` (optional). A run
gives a row for its own test split (when ``metrics.json`` scores one) and a row per
extra test set (``test_sets/<name>/metrics.json``, ``test_set=<name>``). A run with
``infer.also_human_evidence`` adds a row per human-evidence result
(``human_evidence/metrics.json``, ``test_sets/<name>/human_evidence/metrics.json``) with
``human_evidence=True``: "CCL + human evidence" of the same model, same backbone and test
set. A row holds a few named columns the analyses use (``recipe``, ``backbone``,
``overall_micro_f1``, ``train_tokens`` ...) and the whole resolved config
flattened under ``cfg.`` (lists as JSON strings). Rates stay fractions in [0, 1];
the tables turn them into percentages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ccl.records import TIERS
from ccl.utils.run_folder import RunFolder

SUBSETS = ("overall", "seen", "unseen")
CODE_METRICS = ("micro_f1", "micro_precision", "micro_recall", "macro_f1", "macro_precision",
                "macro_recall", "n_codes", "tp", "fp", "fn", "dropped_predictions")
EVIDENCE_METRICS = ("exact_precision", "exact_recall", "exact_f1", "overlap_precision",
                    "overlap_recall", "overlap_f1", "n_gold", "n_pred")
TASK_LABELS = {"evidence": "evidence", "codes_only": "codes only", "cot": "CoT"}
METHOD_ORDER = ("zero-shot", "document SFT", "CCL")
RESULTS_STEM = "results"
NAN = float("nan")


class RunFolderError(ValueError):
    """A path is not a readable CCL run folder; the message names the path and the problem."""


def is_run_dir(path: Path) -> bool:
    """A finished run: ``config.yaml`` and ``metrics.json`` side by side."""
    return RunFolder(path).is_finished()


def _natural_key(path: Path) -> list[Any]:
    # Hydra job folders start with the job number: 10_x must sort after 2_x.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders among ``paths``: each is a run folder or is searched recursively for them."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RunFolderError(f"{path}: no such folder")
        if is_run_dir(path):
            runs = [path]
        else:
            runs = sorted({m.parent for m in path.rglob(RunFolder.metrics) if is_run_dir(m.parent)},
                          key=_natural_key)
            if not runs:
                raise RunFolderError(f"{path}: no CCL run folder (config.yaml + metrics.json) in it")
        found += [r.resolve() for r in runs if r.resolve() not in found]
    return found


def incomplete_runs(folder: Path) -> list[Path]:
    """Child folders of a sweep that started a run (``config.yaml``) but wrote no metrics."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # Hidden folders (Hydra's .hydra/ holds a config.yaml too) are never runs.
    return sorted((d for d in folder.iterdir()
                   if d.is_dir() and not d.name.startswith(".") and RunFolder(d).config.is_file()
                   and not RunFolder(d).metrics.is_file()),
                  key=_natural_key)


def _read_json(path: Path, required: bool = True) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise RunFolderError(f"{path}: file not found")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_yaml(path: Path, required: bool = True) -> Any:
    if not path.is_file():
        if required:
            raise RunFolderError(f"{path}: file not found")
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RunFolderError(f"{path}: invalid YAML ({e})") from None


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``a.b.c`` keys; lists become JSON strings (one Parquet type per column)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def active_tiers(spans: dict[str, Any] | None) -> list[str]:
    """The span tiers switched on in a config's ``spans`` node, in tier order."""
    spans = spans or {}
    return [t for t in TIERS if spans.get(t) is not None]


def method_of(train_mode: str, tiers: list[str]) -> str:
    """zero-shot, document SFT (no span pairs) or CCL (documents + span pairs)."""
    if train_mode == "none":
        return "zero-shot"
    return "CCL" if tiers else "document SFT"


def recipe_of(task: str, train_mode: str, tiers: list[str]) -> str:
    """A short label of the training recipe, e.g. ``doc SFT (evidence) + gold + silver``."""
    task_label = TASK_LABELS.get(task, task)
    if train_mode == "none":
        return f"zero-shot {task_label}"
    return f"doc SFT ({task_label})" + "".join(f" + {t}" for t in tiers)


def _sweep_of(run_dir: Path) -> str:
    return run_dir.parent.name if RunFolder(run_dir).in_sweep() else ""


def _train_columns(report: dict[str, Any] | None) -> dict[str, Any]:
    """Training size and time from ``model/ccl_model.json`` (NaN for zero-shot runs)."""
    keys = ("train_steps", "train_seconds", "trainable_params", "total_params", "final_loss",
            "train_tokens", "train_loss_tokens", "train_doc_examples", "train_span_examples",
            "data_epochs", "tokens_per_epoch", "seconds_per_epoch", "tokens_per_second",
            "dataset_doc_tokens", "dataset_span_tokens", "dataset_tokens",
            "dataset_doc_examples", "dataset_span_examples")
    cols: dict[str, Any] = dict.fromkeys(keys, NAN)
    if not report:
        return cols
    plan = report.get("plan") or {}
    total = plan.get("total") or {}
    epochs = [e for name, e in (plan.get("epochs") or {}).items() if name != "warmup"]
    tokenize = report.get("tokenize") or {}
    docs_tok = tokenize.get("docs") or {}
    span_tok = tokenize.get("spans") or {}
    seconds = float(report.get("fit_seconds", NAN))
    tokens = float(total.get("tokens", NAN))
    per_epoch = float(sum(e.get("tokens", 0) for e in epochs) / len(epochs)) if epochs else NAN
    cols.update(
        train_steps=report.get("steps", NAN), train_seconds=seconds,
        trainable_params=report.get("trainable_params", NAN), total_params=report.get("total_params", NAN),
        final_loss=report.get("final_loss", NAN), train_tokens=tokens,
        train_loss_tokens=total.get("loss_tokens", NAN),
        train_doc_examples=(total.get("examples") or {}).get("doc", 0),
        train_span_examples=(total.get("examples") or {}).get("span", 0),
        data_epochs=total.get("data_epochs", len(epochs)), tokens_per_epoch=per_epoch,
        # Time is spent per token: an epoch's share of the fit time is its share of the tokens
        # (the span warm-up, if any, is not an epoch).
        seconds_per_epoch=seconds * per_epoch / tokens if tokens and not math.isnan(per_epoch) else NAN,
        tokens_per_second=tokens / seconds if seconds else NAN,
        dataset_doc_tokens=docs_tok.get("tokens", NAN), dataset_span_tokens=span_tok.get("tokens", 0),
        dataset_doc_examples=sum((docs_tok.get("examples") or {}).values()),
        dataset_span_examples=sum((span_tok.get("examples") or {}).values()),
    )
    cols["dataset_tokens"] = cols["dataset_doc_tokens"] + cols["dataset_span_tokens"]
    return cols


def _read_run_files(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict | None, list]:
    folder = RunFolder(run_dir)
    cfg = _read_yaml(folder.config)
    if not isinstance(cfg, dict) or "backbone" not in cfg:
        raise RunFolderError(f"{folder.config}: not a CCL config (no 'backbone' key)")
    metrics = _read_json(folder.metrics)
    assert metrics is not None
    manifest = _read_json(folder.manifest, required=False) or {}
    train_report = _read_json(folder.model_meta, required=False)
    overrides = _read_yaml(folder.overrides, required=False) or []
    return cfg, metrics, manifest, train_report, overrides


def _metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Code, evidence and label-space columns of one ``metrics.json`` (own split or test set)."""
    row: dict[str, Any] = {"n_docs": metrics.get("n_docs", NAN)}
    for subset in SUBSETS:
        values = metrics["codes"].get(subset) or {}
        row.update({f"{subset}_{k}": values.get(k, NAN) for k in CODE_METRICS})
    evidence = metrics.get("evidence") or {}
    row.update({f"evidence_{k}": evidence.get(k, NAN) for k in EVIDENCE_METRICS})
    label_space = metrics.get("label_space") or {}
    row.update({f"label_space_{k}": label_space.get(k, NAN) for k in ("size", "seen", "unseen")})
    timings = metrics.get("timings_s") or {}
    row.update({f"time_{k}_s": timings.get(k, NAN) for k in ("data", "train", "predict")})
    row.update(_extended_columns(metrics))
    return row


EXTENDED_METRICS = ("category_micro_f1", "chapter_micro_f1", "precision_at_5", "precision_at_8",
                    "precision_at_15", "recall_at_5", "recall_at_8", "recall_at_15", "map_trec",
                    "map_trec_complete", "map_label_space", "tuned_micro_f1")
# metrics.json files written before the two MAPs were told apart call the label-space one "map".
RENAMED_METRICS = {"map": "map_label_space"}


def _extended_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Issue 16's columns: hierarchy and ranking metrics, interval bounds, invalid codes, guidelines."""
    overall = {RENAMED_METRICS.get(k, k): v for k, v in (metrics["codes"].get("overall") or {}).items()}
    row: dict[str, Any] = {f"overall_{k}": overall.get(k, NAN) for k in EXTENDED_METRICS}
    for key, (low, high) in (metrics.get("intervals") or {}).items():
        key = RENAMED_METRICS.get(key, key)
        row[f"ci_low_{key}"], row[f"ci_high_{key}"] = low, high
    row["invalid_code_rate"] = (metrics.get("invalid_codes") or {}).get("invalid_code_rate", NAN)
    for key, value in (metrics.get("guidelines") or {}).items():
        if key != "mode":
            row[f"guideline_{key}"] = value
    return row


_EXPERIMENT = re.compile(r"^\+{0,2}experiment=(.+)$")


def experiment_of(overrides: list, name: str) -> str | None:
    """The experiment config a run was composed with (``+experiment=ablation_row4``).

    Read from the run's ``.hydra/overrides.yaml`` (the last ``experiment=`` override); a run
    folder without that file (kept before issue 23) falls back to its ``name``, which the
    experiment configs set to their own name. A run named otherwise (``name=my_run``, as the
    README advises) is still found by its experiment. None: no experiment override.
    """
    if overrides:
        found = [m.group(1).strip() for o in overrides if (m := _EXPERIMENT.match(str(o).strip()))]
        return found[-1] if found else None
    return name


def _base_row(run_dir: Path, cfg: dict[str, Any], manifest: dict[str, Any], train_report: dict | None,
              overrides: list) -> dict[str, Any]:
    """The columns every row of a run shares: its identity, recipe, data and training."""
    backbone = cfg["backbone"]
    docs = cfg.get("docs") or {}
    infer = cfg.get("infer") or {}
    train = cfg.get("train") or {}
    tiers = active_tiers(cfg.get("spans"))
    mode = str(train.get("mode", "lora"))
    task = str(cfg.get("task", "evidence"))
    split = str(infer.get("split", "test"))
    name = str(cfg.get("name", run_dir.name))
    experiment = experiment_of(overrides, name)
    row_match = re.fullmatch(r"ablation_row(\d+)", experiment or "")
    n_params = backbone.get("n_params")
    if n_params is None and train_report:
        # Base parameters: LoRA adds trainable adapter weights on top of the backbone.
        total, trainable = train_report.get("total_params"), train_report.get("trainable_params", 0)
        n_params = total - trainable if total and mode == "lora" else total

    row: dict[str, Any] = {
        "run_dir": str(run_dir), "run": run_dir.name, "sweep": _sweep_of(run_dir),
        "overrides": " ".join(str(o) for o in overrides),
        "name": name, "experiment": experiment or "",
        "ablation_row": int(row_match.group(1)) if row_match else NAN,
        "task": task, "train_mode": mode, "seed": cfg.get("seed"),
        "backbone": str(backbone.get("name")), "backbone_family": str(backbone.get("family") or ""),
        "n_params": float(n_params) if n_params is not None else NAN,
        "docs": str(docs.get("name", "")), "split": split,
        "test_set": str(docs.get("name", "")) + ("" if split == "test" else f":{split}"),
        "test_set_docs": str(docs.get("name", "")),
        "predictions": str(RunFolder(run_dir).predictions),
        "spans": "+".join(tiers) or "none",
        **{f"span_{t}": t in tiers for t in TIERS},
        "human_evidence": bool(infer.get("human_evidence", False)),
        "method": method_of(mode, tiers), "recipe": recipe_of(task, mode, tiers),
    }
    documents = manifest.get("documents") or {}
    row.update({f"docs_{s}": (documents.get(s) or {}).get("count", 0) for s in ("train", "val", "test")})
    # Same docs name, other settings (n_codes, seed ...) -> another test set: compare by content.
    row["test_hash"] = str((documents.get(split) or {}).get("content_hash", ""))
    span_tiers = manifest.get("span_tiers") or {}
    for tier in TIERS:
        info = span_tiers.get(tier) or {}
        row[f"span_pairs_{tier}"] = info.get("pairs", 0)
        row[f"span_codes_{tier}"] = info.get("codes", 0)
    row.update(_train_columns(train_report))
    row.update(flatten(cfg, "cfg."))
    return row


def _read_part(path: Path) -> dict[str, Any] | None:
    """A test set's or human-evidence result's ``metrics.json``; None when absent."""
    if not path.is_file():
        return None
    part = _read_json(path)
    assert part is not None
    if "overall" not in (part.get("codes") or {}):
        raise RunFolderError(f"{path}: no 'codes.overall' section")
    return part


def _human_evidence_row(row: dict[str, Any], part: dict[str, Any], path: Path) -> dict[str, Any]:
    """The human-evidence twin of a results row, scored from ``part`` (at ``path``)."""
    timings = part.get("timings_s") or {}
    return {**row, **_metric_columns(part), "human_evidence": True,
            "predictions": str(RunFolder(path.parent).predictions),
            "time_predict_s": timings.get("predict_human_evidence", NAN)}


def read_runs(run_dir: str | Path) -> list[dict[str, Any]]:
    """The results-table rows of a run folder: its own test split, then each extra test set,
    then (``infer.also_human_evidence``) each human-evidence result.

    A test set of the config without ``test_sets/<name>/metrics.json`` (predict-only, or
    skipped in human-evidence mode) gives no row, nor does a human-evidence result without
    its ``human_evidence/metrics.json``. A missing or broken file is an error naming it, as
    is a run that scored nothing.
    """
    run_dir = Path(run_dir).resolve()
    folder = RunFolder(run_dir)
    cfg, metrics, manifest, train_report, overrides = _read_run_files(run_dir)
    base = _base_row(run_dir, cfg, manifest, train_report, overrides)
    infer = cfg.get("infer") or {}
    also_human = bool(infer.get("also_human_evidence")) and not infer.get("human_evidence")
    rows, human_rows = [], []
    if "codes" in metrics:
        if "overall" not in metrics["codes"]:
            raise RunFolderError(f"{folder.metrics}: no 'codes.overall' section")
        rows.append({**base, **_metric_columns(metrics)})
        human_path = folder.human_evidence().metrics
        part = _read_part(human_path) if also_human else None
        if part is not None:
            human_rows.append(_human_evidence_row(rows[-1], part, human_path))
    test_manifest = manifest.get("test_sets") or {}
    for name in cfg.get("test_sets") or {}:
        target = folder.test_set(name)
        path = target.metrics
        part = _read_part(path)
        if part is None:
            continue
        info = test_manifest.get(name) or {}
        rows.append({
            **base, **_metric_columns(part),
            "split": str(info.get("split", "test")), "test_set": str(name),
            "test_set_docs": str(info.get("docs") or (cfg["test_sets"][name] or {}).get("name", "")),
            "predictions": str(target.predictions),
            "docs_test": info.get("count", 0), "test_hash": str(info.get("content_hash", "")),
        })
        human_path = target.human_evidence().metrics
        part = _read_part(human_path) if also_human else None
        if part is not None:
            human_rows.append(_human_evidence_row(rows[-1], part, human_path))
    rows = [_ordered(r) for r in rows + human_rows]
    if not rows:
        raise RunFolderError(f"{folder.metrics}: no 'codes.overall' section and no scored test set")
    return rows


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The row of a run folder's own test split (see :func:`read_runs` for its test sets)."""
    run_dir = Path(run_dir).resolve()
    cfg, metrics, manifest, train_report, overrides = _read_run_files(run_dir)
    if "codes" not in metrics or "overall" not in metrics["codes"]:
        raise RunFolderError(f"{run_dir / 'metrics.json'}: no 'codes.overall' section")
    return _ordered({**_base_row(run_dir, cfg, manifest, train_report, overrides), **_metric_columns(metrics)})


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    """The flattened config columns last, after the named ones."""
    return {**{k: v for k, v in row.items() if not k.startswith("cfg.")},
            **{k: v for k, v in row.items() if k.startswith("cfg.")}}


def collect_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The results table of every run folder found under ``paths`` (see :func:`find_run_dirs`):
    a row per run and scored test set (see :func:`read_runs`)."""
    rows = [row for d in find_run_dirs(paths) for row in read_runs(d)]
    return pd.DataFrame(rows)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing Python types (``devices: 1`` in one run, ``auto`` in another) become text."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                out[col] = [None if v is None else str(v) for v in out[col]]
    return out


def write_results(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.parquet`` and ``results.csv`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out_dir / f"{RESULTS_STEM}.parquet", "csv": out_dir / f"{RESULTS_STEM}.csv"}
    _parquet_safe(df).to_parquet(paths["parquet"], index=False)
    df.to_csv(paths["csv"], index=False)
    return paths


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table (``.parquet`` or ``.csv``), or the one inside a report folder."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / f"{RESULTS_STEM}.parquet", path / f"{RESULTS_STEM}.csv"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no {RESULTS_STEM}.parquet or {RESULTS_STEM}.csv in it")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results table not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: expected a .parquet or .csv results table")
