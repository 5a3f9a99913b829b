"""One run folder, one config, one writer.

``python -m ccl.run`` writes into ``outputs/NAME`` (``name=...`` or the experiment's
name picks the folder; ``hydra.run.dir=...`` any other). Two rules keep a folder's
files from one config and one process:

* :class:`RunLock` -- a run holds ``.ccl.lock`` for its whole duration; a second run
  into the same folder stops at once, naming the holder's PID.
* :func:`check_config` -- a folder whose ``config.yaml`` holds another resolved
  config (other than in :data:`FREE_KEYS`) is refused, naming the differing keys,
  unless ``overwrite=true``; then its old ``metrics.json`` files are removed before
  any work, so a half-replaced folder is never taken for a finished result, and
  each stage whose content key changed reruns (``stages.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from ccl.config import current_key, legacy_config, trainer_mirrors
from ccl.utils.atomic import write_json_atomic, write_text_atomic
from ccl.utils.processes import process_alive
from ccl.utils.stages import STAGES, parse_stages
from ccl.utils.verify import DamagedFile, check_folder, read_json

MODEL_META = "ccl_model.json"  # under model/: how to rebuild the trained model


class _Entry:
    """A file or folder of a run folder: its name when read on the class
    (``RunFolder.metrics == "metrics.json"``), its path when read on a folder."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, folder: RunFolder | None, owner: type | None = None) -> Any:
        return self.name if folder is None else folder.root / self.name


class RunFolder:
    """The file layout of a run folder: the one place its names are written down.

    A run folder holds ``config.yaml`` (resolved), ``data_manifest.json``, ``data/`` (the
    records), ``model/`` (weights or adapter and ``ccl_model.json``), ``stages.json`` and
    ``stage_seconds.json`` (the ledger), and the results of each prediction target:
    ``predictions.jsonl`` and ``metrics.json`` at the top for the run's own split, under
    ``test_sets/<name>/`` for an extra test set, under ``val/`` for threshold tuning, and
    under ``human_evidence/`` of any of these for its human-evidence copy. A target's
    folder is a :class:`RunFolder` too (:meth:`test_set`, :meth:`human_evidence`,
    :meth:`tuning`), with the same file names.
    """

    config = _Entry("config.yaml")
    manifest = _Entry("data_manifest.json")
    predictions = _Entry("predictions.jsonl")
    metrics = _Entry("metrics.json")
    stages = _Entry("stages.json")
    stage_seconds = _Entry("stage_seconds.json")
    lock = _Entry(".ccl.lock")
    data = _Entry("data")
    model = _Entry("model")
    model_meta = _Entry(f"model/{MODEL_META}")
    checkpoints = _Entry("checkpoints")
    restrict_codes = _Entry("restrict_codes.json")  # the codes restricted decoding allows
    overrides = _Entry(".hydra/overrides.yaml")  # written under the lock (save_hydra_snapshot)
    TEST_SETS = "test_sets"
    HUMAN_EVIDENCE = "human_evidence"
    TUNING = "val"
    MERGED = "merged"  # under model/: the adapter merged into a full model, for vLLM
    SERVED_BASE = "served_base"  # under model/: the base's files (links) + the run's tokenizer, for vLLM + LoRA
    MULTIRUN = "multirun.yaml"  # beside the job folders of a Hydra sweep

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def records(self, split: str) -> Path:
        """``data/<split>.jsonl``: the documents of a split as the data stage wrote them."""
        return self.data / f"{split}.jsonl"

    def spans(self, tier: str) -> Path:
        """``data/spans_<tier>.jsonl``: a span tier's pairs."""
        return self.data / f"spans_{tier}.jsonl"

    def test_set_records(self, name: str) -> Path:
        """``data/test_sets/<name>.jsonl``: the documents of extra test set ``name``."""
        return self.data / self.TEST_SETS / f"{name}.jsonl"

    def test_set(self, name: str) -> RunFolder:
        """The results folder of extra test set ``name``."""
        return RunFolder(self.root / self.TEST_SETS / name)

    def human_evidence(self) -> RunFolder:
        """The results folder of this target's human-evidence copy."""
        return RunFolder(self.root / self.HUMAN_EVIDENCE)

    def tuning(self) -> RunFolder:
        """The results folder of the validation split predicted for threshold tuning."""
        return RunFolder(self.root / self.TUNING)

    def is_finished(self) -> bool:
        """A finished run: ``config.yaml`` and ``metrics.json`` side by side."""
        return self.config.is_file() and self.metrics.is_file()

    def in_sweep(self) -> bool:
        """Whether this folder is a job of a Hydra multirun (``multirun.yaml`` beside it)."""
        return (self.root.parent / self.MULTIRUN).is_file()


# The one record of which config keys no stage's content key covers (ccl/stages/keys.py
# leaves them out of the train and predict keys), and whether a run folder's config may
# differ in them: True for how a run executes or logs; False for what its report shows
# (table labels, the validation loss), kept with the results it describes.
OUTSIDE_STAGE_KEYS: dict[str, bool] = {
    "backbone.family": False, "backbone.n_params": False,
    "train.log_every_n_steps": True, "train.save_every_n_steps": True, "train.val_docs": False,
    "train.devices": True, "train.num_nodes": True, "train.strategy": True, "train.accelerator": True,
    # The same function computed in another order (loss and gradients equal to 1e-5), so a
    # model trained either way is the same model.
    "train.frozen_prefix_cache": True,
    # Human-evidence copies are keyed apart: switching them on adds their own results.
    "infer.also_human_evidence": True,
    "infer.gpu_memory_utilization": False,
    # The trainer group: what builds it and how it logs. Its ``${train.X}`` mirrors are compared
    # (and keyed) as the train.* keys they restate (ccl.config.check_trainer); any other trainer
    # argument is part of the train key (ccl.stages.keys.train_key) and must match here.
    "trainer._target_": True, "trainer.enable_model_summary": True,
}
# Keys that change how a run is executed or logged, never the results already in the folder.
# Test sets are keyed apart too (adding one adds its own results; see config_diff). The trainer
# group's mirrors of train.* are compared as those train.* keys, so a folder written before the
# group existed stays valid.
FREE_KEYS = ("stage", "overwrite", "ckpt_path", "logger", "paths",
             *(f"trainer.{name}" for name in trainer_mirrors()),
             *(key for key, free in OUTSIDE_STAGE_KEYS.items() if free))


def outside_stage_keys(group: str) -> tuple[str, ...]:
    """The keys of config group ``group`` that no stage's content key covers."""
    return tuple(k.split(".", 1)[1] for k in OUTSIDE_STAGE_KEYS if k.split(".", 1)[0] == group)


def trained_model_meta(run_dir: str | Path) -> dict[str, Any]:
    """``model/ccl_model.json`` of a run, after checking every file of ``model/`` against the
    record the train stage wrote (:func:`ccl.utils.verify.folder_problem`).

    Raises :class:`ccl.utils.verify.DamagedFile` naming the cut or changed file and what to do
    (delete ``model/`` and rerun: the train stage is redone); ``FileNotFoundError`` without one.
    """
    folder = RunFolder(run_dir)
    fix = f"delete {folder.model} and rerun ccl.run on this folder (the train stage is redone)"
    if not folder.model.is_dir():
        raise FileNotFoundError(f"{folder.model}: no trained model; run stage=train first")
    check_folder(folder.model, fix, required=(MODEL_META,))
    meta = read_json(folder.model_meta, fix)
    if not isinstance(meta, dict) or "mode" not in meta:
        raise DamagedFile(folder.model_meta, "not a CCL model record", fix)
    return meta


class RunRefused(RuntimeError):
    """A run stopped before writing anything into its folder."""


class RunFolderBusy(RunRefused):
    """Another live process is writing into the run folder."""


class RunFolderConflict(RunRefused):
    """The run folder holds results of another config."""


class StaleStageOutput(RuntimeError):
    """A stage run alone would read outputs that another config's stage wrote."""


HYDRA_SNAPSHOT = ".hydra"  # Hydra's record of a run: config.yaml, hydra.yaml, overrides.yaml


def save_hydra_snapshot(run_dir: Path, cfg: DictConfig) -> None:
    """Write Hydra's record of this run into ``RUN/.hydra/`` (``config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``, as Hydra writes them), by rename; a no-op outside ``@hydra.main``.

    Called under the run folder's lock, after the config check: ``conf/config.yaml`` sets
    ``hydra.output_subdir: null`` so that Hydra itself does not write them before the task
    starts, where a run refused by the lock or the check (or racing the winner) would leave
    its own overrides beside another run's results (the report reads ``overrides.yaml``).
    """
    from hydra.core.hydra_config import HydraConfig

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under @hydra.main
        return
    folder = Path(run_dir) / HYDRA_SNAPSHOT
    write_text_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text_atomic(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
    write_text_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(list(hydra_cfg.overrides.task)))


class RunLock:
    """An exclusive lock on a run folder, held for a whole run (a context manager).

    The lock is ``filelock.FileLock`` on ``RUN/.ccl.lock``: an ``fcntl.flock`` on
    Unix, which the kernel drops when the holding process dies, however it dies
    (``kill -9`` included). A lock file left by a killed run is therefore free and
    is simply taken over; there is no stale lock to clean up by hand. The holder
    writes its PID into ``RUN/.ccl.lock.pid`` so that a refused run can name it
    (``filelock`` truncates the lock file itself on every attempt, so the PID lives
    beside it).

    Raises :class:`RunFolderBusy` at once (no waiting) when a live process holds it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RunFolder.lock
        self.pid_path = self.run_dir / (RunFolder.lock + ".pid")
        self._lock = FileLock(str(self.path), thread_local=False, is_singleton=False)
        self.took_over: int | None = None  # PID of a dead holder whose lock was taken over

    def holder(self) -> int | None:
        """The PID written by the last holder (None when unknown)."""
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous = self.holder()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            who = f"process {previous}" if previous else "another process"
            raise RunFolderBusy(
                f"{self.run_dir}: {who} is writing into this run folder (lock {self.path}). "
                "Wait for it to finish, or give this run another folder (name=OTHER)."
            ) from None
        if previous and previous != os.getpid() and not process_alive(previous):
            self.took_over = previous
        self.pid_path.write_text(f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self.pid_path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``; an empty dict or list is a leaf."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def _free(key: str) -> bool:
    # A ``_target_`` names the code that builds a part (docs._target_, spans.<tier>._target_),
    # never its content: a folder written before parts were registered stays valid.
    return key.endswith("._target_") or any(key == k or key.startswith(k + ".") for k in FREE_KEYS)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (free keys left out).

    A test set only in one of the two is no difference: adding one predicts it alone,
    and a removed one keeps its results in ``test_sets/<name>/``. Both are compared in the layout
    run folders were first written in (:func:`ccl.config.legacy_config`): a key that moved, or an
    option retired at its only value, is no difference.
    """
    a, b = _flat(legacy_config(old)), _flat(legacy_config(new))
    old_sets, new_sets = set(old.get("test_sets") or {}), set(new.get("test_sets") or {})
    shared_sets = old_sets & new_sets

    def compared(key: str) -> bool:
        if _free(key):
            return False
        parts = key.split(".")
        return not (parts[0] == "test_sets" and (len(parts) == 1 or parts[1] not in shared_sets))

    return sorted(k for k in set(a) | set(b) if compared(k) and a.get(k, "<unset>") != b.get(k, "<unset>"))


def _show(value: Any) -> str:
    text = "<unset>" if value == "<unset>" else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 40 else text[:37] + "..."


def check_config(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """Refuse to mix two configs' results in ``run_dir``; return the folder's old config.

    A folder without ``config.yaml``, or in which no stage finished (``stages.json``
    empty: e.g. a run that stopped on a missing file), is new (None). One whose resolved config
    differs in a non-free key raises :class:`RunFolderConflict` naming up to ten
    keys (``key: old -> new``), unless ``cfg.overwrite`` is true: then every old
    ``metrics.json`` (run, test sets, human evidence) is deleted first.
    """
    path = RunFolder(run_dir).config
    if not path.is_file() or not _has_results(Path(run_dir)):
        return None  # new, or a run that failed before any stage finished: nothing to keep
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DamagedFile(path, f"not valid YAML: {' '.join(str(err).split())[:160]}",
                          "delete it (or the whole folder) and rerun, or give this run another folder") from None
    new = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    keys = config_diff(old, new)
    if not keys:
        return old
    if not bool(cfg.get("overwrite", False)):
        a, b = _flat(legacy_config(old)), _flat(legacy_config(new))
        shown = "; ".join(f"{current_key(k)}: {_show(a.get(k, '<unset>'))} -> {_show(b.get(k, '<unset>'))}"
                          for k in keys[:10])
        more = f" (+{len(keys) - 10} more)" if len(keys) > 10 else ""
        raise RunFolderConflict(
            f"{run_dir} holds the results of another config ({shown}{more}). "
            "Give this run its own folder with name=NEW_NAME, or pass overwrite=true to replace them."
        )
    clear_results(run_dir)
    return None


def _has_results(run_dir: Path) -> bool:
    """Whether any stage finished in ``run_dir`` (``stages.json`` names one)."""
    try:
        return bool(json.loads(RunFolder(run_dir).stages.read_text()))
    except (OSError, ValueError):
        return False


def clear_results(run_dir: Path) -> None:
    """Delete every ``metrics.json`` of a run folder (checkpoints are keyed and stay)."""
    for metrics in Path(run_dir).rglob(RunFolder.metrics):
        if RunFolder.checkpoints not in metrics.relative_to(run_dir).parts:
            metrics.unlink()


def merged_stage(old: dict[str, Any] | None, spec: str) -> str:
    """``stage`` to record in ``config.yaml``: every stage whose outputs came from this config.

    A ``stage=data`` rerun of a finished run keeps ``stage: all`` in its ``config.yaml``.
    """
    done: Iterable[str] = parse_stages(spec)
    if old is not None:
        with contextlib.suppress(ValueError):  # an unreadable old value adds nothing
            done = set(done) | set(parse_stages(str(old.get("stage", ""))))
    ordered = [s for s in STAGES if s in set(done)]
    return "all" if ordered == list(STAGES) else "+".join(ordered)


class StageLedger:
    """``stages.json`` in the run folder: stage -> key of its last finished run.

    Beside it, ``stage_seconds.json`` keeps how long each finished stage took, so a
    rerun that skips a cached stage still reports the time it cost.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = RunFolder(run_dir).stages
        self.seconds_path = RunFolder(run_dir).stage_seconds
        fix = "delete it and rerun (the stages it recorded are redone)"
        self.state: dict[str, str] = read_json(self.path, fix) if self.path.exists() else {}
        self.seconds: dict[str, float] = (
            read_json(self.seconds_path, "delete it (it holds the stages' timings only) and rerun")
            if self.seconds_path.exists() else {}
        )

    def record_seconds(self, part: str, seconds: float) -> None:
        """Remember the time of ``part`` (a stage, or a part such as ``predict_human_evidence``)."""
        self.seconds[part] = round(float(seconds), 1)
        write_json_atomic(self.seconds_path, self.seconds)

    def is_done(self, stage: str, key: str, outputs: list[Path]) -> bool:
        return self.state.get(stage) == key and all(Path(p).exists() for p in outputs)

    def mark_done(self, stage: str, key: str) -> None:
        self.state[stage] = key
        write_json_atomic(self.path, self.state)

    def invalidate_from(self, stage: str) -> None:
        """Forget ``stage`` and all later stages (their inputs changed)."""
        later = STAGES[STAGES.index(stage):]
        for s in later:
            self.state.pop(s, None)
        stale = [p for p in self.seconds if p.startswith(later)]
        for p in stale:
            del self.seconds[p]
        if stale:
            write_json_atomic(self.seconds_path, self.seconds)
