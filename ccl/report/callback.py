"""Hydra callback: at the end of a multirun, render every analysis into the sweep folder.

Register it in ``conf/config.yaml``::

    hydra:
      callbacks:
        report:
          _target_: ccl.report.callback.ReportCallback

or per command with ``++hydra.callbacks.report._target_=ccl.report.callback.ReportCallback``.
It also names the sweep for W&B (``CCL_SWEEP_GROUP``), so the jobs of one
multirun share a group.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ccl.records import RecordError
from ccl.utils.loggers import GROUP_ENV

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Collects every job's run folder under ``hydra.sweep.dir`` into ``<sweep dir>/<out_subdir>``."""

    def __init__(self, out_subdir: str = "report", set_group: bool = True) -> None:
        self.out_subdir = out_subdir
        self.set_group = set_group
        self._sweep_dir: Path | None = None
        self._previous_group: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.set_group:
            self._previous_group = os.environ.get(GROUP_ENV)
            os.environ[GROUP_ENV] = self._sweep_dir.name

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # local import: pandas, matplotlib, scipy (~1.5 s); ccl.run loads this callback at start
        from ccl.report import build, collect

        sweep_dir = self._sweep_dir or Path(str(config.hydra.sweep.dir))
        if self.set_group:
            if self._previous_group is None:
                os.environ.pop(GROUP_ENV, None)
            else:
                os.environ[GROUP_ENV] = self._previous_group
        out_dir = sweep_dir / self.out_subdir
        try:
            report = build.build_report([sweep_dir], out_dir)
        except (collect.RunFolderError, RecordError) as e:
            log.warning("ccl.report: nothing to report: %s", e)
            return
        except Exception:
            # The runs are safe on disk; a failing analysis must not fail the whole multirun.
            log.exception("ccl.report failed; rerun it with: python -m ccl.report %s", sweep_dir)
            return
        for note in report.notes:
            log.info("ccl.report: %s", note)
        log.info("ccl.report: %d runs -> %s", len(report.results), out_dir / "report.md")
