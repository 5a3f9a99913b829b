"""Run folders: one config and one writer each; a closed schema; one-line CLI errors; progress in logs."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_run import FAST, compose_cfg, quiet

from ccl.config import UnknownConfigKey, check_closed
from ccl.run import run
from ccl.utils.run_folder import RunFolderBusy, RunFolderConflict, RunLock, config_diff

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, stdout=subprocess.PIPE, timeout: int = 300):
    """``python -m ...`` from the repository root, with stderr captured."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR", None)
    environment.pop("CCL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=environment, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def one_line_error(stderr: str, prog: str) -> str:
    """The last stderr line, checked to be a CCL error message and not a traceback."""
    assert "Traceback" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), stderr
    return line


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """The main job on ``tiny``, run by the CLI with stdout redirected to a log file."""
    base = tmp_path_factory.mktemp("logged")
    overrides = ["+experiment=ablation_row4", *FAST, f"paths.cache_dir={base.parent / 'ccl-cache'}",
                 f"paths.output_dir={base / 'outputs'}"]
    log = base / "run.log"
    with log.open("w") as out:
        done = cli("ccl.run", *overrides, env={"CCL_PROGRESS_SECONDS": "0"}, stdout=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"dir": base / "outputs" / "ablation_row4", "log": log.read_text(), "overrides": overrides}


def test_log_file_shows_training_and_prediction_progress(logged_run):
    lines = logged_run["log"].splitlines()
    train = [x for x in lines if x.startswith("train: step ")]
    assert [x.split()[2] for x in train] == ["1/3", "2/3", "3/3"], logged_run["log"]
    assert all("loss " in x and "tokens/s" in x and "ETA" in x for x in train)
    predict = [x for x in lines if x.startswith("predict: ") and " documents (" in x]
    assert predict and predict[-1].startswith("predict: 6/6 documents (100%)") and "docs/s" in predict[-1]
    assert lines.index(train[-1]) < lines.index(predict[-1])


def test_another_config_under_the_same_name_is_refused_and_leaves_the_results(logged_run):
    folder = logged_run["dir"]
    before = {p: p.read_bytes() for p in (folder / "metrics.json", folder / "config.yaml",
                                          folder / "predictions.jsonl", folder / "model" / "ccl_model.json",
                                          folder / ".hydra" / "overrides.yaml")}
    done = cli("ccl.run", *logged_run["overrides"], "train.max_steps=5", "train.lr=0.01")
    assert done.returncode == 1
    line = one_line_error(done.stderr, "ccl.run")
    assert "train.max_steps: 3 -> 5" in line and "train.lr: 0.001 -> 0.01" in line
    assert "overwrite=true" in line and "name=" in line
    assert {p: p.read_bytes() for p in before} == before


def test_a_second_writer_is_refused_naming_the_holder(logged_run):
    overrides = logged_run["dir"] / ".hydra" / "overrides.yaml"
    before = overrides.read_text()
    with RunLock(logged_run["dir"]):
        done = cli("ccl.run", *logged_run["overrides"], "stage=data")
        assert done.returncode == 1
    assert overrides.read_text() == before
    line = one_line_error(done.stderr, "ccl.run")
    assert f"process {os.getpid()} is writing into this run folder" in line
    assert not (logged_run["dir"] / "data.partial").exists()  # refused before any work


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ccl.utils.run_folder import RunLock; "
         f"lock = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"process {holder.pid} is writing"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".ccl.lock.pid").read_text().strip() == str(holder.pid)  # left behind
    with RunLock(tmp_path) as lock:
        assert lock.took_over == holder.pid
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data")
    assert run(cfg, tmp_path, quiet()) == {}  # a run into the folder goes ahead


def test_plus_keys_outside_the_schema_are_refused(tmp_path):
    for bad, named in (("+train.foo=1", "train.foo"), ("+trian.max_steps=5", "trian (did you mean train?)")):
        cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", bad)
        with pytest.raises(UnknownConfigKey, match=named.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            run(cfg, tmp_path / "run", quiet())
    assert not (tmp_path / "run" / "config.yaml").exists()
    # Declared uses of '+': an experiment, a docs config as a named test set.
    check_closed(compose_cfg(tmp_path, "+experiment=ablation_row4", "+docs@test_sets.extra=demo"))
    with pytest.raises(UnknownConfigKey, match="test_sets.extra.foo"):
        check_closed(compose_cfg(tmp_path, "+docs@test_sets.extra=demo", "+test_sets.extra.foo=1"))


def test_data_rerun_keeps_the_record_and_a_new_config_leaves_no_stale_files(tmp_path):
    folder = tmp_path / "run"
    run(compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data+train"), folder, quiet())
    run(compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data"), folder, quiet())
    assert yaml.safe_load((folder / "config.yaml").read_text())["stage"] == "data+train"
    assert (folder / "data" / "spans_gold.jsonl").exists()
    row3 = compose_cfg(tmp_path, "+experiment=ablation_row3", "name=ablation_row4", "stage=data")
    with pytest.raises(RunFolderConflict, match="spans.gold"):
        run(row3, folder, quiet())
    assert (folder / "model").exists() and yaml.safe_load((folder / "config.yaml").read_text())["spans"]["gold"]
    row3 = compose_cfg(tmp_path, "+experiment=ablation_row3", "name=ablation_row4", "stage=data", "overwrite=true")
    run(row3, folder, quiet())
    assert not (folder / "data" / "spans_gold.jsonl").exists()  # row 3 has no span tier
    assert yaml.safe_load((folder / "config.yaml").read_text())["stage"] == "data"


def test_test_sets_and_execution_keys_are_no_conflict():
    old = {"train": {"lr": 1e-3, "devices": 1}, "stage": "all", "test_sets": {"a": {"path": "x"}}}
    new = {"train": {"lr": 1e-3, "devices": 4}, "stage": "data", "test_sets": {"b": {"path": "y"}}}
    assert config_diff(old, new) == []
    assert config_diff({**old, "test_sets": {}}, new) == []
    assert config_diff(old, {**new, "test_sets": {"a": {"path": "z"}}}) == ["test_sets.a.path"]


def test_training_restored_from_its_checkpoint_keeps_its_cost(tmp_path):
    import shutil

    folder = tmp_path / "run"
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data+train")
    run(cfg, folder, quiet())
    first = json.loads((folder / "model" / "ccl_model.json").read_text())
    shutil.rmtree(folder / "model")  # the next run restores the model from checkpoints/
    run(cfg, folder, quiet())
    again = json.loads((folder / "model" / "ccl_model.json").read_text())
    assert again["fit_seconds"] > 0 and again["fit_seconds"] >= 0.5 * first["fit_seconds"]
    assert again["final_loss"] == pytest.approx(first["final_loss"], rel=1e-3)


# ------------------------------------------------------------- one-line errors of every CLI


def test_predict_reads_other_encodings_and_names_the_bad_byte(logged_run, tmp_path, capsys):
    from ccl.cli.predict import main as predict_main

    note = tmp_path / "note.txt"
    note.write_bytes("Assessment: caf\xe9 au lait spots, essential hypertension.".encode("latin-1"))
    with pytest.raises(SystemExit) as err:
        predict_main([str(logged_run["dir"]), str(note)])
    assert err.value.code == 1
    line = one_line_error(capsys.readouterr().err, "ccl.cli.predict")
    assert f"{note}: not valid utf-8 text: byte 0xe9 at byte offset 15" in line and "--encoding" in line
    assert predict_main([str(logged_run["dir"]), str(note), "--encoding", "latin-1", "--max-new-tokens", "4"]) == 0
    with pytest.raises(SystemExit):
        predict_main([str(logged_run["dir"]), str(tmp_path / "missing.txt")])
    assert "missing.txt: no such file" in one_line_error(capsys.readouterr().err, "ccl.cli.predict")


def test_predict_stdin_bytes_in_latin1_give_one_line(logged_run):
    done = subprocess.run([sys.executable, "-m", "ccl.cli.predict", str(logged_run["dir"])], cwd=ROOT,
                          input="fi\xe8vre".encode("latin-1"), capture_output=True, timeout=300)
    assert done.returncode == 1
    assert "stdin: not valid utf-8 text: byte 0xe8 at byte offset 2" in one_line_error(
        done.stderr.decode(), "ccl.cli.predict")


def test_stats_expand_bench_report_print_one_line(tmp_path, capsys, monkeypatch):
    from ccl.bench.cli import main as bench_main
    from ccl.cli.spans import main as expand_main
    from ccl.cli.stats import main as stats_main
    from ccl.report.cli import main as report_main

    missing = tmp_path / "nowhere"
    monkeypatch.setenv("CCL_OFFLINE", "1")
    calls = [
        ("ccl.cli.stats", stats_main, ["docs=codiesp", f"docs.path={missing}", f"paths.cache_dir={tmp_path}"],
         str(missing)),
        ("ccl.cli.stats", stats_main, ["docs=mdace", f"paths.cache_dir={tmp_path}"], "CCL_OFFLINE=1"),
        ("ccl.cli.spans", expand_main, ["tier=silver", "docs=codiesp", f"docs.path={missing}",
                                     f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}"], str(missing)),
        ("ccl.bench", bench_main, ["data", "--icd-dir", str(missing)], str(missing)),
        ("ccl.cli.stats", stats_main, ["+docs.foo=1"], "docs.foo"),
    ]
    for prog, main, argv, named in calls:
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 1, prog
        assert named in one_line_error(capsys.readouterr().err, prog), prog
    broken = tmp_path / "broken_run"
    broken.mkdir()
    (broken / "config.yaml").write_text("name: x\nbackbone: {name: tiny}\n")
    (broken / "metrics.json").write_text("{not json")
    assert report_main([str(broken), "--out", str(tmp_path / "report")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and stderr.count("\n") == 1 and "metrics.json: invalid JSON" in stderr
    assert stderr.startswith("ccl.report: error: ")
    monkeypatch.setenv("CCL_DEBUG", "0")  # restored after the test: --debug sets it to 1
    with pytest.raises(FileNotFoundError):  # --debug: the traceback
        bench_main(["data", "--icd-dir", str(missing), "--debug"])


def test_run_cli_prints_one_line_for_a_missing_file_and_debug_shows_the_traceback(tmp_path):
    args = ("ccl.run", "docs=codiesp", f"docs.path={tmp_path / 'nowhere'}", "backbone=tiny", "logger=none",
            "icd.download=false", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}")
    done = cli(*args)
    assert done.returncode == 1 and str(tmp_path / "nowhere") in one_line_error(done.stderr, "ccl.run")
    assert (tmp_path / "default" / "config.yaml").exists() and not (tmp_path / "default" / "stages.json").exists()
    assert "Traceback" in cli(*args, "--debug").stderr


def test_a_folder_without_finished_stages_takes_any_config(tmp_path):
    from omegaconf import OmegaConf

    from ccl.utils.run_folder import check_config

    (tmp_path / "config.yaml").write_text("docs: {path: /wrong}\n")  # a run that stopped early
    assert check_config(tmp_path, OmegaConf.create({"docs": {"path": "/right"}})) is None
    (tmp_path / "stages.json").write_text('{"data": "k1"}')
    with pytest.raises(RunFolderConflict, match="docs.path: /wrong -> /right"):
        check_config(tmp_path, OmegaConf.create({"docs": {"path": "/right"}}))


def test_run_folder_names_the_layout_once():
    from ccl.utils.run_folder import FREE_KEYS, OUTSIDE_STAGE_KEYS, RunFolder

    folder = RunFolder("/r")
    assert RunFolder.metrics == "metrics.json" and folder.metrics == Path("/r/metrics.json")
    assert (folder.test_set("mdace").human_evidence().predictions
            == Path("/r/test_sets/mdace/human_evidence/predictions.jsonl"))
    assert folder.tuning().metrics == Path("/r/val/metrics.json")
    assert (folder.model_meta == Path("/r/model/ccl_model.json")
            and folder.spans("gold") == Path("/r/data/spans_gold.jsonl"))
    # One record of the keys no stage key covers: the free ones are exactly those marked free.
    assert {k for k, free in OUTSIDE_STAGE_KEYS.items() if free} <= set(FREE_KEYS)
    assert "train.val_docs" not in FREE_KEYS and "backbone.n_params" not in FREE_KEYS


def test_atomic_writes_leave_nothing_behind_on_error(tmp_path):
    from ccl.utils.atomic import atomic_dir, atomic_file

    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(tmp_path / "d") as tmp:  # a second writer loses the race quietly
        (tmp / "x").write_text("2")
    with atomic_dir(tmp_path / "d", replace=True) as tmp:
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "out.json"]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["y"]
