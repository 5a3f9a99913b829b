"""Fault injection (issue 25): torn checkpoints, damaged caches and run-folder files, full disks,
bad config values and bad input each give one clear line, and nothing broken is trusted.

Each case damages one thing a real failure damages (a cut file, a line less, ``ENOSPC`` from the
file system, a wrong value) and checks the contract: a one-line error naming the file or key and
what to do, no traceback, and no silently wrong result (a rerun rebuilds or refuses, never reads
the damaged thing as whole). A real full disk (a 15 MB tmpfs) runs under ``-m slow`` where this
machine lets a test mount one.
"""

from __future__ import annotations

import errno
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from test_run import compose_cfg
from test_run_folder import one_line_error

from ccl.run import run
from ccl.utils.checkpoints import checkpoint_problem

QUICK = ("+experiment=ablation_row4", "train.max_steps=2", "train.save_every_n_steps=1",
         "eval.bootstrap_resamples=0", "audit.enabled=false")


def console() -> Console:
    """A console whose text the test reads back (``.file.getvalue()``), wide enough for one line."""
    return Console(file=io.StringIO(), width=400, color_system=None)


def said(con: Console) -> str:
    return con.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run folder after ``stage=data+train`` (two steps, a checkpoint after each), with a cache
    of its own (these tests damage cache entries)."""
    base = tmp_path_factory.mktemp("faults")
    folder = base / "run"
    run(compose_cfg(base, *QUICK, f"paths.cache_dir={base / 'cache'}", "stage=data+train"), folder, console())
    return {"base": base, "dir": folder}


def copy_run(trained: dict, tmp_path: Path) -> Path:
    """A private copy of the trained run folder (its lock file left behind)."""
    out = tmp_path / "run"
    shutil.copytree(trained["dir"], out, ignore=shutil.ignore_patterns(".ccl.lock*"))
    return out


def cfg_for(trained: dict, *overrides: str):
    return compose_cfg(trained["base"], *QUICK, f"paths.cache_dir={trained['base'] / 'cache'}", *overrides)


def forget(folder: Path, stage: str) -> None:
    """Make the ledger forget ``stage`` (as an interrupted run leaves it)."""
    path = folder / "stages.json"
    state = json.loads(path.read_text())
    state.pop(stage, None)
    path.write_text(json.dumps(state))


# ------------------------------------------------------------------ 1. checkpoints


@pytest.mark.parametrize("damage", ["cut_8_bytes", pytest.param("cut_half", marks=pytest.mark.slow),
                                    pytest.param("garbage", marks=pytest.mark.slow)])
def test_a_torn_checkpoint_is_set_aside_in_one_line_and_training_starts_over(trained, tmp_path, damage):
    folder = copy_run(trained, tmp_path)
    [last] = folder.glob("checkpoints/*/last.ckpt")
    data = last.read_bytes()
    last.write_bytes({"cut_8_bytes": data[:-8], "cut_half": data[: len(data) // 2], "garbage": b"x" * 100}[damage])
    forget(folder, "train")
    con = console()
    run(cfg_for(trained, "stage=data+train"), folder, con)
    lines = [line for line in said(con).splitlines() if "damaged" in line]
    assert len(lines) == 1 and str(last) in lines[0] and "last.ckpt.corrupt" in lines[0], said(con)
    assert lines[0].endswith("training starts over") and "resuming from" not in said(con)
    assert (last.parent / "last.ckpt.corrupt").is_file()
    assert checkpoint_problem(last) is None  # the new training wrote a whole one
    assert not list(last.parent.glob(".*.tmp"))


def test_a_good_checkpoint_is_resumed_and_a_given_unreadable_one_is_refused(trained, tmp_path):
    folder = copy_run(trained, tmp_path)
    [last] = folder.glob("checkpoints/*/last.ckpt")
    forget(folder, "train")
    con = console()
    run(cfg_for(trained, "stage=data+train"), folder, con)
    assert f"resuming from {last}" in said(con) and "damaged" not in said(con)
    bad = tmp_path / "given.ckpt"
    bad.write_bytes(last.read_bytes()[:-8])
    forget(folder, "train")
    with pytest.raises(ValueError, match=r"ckpt_path=.*given.ckpt: not a readable checkpoint"):
        run(cfg_for(trained, "stage=data+train", f"ckpt_path={bad}"), folder, console())
    assert bad.is_file()  # the user's own file is never renamed


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(trained, tmp_path, monkeypatch):
    """The disk fills while the second checkpoint is written: one line naming it and its size,
    the first checkpoint stays whole, and the rerun resumes from it."""
    from ccl.utils import atomic
    from ccl.utils.atomic import NoSpaceLeft

    folder = copy_run(trained, tmp_path)
    [last] = folder.glob("checkpoints/*/last.ckpt")
    last.unlink()
    forget(folder, "train")
    real_fdopen, opened = atomic.os.fdopen, []

    class FullDisk(io.FileIO):
        def write(self, data):  # the disk fills after 1 kB
            super().write(bytes(data)[:1024])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, mode="r", *args, **kwargs):
        if "b" in mode:
            opened.append(fd)
            if len(opened) == 2:
                return FullDisk(fd, "wb")
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    with pytest.raises(NoSpaceLeft) as err:
        run(cfg_for(trained, "stage=data+train"), folder, console())
    monkeypatch.undo()
    message = str(err.value)
    assert (str(last) in message and "no space left on device" in message
            and re.search(r"needs about 2\d MB", message)), message
    assert checkpoint_problem(last) is None  # the first checkpoint is whole; no temporary file is left
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    con = console()
    run(cfg_for(trained, "stage=data+train"), folder, con)
    assert f"resuming from {last}" in said(con) and "damaged" not in said(con)


# ------------------------------------------------------------------ 2. caches and run-folder files


def test_a_cache_entry_short_by_one_line_is_rebuilt_not_trusted(trained, tmp_path, caplog):
    """The gold tier's pairs.jsonl loses its last line: the entry no longer matches its own
    record (line count and sha256), so it is rebuilt and the run trains on every pair."""
    [entry] = (trained["base"] / "cache" / "gold").iterdir()
    pairs = entry / "pairs.jsonl"
    whole = pairs.read_text()
    pairs.write_text("".join(whole.splitlines(keepends=True)[:-1]))
    folder = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run(cfg_for(trained, "stage=data"), folder, console())
    n = len(whole.splitlines())
    assert f"pairs.jsonl has {n - 1} lines, its record says {n}): rebuilding it" in caplog.text, caplog.text
    manifest = json.loads((folder / "data_manifest.json").read_text())
    used = (folder / "data" / "spans_gold.jsonl").read_text().splitlines()
    assert manifest["span_tiers"]["gold"]["pairs"] == len(used) == len(whole.splitlines())
    assert pairs.read_text() == whole


@pytest.mark.parametrize("damage", ["cut_5_bytes", pytest.param("one_byte_changed", marks=pytest.mark.slow)])
def test_a_damaged_backbone_cache_entry_is_rebuilt(trained, tmp_path, caplog, damage):
    [entry] = (trained["base"] / "cache" / "backbones").glob("tiny-*")
    tokenizer = entry / "tokenizer.json"
    whole = tokenizer.read_bytes()
    tokenizer.write_bytes(whole[:-5] if damage == "cut_5_bytes" else whole.replace(b'"<pad>"', b'"<pa?>"', 1))
    folder = copy_run(trained, tmp_path)
    forget(folder, "train")
    shutil.rmtree(next(folder.glob("checkpoints")))
    with caplog.at_level("WARNING"):
        run(cfg_for(trained, "stage=data+train"), folder, console())
    assert f"cache entry {entry} is damaged (tokenizer.json" in caplog.text
    assert tokenizer.read_bytes() == whole  # rebuilt, the same bytes


@pytest.mark.parametrize("name", ["stages.json", "model/ccl_model.json", "model/adapter_model.safetensors",
                                  "model/tokenizer.json"])
def test_a_cut_run_folder_file_is_named_with_what_to_do(trained, tmp_path, name, capsys):
    from ccl.cli.errors import cli_errors

    folder = copy_run(trained, tmp_path)
    path = folder / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(SystemExit) as err, cli_errors("ccl.run"):
        run(cfg_for(trained, "stage=data+train"), folder, console())
    assert err.value.code == 1
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    assert f"{path}: damaged (" in line and ("delete" in line and "rerun" in line), line


def test_a_cut_model_record_is_noticed_by_predict_too(trained, tmp_path, capsys):
    from ccl.cli.predict import main as predict_main

    folder = copy_run(trained, tmp_path)
    meta = folder / "model" / "ccl_model.json"
    meta.write_bytes(meta.read_bytes()[:-5])
    note = tmp_path / "note.txt"
    note.write_text("Assessment: essential hypertension.")
    with pytest.raises(SystemExit):
        predict_main([str(folder), str(note)])
    assert f"{meta}: damaged (" in one_line_error(capsys.readouterr().err, "ccl.cli.predict")


def test_predictions_short_by_one_line_are_not_scored(trained, tmp_path, capsys):
    from ccl.cli.errors import cli_errors

    folder = copy_run(trained, tmp_path)
    run(cfg_for(trained, "stage=predict"), folder, console())
    predictions = folder / "predictions.jsonl"
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        run(cfg_for(trained, "stage=eval"), folder, console())
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    assert f"{predictions}: damaged (1 of 6 documents have no prediction" in line
    assert not (folder / "metrics.json").exists()


def test_a_changed_byte_in_a_pickle_is_caught(tmp_path):
    from ccl.utils.atomic import pickle_intact, write_pickle_atomic

    path = tmp_path / "entries.pkl"
    write_pickle_atomic(path, {"A00": "Cholera"})
    assert pickle_intact(path)
    path.write_bytes(path.read_bytes().replace(b"Cholera", b"Xholera"))  # still unpickles, to a wrong value
    assert not pickle_intact(path)
    Path(f"{path}.sha256").unlink()
    assert not pickle_intact(path)  # no record (an older CCL, or a write stopped between the two): rebuilt


@pytest.mark.slow
def test_a_changed_byte_in_a_parse_cache_is_caught_and_rebuilt(tmp_path, xml_path):
    """A pickle has no checksum of its own: the sha256 written beside it is checked."""
    from ccl.icd import tabular
    from ccl.icd.tabular import load_tabular

    first = load_tabular(xml_path, tmp_path)
    [pickled] = (tmp_path / "tabular").glob("*.pkl")
    data = bytearray(pickled.read_bytes())
    spot = data.find(b"Cholera")
    data[spot] = ord("X")  # still unpickles, into a wrong description
    pickled.write_bytes(bytes(data))
    tabular._load_memo.cache_clear()
    again = load_tabular(xml_path, tmp_path)
    assert again.description("A00") == first.description("A00") and "Cholera" in again.description("A00")


# ------------------------------------------------------------------ 3. full disks


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_the_tabular_cache_names_the_file_and_leaves_nothing(tmp_path, xml_path, monkeypatch,
                                                                            capsys):
    from ccl.cli.errors import cli_errors
    from ccl.icd import tabular

    tabular._load_memo.cache_clear()
    monkeypatch.setattr(tabular, "parse_tabular", lambda path, data: {"parsed": "x" * 50_000})  # fast
    real_fdopen = tabular.write_pickle_atomic.__globals__["os"].fdopen

    def full(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        handle.write = enospc
        return handle

    monkeypatch.setattr(tabular.write_pickle_atomic.__globals__["os"], "fdopen", full)
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        tabular.load_tabular(xml_path, tmp_path)
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    assert (f"{tmp_path}/tabular/tabular-" in line
            and "no space left on device (this step needs about 50 kB" in line), line
    assert not [p for p in (tmp_path / "tabular").iterdir()]  # nothing a rerun would trust
    tabular._load_memo.cache_clear()


def test_a_full_disk_in_the_backbone_cache_names_the_folder(tmp_path, monkeypatch, capsys):
    """safetensors reports a full disk as its own error type, with the OS error only in its text."""
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    from ccl.cli.errors import cli_errors
    from ccl.config import BackboneConfig, TinyBackboneConfig
    from ccl.model.tiny import build_tiny

    def save(self, folder, *args, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 5000)  # what was written before the disk filled
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save)
    cfg = BackboneConfig(name="tiny", kind="tiny",
        tiny=TinyBackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300))
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        build_tiny(cfg, ["a short note about hypertension"] * 20, tmp_path)
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    # A fake full disk on a large one: "more than" all the space that was free when the write began.
    assert f"{tmp_path}/backbones/tiny-" in line and re.search(r"needs more than \d+(\.\d)? [kMGT]?B", line), line
    assert not list((tmp_path / "backbones").iterdir())


def test_a_full_disk_in_the_data_stage_keeps_the_old_data(trained, tmp_path, monkeypatch, capsys):
    from ccl.cli.errors import cli_errors
    from ccl.stages import data as data_stage

    folder = copy_run(trained, tmp_path)
    before = sorted(p.name for p in (folder / "data").iterdir())
    manifest = (folder / "data_manifest.json").read_bytes()
    real = data_stage.write_jsonl

    def write_jsonl(path, rows):
        if "spans_" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, rows)

    monkeypatch.setattr(data_stage, "write_jsonl", write_jsonl)
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        run(cfg_for(trained, "stage=data", "docs.demo.n_test=5", "overwrite=true"), folder, console())
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    assert f"{folder / 'data'}: no space left on device" in line, line
    assert sorted(p.name for p in (folder / "data").iterdir()) == before
    assert (folder / "data_manifest.json").read_bytes() == manifest
    assert not [p for p in folder.iterdir() if p.name.startswith(".data.")]


def test_a_full_disk_that_names_no_file_names_the_fullest_watched_folder(tmp_path, capsys):
    from ccl.cli import errors as module
    from ccl.cli.errors import cli_errors, watch

    watch("run folder", tmp_path / "run")
    try:
        with pytest.raises(SystemExit), cli_errors("ccl.run"):
            raise RuntimeError("while writing the log") from OSError(errno.ENOSPC, "No space left on device")
    finally:
        module.WATCHED.clear()
    line = one_line_error(capsys.readouterr().err, "ccl.run")
    assert f"no space left on device (run folder={tmp_path / 'run'}: " in line and "free" in line, line


# ------------------------------------------------------------------ 4. config values


@pytest.mark.parametrize("override, named", [
    ("train.max_steps=-1", "train.max_steps=-1 (must be >= 0"),
    ("mix.span_share=1.5", "mix.span_share=1.5 (must be in [0, 1]"),
    ("train.lr=-1", "train.lr=-1.0 (must be > 0)"),
    ("infer.max_new_tokens=0", "infer.max_new_tokens=0 (must be >= 1 or null"),
    ("backbone.max_length=0", "backbone.max_length=0 (must be >= 1)"),
    ("train.warmup_ratio=1.2", "train.warmup_ratio=1.2 (must be in [0, 1] or null"),
    ("audit.threshold=-0.1", "audit.threshold=-0.1 (must be in [0, 1])"),
    ("docs.demo.unseen_share=2", "docs.demo.unseen_share=2.0 (must be in [0, 1])"),
    ("train.lora.dropout=1", "train.lora.dropout=1.0 (must be in [0, 1))"),
    ("mix.span_template=spans", "mix.span_template=spans (must be one of span, document, both)"),
    ("docs.demo.codes_per_note_max=1", "docs.demo.codes_per_note_max=1 (must be >= docs.demo.codes_per_note_min=2)"),
])
def test_a_value_out_of_range_is_refused_before_any_work_naming_the_key(tmp_path, override, named):
    cfg = compose_cfg(tmp_path, *QUICK, override)
    with pytest.raises(ValueError, match="config value") as err:
        run(cfg, tmp_path / "run", console())
    assert named in str(err.value), str(err.value)
    assert not (tmp_path / "run").exists()  # before any work: not even the folder


def test_every_numeric_key_of_the_schema_has_a_range():
    """The rule, not the listed examples: a new numeric knob must say which values it takes."""
    import dataclasses
    import typing

    from ccl import config

    def numeric(kind) -> bool:
        args = typing.get_args(kind) or (kind,)
        return any(a in (int, float) for a in args) and bool not in args

    missing = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            inner = [a for a in (typing.get_args(kind) or (kind,)) if dataclasses.is_dataclass(a)]
            if inner:
                walk(inner[0], f"{prefix}{f.name}.")
            elif numeric(kind) and f"{prefix}{f.name}" not in config.VALUE_RANGES:
                missing.append(f"{prefix}{f.name}")

    walk(config.CCLConfig, "")
    # The trainer group mirrors train.* (checked as those keys); test_sets take the docs rules.
    assert [k for k in missing if not k.startswith(("trainer.", "test_sets."))] == []


def test_other_clis_check_values_when_they_compose(capsys):
    from ccl.cli.stats import main as stats_main

    with pytest.raises(SystemExit):
        stats_main(["docs.demo.unseen_share=-1"])
    assert "docs.demo.unseen_share=-1.0 (must be in [0, 1])" in one_line_error(capsys.readouterr().err, "ccl.cli.stats")


# ------------------------------------------------------------------ 5. one-line errors


ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 300):
    """``python -m ...`` from the repository root (tracebacks not asked for)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "CCL_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path, capsys):
    from ccl.cli.errors import cli_errors
    from ccl.config import check_yaml_files

    (tmp_path / "experiment").mkdir()
    bad = tmp_path / "experiment" / "broken.yaml"
    bad.write_text("# @package _global_\nname: broken\ntrain:\n  max_steps: [1, 2\n  lr: 3\n")
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        check_yaml_files(["--config-dir", str(tmp_path), "+experiment=broken"])
    assert f"{bad}: not valid YAML at line 5, column" in one_line_error(capsys.readouterr().err, "ccl.run")
    check_yaml_files([])  # the project's own files are valid


def test_a_known_error_in_a_sweep_job_is_one_line_for_hydra():
    from hydra.errors import CompactHydraException

    from ccl.cli.errors import one_line_job_errors
    from ccl.utils.run_folder import RunFolderBusy

    with pytest.raises(CompactHydraException) as err, one_line_job_errors("ccl.run"):
        raise RunFolderBusy("outputs/x: process 42 is writing into this run folder")
    assert str(err.value).startswith("ccl.run: error: outputs/x: process 42") and "\n" not in str(err.value)
    import pickle

    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)  # launchers pickle a job's result
    with pytest.raises(RuntimeError), one_line_job_errors("ccl.run"):  # a bug keeps its traceback
        raise RuntimeError("bug")


@pytest.mark.slow
def test_a_yaml_syntax_error_in_an_experiment_file_is_one_line_error(tmp_path):
    (tmp_path / "experiment").mkdir()
    bad = tmp_path / "experiment" / "broken.yaml"
    bad.write_text("# @package _global_\nname: broken\ntrain:\n  max_steps: [1, 2\n  lr: 3\n")
    done = cli("ccl.run", "--config-dir", str(tmp_path), "+experiment=broken", f"paths.output_dir={tmp_path}")
    assert done.returncode == 1
    line = one_line_error(done.stderr, "ccl.run")
    assert f"{bad}: not valid YAML at line 5, column" in line and len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.slow
def test_a_busy_folder_in_a_multirun_and_a_refused_run_leave_one_line_and_the_winners_hydra(tmp_path):
    from ccl.utils.run_folder import RunLock

    job = tmp_path / "sweep" / "job"
    hydra = job / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text("- name=winner\n")
    args = ("backbone=tiny", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}")
    with RunLock(job):
        multi = cli("ccl.run", "-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.sweep.subdir=job",
                    "name=loser")
        single = cli("ccl.run", *args, f"hydra.run.dir={job}", "name=loser2")
    # A sweep's failed job is reported by Hydra when the sweep ends (its other jobs still run):
    # "Error executing job with overrides: [...]", the one line, and Hydra's HYDRA_FULL_ERROR hint.
    assert multi.returncode == 1 and "Traceback" not in multi.stderr and len(multi.stderr.splitlines()) <= 4
    assert multi.stderr.splitlines()[0].startswith("Error executing job with overrides: ["), multi.stderr
    [line] = [x for x in multi.stderr.splitlines() if x.startswith("ccl.run: error: ")]
    assert f"{job}: process" in line and "is writing into this run folder" in line, multi.stderr
    assert single.returncode == 1
    line = one_line_error(single.stderr, "ccl.run")
    assert f"{job}: process" in line and "is writing into this run folder" in line, single.stderr
    assert (hydra / "overrides.yaml").read_text() == "- name=winner\n"  # the snapshot is taken under the lock
    assert sorted(p.name for p in hydra.iterdir()) == ["overrides.yaml"]


@pytest.mark.slow
def test_the_hydra_snapshot_is_written_by_the_run_under_its_lock(trained, tmp_path):
    done = cli("ccl.run", *QUICK, "stage=data", "backbone=tiny", "logger=none", "icd.download=false",
               "docs.demo.n_train=16", "docs.n_val=4", "docs.demo.n_test=6", "docs.demo.n_codes=12",
               "docs.demo.corpus_size=30", f"paths.cache_dir={trained['base'] / 'cache'}",
               f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-2000:]
    hydra = tmp_path / "run" / ".hydra"
    assert sorted(p.name for p in hydra.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "- stage=data" in (hydra / "overrides.yaml").read_text()


def test_predict_on_another_projects_folder_names_the_folder(tmp_path, capsys):
    from ccl.cli.predict import main as predict_main

    (tmp_path / "config.yaml").write_text("model: {name: bert}\noptimizer: adam\n")
    note = tmp_path / "note.txt"
    note.write_text("Assessment: hypertension.")
    for folder in (tmp_path, tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as err:
            predict_main([str(folder), str(note)])
        assert err.value.code == 1
        assert f"{folder}: not a CCL run folder" in one_line_error(capsys.readouterr().err, "ccl.cli.predict")


def test_predict_refuses_a_zero_token_bound(trained, tmp_path, capsys):
    from ccl.cli.predict import main as predict_main

    note = tmp_path / "note.txt"
    note.write_text("Assessment: hypertension.")
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit) as err:
            predict_main([str(trained["dir"]), str(note), "--max-new-tokens", bad])
        assert err.value.code == 2
        assert f"--max-new-tokens: {bad}: must be >= 1" in capsys.readouterr().err


def test_an_empty_note_file_is_told_apart_from_no_file(trained, tmp_path, capsys, monkeypatch):
    from ccl.cli.predict import main as predict_main

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(SystemExit):
        predict_main([str(trained["dir"]), str(empty)])
    assert f"{empty}: the note file is empty" in one_line_error(capsys.readouterr().err, "ccl.cli.predict")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(SystemExit):
        predict_main([str(trained["dir"])])
    assert "stdin gave an empty note" in one_line_error(capsys.readouterr().err, "ccl.cli.predict")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig", "utf-16-be-bom"])
def test_a_note_with_a_byte_order_mark_is_decoded_by_it(trained, tmp_path, capsys, encoding):
    import codecs

    from ccl.cli.predict import main as predict_main
    from ccl.cli.predict import read_note

    text = "Assessment: café au lait spots, essential hypertension."
    data = codecs.BOM_UTF16_BE + text.encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    note = tmp_path / "note.txt"
    note.write_bytes(data)
    assert read_note(note) == text
    if encoding == "utf-16":  # end to end once
        assert predict_main([str(trained["dir"]), str(note), "--max-new-tokens", "4"]) == 0
        assert "Evidence" in capsys.readouterr().out


def test_utf16_without_a_byte_order_mark_is_named_not_coded_as_garbage(tmp_path, capsys):
    from ccl.cli.predict import read_note

    note = tmp_path / "note.txt"
    note.write_bytes("Assessment: hypertension.".encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"note.txt: holds NUL bytes: UTF-16 or UTF-32 text without a byte-order"):
        read_note(note)
    assert read_note(note, "utf-16-le") == "Assessment: hypertension."


def test_report_on_a_cut_metrics_file_says_error_and_names_it(trained, tmp_path, capsys):
    from ccl.report.cli import main as report_main

    folder = copy_run(trained, tmp_path)
    run(cfg_for(trained), folder, console())
    metrics = folder / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:-5])
    capsys.readouterr()
    assert report_main([str(folder), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ccl.report: error: {metrics}: invalid JSON") and err.count("\n") == 1, err


# ------------------------------------------------------------------ 3. a real full disk (slow)


@pytest.fixture
def small_disk(tmp_path):
    """A 15 MB tmpfs (skipped where this process may not mount one)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=15m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_leaves_nothing_a_rerun_would_trust(tmp_path, small_disk):
    base = ("+experiment=ablation_row4", "backbone=tiny", "logger=none", "icd.download=false", "docs.demo.n_train=16",
            "docs.n_val=4", "docs.demo.n_test=6", "docs.demo.n_codes=12", "docs.demo.corpus_size=30",
            "train.max_steps=2", "train.save_every_n_steps=1", "mix.span_warmup_steps=1", "infer.max_new_tokens=8")
    # The run folder on the small disk: the 20 MB checkpoint does not fit.
    done = cli("ccl.run", *base, f"paths.output_dir={small_disk}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert done.returncode == 1
    line = one_line_error(done.stderr, "ccl.run")
    [ckpt_dir] = (small_disk / "ablation_row4" / "checkpoints").iterdir()
    assert re.search(rf"{ckpt_dir}/last.ckpt: no space left on device \(this step needs about 2\d MB; \d+ (kB|MB) free",
                     line), line
    assert list(ckpt_dir.iterdir()) == []  # no torn checkpoint, no temporary file
    assert "train" not in json.loads((small_disk / "ablation_row4" / "stages.json").read_text())
    # The cache on the small disk, nearly full: the parse caches do not fit.
    shutil.rmtree(small_disk / "ablation_row4")
    (small_disk / "filler").write_bytes(b"\0" * (14 << 20))
    done = cli("ccl.run", *base, f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={small_disk / 'cache'}")
    assert done.returncode == 1
    line = one_line_error(done.stderr, "ccl.run")
    assert f"{small_disk / 'cache'}/" in line and "no space left on device" in line, line
    leftovers = [p for p in (small_disk / "cache").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
