"""Stage bookkeeping for a run folder: which stage finished under which content key.

A stage is skipped on a rerun when its key (a hash of the config it reads and of
its inputs' keys) is unchanged and its outputs still exist; changing anything
upstream changes the key and reruns that stage and everything after it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ccl.utils.atomic import write_json_atomic
from ccl.utils.verify import read_json

STAGES = ("data", "train", "predict", "eval")


def parse_stages(spec: str) -> list[str]:
    """``"all"`` or a list such as ``"data+train"`` (or ``"data,train"``) -> ordered stage names.

    ``+`` needs no quoting on Hydra's command line; a comma does (``'stage="data,train"'``).
    """
    if spec.strip() == "all":
        return list(STAGES)
    wanted = [s.strip() for s in re.split(r"[,+]", spec) if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {list(STAGES)} or 'all'")
    return [s for s in STAGES if s in wanted]


class StageLedger:
    """``stages.json`` in the run folder: stage -> key of its last finished run.

    Beside it, ``stage_seconds.json`` keeps how long each finished stage took, so a
    rerun that skips a cached stage still reports the time it cost.
    """

    def __init__(self, run_dir: Path) -> None:
        from ccl.utils.run_folder import RunFolder  # run_folder.py imports this module

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

