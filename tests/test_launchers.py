"""Sweeps through Hydra's parallel launchers: a 2-job multirun of tiny Table 3 rows with the
joblib launcher (``hydra/launcher=local_parallel``, CCL's config: worker processes) and with
the submitit launcher's local executor (``hydra/launcher=submitit_local``: the SLURM launcher's
code path, jobs pickled and run as separate processes). Each job must finish and the report
callback must fire once, in the launching process, after both.

Needs the ``sweep`` extra (installed with ``dev``); skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["ablation_row2", "ablation_row3"]
# tests/test_report.py's fast tiny settings, with one training step per job.
FAST = [
    "backbone=tiny", "logger=none", "icd.download=false",
    "docs.demo.n_train=16", "docs.n_val=4", "docs.demo.n_test=6", "docs.demo.n_codes=12", "docs.demo.corpus_size=30",
    "train.max_steps=1", "train.batch_size=2", "train.save_every_n_steps=1",
    "infer.max_new_tokens=8", "infer.batch_size=6",
]
LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", ["hydra/launcher=local_parallel"]),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher",
                       ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_job_multirun_finishes_and_reports_once(launcher, tmp_path, tmp_path_factory):
    plugin, overrides = LAUNCHERS[launcher]
    pytest.importorskip(plugin, reason=f"the {launcher} launcher needs: pip install -e '.[sweep]'")
    sweep = tmp_path / "sweep"
    cache = tmp_path_factory.getbasetemp() / "ccl-cache"  # shared with test_run / test_report
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CCL_PROGRESS_SECONDS": "0"}
    env.pop("CCL_SWEEP_GROUP", None)
    done = subprocess.run(
        [sys.executable, "-m", "ccl.run", "-m", "+experiment=" + ",".join(ROWS), *FAST,
         f"paths.cache_dir={cache}", f"hydra.sweep.dir={sweep}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    jobs = sorted(d for d in sweep.iterdir() if (d / "metrics.json").is_file())
    assert [d.name for d in jobs] == [f"{i}_{row}_tiny" for i, row in enumerate(ROWS)]
    reports = sorted(sweep.rglob("report.md"))
    assert reports == [sweep / "report" / "report.md"]  # one report, for the sweep, none per job
    results = pd.read_csv(sweep / "report" / "results.csv")
    assert sorted(results["name"]) == ROWS and set(results["sweep"]) == {sweep.name}
    # It ran after both jobs had written their metrics.
    assert reports[0].stat().st_mtime >= max((d / "metrics.json").stat().st_mtime for d in jobs)
    if launcher == "submitit_local":  # the jobs really went through submitit, one folder each
        assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
