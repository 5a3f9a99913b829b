"""W&B as a user runs it: a multirun with the default logger, in a fresh HOME, no WANDB_* set.

Each job of the sweep must make exactly one W&B run, in its own run folder, grouped with
the sweep's other jobs, offline (the config's mode, passed to ``wandb.init``; job 2 of a
multirun used to stop with ``UsageError: No API key configured``), with everything W&B
writes inside the run folder (nothing under ``~/.local/share/wandb``) and no note text.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_report import FAST

from ccl.data.sources import load_source
from ccl.icd.tabular import load_tabular
from ccl.records import read_documents

ROOT = Path(__file__).resolve().parents[1]
README_SWEEP = "python -m ccl.run -m +experiment=ablation_row1,ablation_row4 backbone=tiny train.max_steps=3"


def wandb_records(path: Path) -> list:
    """The records of a ``run-*.wandb`` transaction log (W&B's LevelDB-style log: a 7-byte
    ``:W&B`` header, then 32 KiB blocks of chunks with a 7-byte header each: CRC32, length,
    type 1 full / 2 first / 3 middle / 4 last), parsed with W&B's own protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    block, pos, records, parts = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def run_records(wandb_dir: Path) -> list:
    """The ``run`` records (name, group, job type) of every W&B run in a ``RUN/wandb`` folder.

    W&B's service writes the log after ``finish`` returns: wait (10 s at most) for its exit record.
    """
    out = []
    for log in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        for _ in range(100):
            records = wandb_records(log)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                break
            time.sleep(0.1)
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert runs, f"{log}: no run record"
        out.append(runs[0])
    return out


def fresh_env(home: Path) -> dict[str, str]:
    """The environment of a new user: HOME in a temp folder, no W&B variables, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "CCL_SWEEP_GROUP"}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CACHE_HOME", None)
    return env


def check_sweep(tmp_path: Path, argv: list[str], env: dict[str, str]) -> list[Path]:
    """Run ``argv`` (a multirun) in ``tmp_path``; check its W&B runs; return the job folders."""
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file())
    assert [j.name.split("_", 1)[1] for j in jobs] == ["ablation_row1_tiny", "ablation_row4_tiny"]
    groups = set()
    for job in jobs:
        runs = run_records(job / "wandb")
        assert len(runs) == 1, f"{job}: {len(runs)} W&B runs, want one per ccl.run"
        name = job.name.split("_", 1)[1].replace("_tiny", "-tiny")
        assert runs[0].display_name == name
        groups.add(runs[0].run_group)
        # The results (tables, predictions) are in the one run, as run files: they sync from anywhere.
        (offline,) = (job / "wandb").glob("offline-run-*")
        assert (offline / "files" / "results" / "predictions.jsonl").is_file()
        assert list((offline / "files" / "media" / "table").rglob("*.table.json"))
        assert not (offline / "files" / "results" / "predictions.jsonl").is_symlink()
        # Note text never reaches W&B: no note's words in any file W&B wrote.
        # The run folder refers to its notes (copy_notes=false): read them at their source.
        cfg = OmegaConf.load(job / "config.yaml")
        source = load_source(cfg.docs, load_tabular(), Path(cfg.paths.cache_dir))
        notes = [d.text for d in source.docs["test"]]
        assert notes and all(not d.text for d in read_documents(job / "data" / "test.jsonl", need_text=False))
        for f in (job / "wandb").rglob("*"):
            if f.is_file():
                blob = f.read_bytes()
                assert not any(n[:60].encode() in blob for n in notes), f"note text in {f}"
    assert groups == {sweep.name}, "the jobs of one multirun share one W&B group: the sweep folder's name"
    assert (jobs[1] / "wandb" / next((jobs[1] / "wandb").glob("offline-run-*")).name / "files" / "model"
            / "adapter_config.json").is_file()
    home = Path(env["HOME"])
    assert not (home / ".local" / "share" / "wandb").exists(), "W&B staged files outside the run folder"
    assert not list(home.rglob("offline-run-*"))
    return jobs


@pytest.mark.slow
def test_small_sweep_with_the_default_logger_makes_one_grouped_offline_run_per_job(tmp_path, tmp_path_factory):
    """The README's sweep on the test suite's small data (the same code path; ~60 s at load 7
    on two cores, mostly two Python starts, the tiny tokenizer and W&B's service)."""
    cache = tmp_path_factory.getbasetemp() / "ccl-cache"
    overrides = [o for o in FAST if not o.startswith("logger=")]  # the default logger: W&B
    argv = [sys.executable, "-m", "ccl.run", "-m", "+experiment=ablation_row1,ablation_row4", *overrides,
            f"paths.cache_dir={cache}", "~hydra.callbacks.report"]
    home = tmp_path / "home"
    home.mkdir()
    jobs = check_sweep(tmp_path, argv, fresh_env(home))
    # wandb sync can read the runs (a dry run needs neither a key nor a network).
    proc = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", *(str(j / "wandb") for j in jobs)],
                          env=fresh_env(home), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    ids = [run_records(j / "wandb")[0].run_id for j in jobs]
    assert proc.returncode == 0 and all(f"run-{i}.wandb" in out for i in ids), out


@pytest.mark.slow
def test_readme_sweep_as_written_in_a_fresh_home(tmp_path):
    """The README's CPU sweep command, exactly as written there (~75 s on two cores)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_SWEEP in readme, "the README's sweep command changed: update README_SWEEP"
    argv = shlex.split(README_SWEEP)
    argv[0] = sys.executable
    home = tmp_path / "home"
    home.mkdir()
    check_sweep(tmp_path, argv, fresh_env(home))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", next((tmp_path / "multirun").iterdir()).name)
    report = json.dumps(sorted(p.name for p in next((tmp_path / "multirun").iterdir()).iterdir()))
    assert "report" in report  # the multirun callback still writes the report


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """This process as a new user's: HOME in a temp folder, no W&B variables."""
    home = tmp_path / "home"
    home.mkdir()
    for var in [v for v in os.environ if v.startswith("WANDB_")] + ["CCL_SWEEP_GROUP", "XDG_DATA_HOME",
                                                                     "XDG_CACHE_HOME"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any network attempt would fail
    return home


def small_cfg(name: str, **logger):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": name, "task": "evidence", "backbone": {"name": "tiny"},
                             "logger": {"kind": "wandb", "project": "ccl-test", "mode": "offline",
                                        "group": None, "log_note_text": False, **logger}})


def test_every_wandb_init_of_a_process_gets_the_configured_mode(tmp_path, fresh_home):
    """Job 2 of a multirun: W&B was set up by job 1 in the same process, so a mode given
    through the environment afterwards is not seen (the old UsageError); the training
    logger's run and the results' run are one run; a sweep's job is grouped."""
    import wandb

    from ccl.utils.loggers import finish_wandb_run, make_logger, open_wandb_run, wandb_run

    first = tmp_path / "sweep" / "0_first"
    first.mkdir(parents=True)
    (first.parent / "multirun.yaml").write_text("{}\n")
    wandb_run(first, small_cfg("first").logger, "first-tiny", job_type="eval")
    finish_wandb_run()
    assert open_wandb_run() is None and "WANDB_DATA_DIR" not in os.environ

    second = tmp_path / "sweep" / "1_second"
    logger = make_logger(small_cfg("second"), second)
    run = logger.experiment
    assert run is open_wandb_run() and run.settings.mode == "offline"
    assert wandb_run(second, small_cfg("second").logger, "second-tiny") is run  # the results' run: the same
    assert os.environ["WANDB_DATA_DIR"] == str((second / "wandb" / "data").resolve())
    run.log({"t": wandb.Table(columns=["a"], data=[[1]])})  # a table stages a run_table artifact
    finish_wandb_run()
    assert "WANDB_DATA_DIR" not in os.environ and "WANDB_CACHE_DIR" not in os.environ
    assert list((second / "wandb" / "data" / "artifacts" / "staging").iterdir())
    assert not (fresh_home / ".local" / "share" / "wandb").exists()
    (a,), (b,) = run_records(first / "wandb"), run_records(second / "wandb")
    assert (a.display_name, b.display_name) == ("first-tiny", "second-tiny")
    assert a.run_group == b.run_group == "sweep" and b.job_type == "train"

    from ccl.utils.loggers import sweep_group

    assert sweep_group(second, small_cfg("x", group="mine").logger) == "mine"  # logger.group wins
    assert sweep_group(tmp_path / "outputs" / "single", small_cfg("x").logger) is None  # a lone run


def test_a_bad_logger_mode_or_a_missing_login_is_one_line(tmp_path, fresh_home):
    from ccl.utils.loggers import finish_wandb_run, wandb_mode, wandb_run

    assert wandb_mode({}) == "offline" and wandb_mode({"mode": "online"}) == "online"
    with pytest.raises(ValueError, match="logger.mode: 'upload' is not a W&B mode"):
        wandb_mode({"mode": "upload"})
    with pytest.raises(ValueError, match=r"logger.mode=online: W&B refused .*wandb login.*logger.mode=offline"):
        wandb_run(tmp_path / "online", {"mode": "online"}, "x-tiny")
    assert "WANDB_DATA_DIR" not in os.environ
    run = wandb_run(tmp_path / "disabled", {"mode": "disabled"}, "x-tiny")
    run.log({"a": 1})
    finish_wandb_run()
    assert not list((tmp_path / "disabled" / "wandb").glob("*run-*"))
