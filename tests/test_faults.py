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

from ccl.run import run
from ccl.utils.checkpoints import checkpoint_problem

QUICK = ("+experiment=ablation_row4", "train.max_steps=2", "train.save_every_n_steps=1",
         "eval.bootstrap_resamples=0", "audit.enabled=false")


def console() -> Console:
    """A console whose text the test reads back (``.file.getvalue()``), wide enough for one line."""
    return Console(file=io.StringIO(), width=400, color_system=None)


def said(con: Console) -> str:
    return con.file.getvalue()  # type: ignore[attr-defined]


def one_line(text: str, prog: str) -> str:
    """The last line of ``text``, checked to be ``PROG: error: ...`` and not a traceback."""
    assert "Traceback" not in text, text
    line = text.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), text
    return line


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run folder after ``stage=data+train`` (two steps, a checkpoint after each)."""
    base = tmp_path_factory.mktemp("faults")
    folder = base / "run"
    run(compose_cfg(base, *QUICK, "stage=data+train"), folder, console())
    return {"base": base, "dir": folder}


def copy_run(trained: dict, tmp_path: Path) -> Path:
    """A private copy of the trained run folder (its lock file left behind)."""
    out = tmp_path / "run"
    shutil.copytree(trained["dir"], out, ignore=shutil.ignore_patterns(".ccl.lock*"))
    return out


def cfg_for(trained: dict, *overrides: str):
    return compose_cfg(trained["base"], *QUICK, *overrides)


def forget(folder: Path, stage: str) -> None:
    """Make the ledger forget ``stage`` (as an interrupted run leaves it)."""
    path = folder / "stages.json"
    state = json.loads(path.read_text())
    state.pop(stage, None)
    path.write_text(json.dumps(state))


# ------------------------------------------------------------------ 1. checkpoints


@pytest.mark.parametrize("damage", ["cut_8_bytes", "cut_half", "garbage"])
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
    assert str(last) in message and "no space left on device" in message and re.search(r"needs about 2\d MB", message), message
    assert checkpoint_problem(last) is None  # the first checkpoint is whole; no temporary file is left
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    con = console()
    run(cfg_for(trained, "stage=data+train"), folder, con)
    assert f"resuming from {last}" in said(con) and "damaged" not in said(con)


# ------------------------------------------------------------------ 2. caches and run-folder files


def test_a_cache_entry_short_by_one_line_is_rebuilt_not_trusted(trained, tmp_path, caplog):
    """The gold tier's pairs.jsonl loses its last line: the entry no longer matches its own
    record (line count and sha256), so it is rebuilt and the run trains on every pair."""
    [entry] = (trained["base"].parent / "ccl-cache" / "gold").iterdir()
    pairs = entry / "pairs.jsonl"
    whole = pairs.read_text()
    pairs.write_text("".join(whole.splitlines(keepends=True)[:-1]))
    folder = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run(cfg_for(trained, "stage=data"), folder, console())
    assert "has 82 lines, its record says 83: rebuilding it" in caplog.text or "its record says" in caplog.text
    manifest = json.loads((folder / "data_manifest.json").read_text())
    used = (folder / "data" / "spans_gold.jsonl").read_text().splitlines()
    assert manifest["span_tiers"]["gold"]["pairs"] == len(used) == len(whole.splitlines())
    assert pairs.read_text() == whole


@pytest.mark.parametrize("damage", ["cut_5_bytes", "one_byte_changed"])
def test_a_damaged_backbone_cache_entry_is_rebuilt(trained, tmp_path, caplog, damage):
    [entry] = (trained["base"].parent / "ccl-cache" / "backbones").glob("tiny-*")
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
    from ccl.cli_errors import cli_errors

    folder = copy_run(trained, tmp_path)
    path = folder / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(SystemExit) as err, cli_errors("ccl.run"):
        run(cfg_for(trained, "stage=data+train"), folder, console())
    assert err.value.code == 1
    line = one_line(capsys.readouterr().err, "ccl.run")
    assert f"{path}: damaged (" in line and ("delete" in line and "rerun" in line), line


def test_a_cut_model_record_is_noticed_by_predict_too(trained, tmp_path, capsys):
    from ccl.predict import main as predict_main

    folder = copy_run(trained, tmp_path)
    meta = folder / "model" / "ccl_model.json"
    meta.write_bytes(meta.read_bytes()[:-5])
    note = tmp_path / "note.txt"
    note.write_text("Assessment: essential hypertension.")
    with pytest.raises(SystemExit):
        predict_main([str(folder), str(note)])
    assert f"{meta}: damaged (" in one_line(capsys.readouterr().err, "ccl.predict")


def test_predictions_short_by_one_line_are_not_scored(trained, tmp_path, capsys):
    from ccl.cli_errors import cli_errors

    folder = copy_run(trained, tmp_path)
    run(cfg_for(trained, "stage=predict"), folder, console())
    predictions = folder / "predictions.jsonl"
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(SystemExit), cli_errors("ccl.run"):
        run(cfg_for(trained, "stage=eval"), folder, console())
    line = one_line(capsys.readouterr().err, "ccl.run")
    assert f"{predictions}: damaged (1 of 6 documents have no prediction" in line
    assert not (folder / "metrics.json").exists()
