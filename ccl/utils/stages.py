"""Stage bookkeeping for a run folder: which stage finished under which content key.

A stage is skipped on a rerun when its key (a hash of the config it reads and of
its inputs' keys) is unchanged and its outputs still exist; changing anything
upstream changes the key and reruns that stage and everything after it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    """``stages.json`` in the run folder: stage -> key of its last finished run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "stages.json"
        self.state: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def is_done(self, stage: str, key: str, outputs: list[Path]) -> bool:
        return self.state.get(stage) == key and all(Path(p).exists() for p in outputs)

    def mark_done(self, stage: str, key: str) -> None:
        self.state[stage] = key
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.path)

    def invalidate_from(self, stage: str) -> None:
        """Forget ``stage`` and all later stages (their inputs changed)."""
        for s in STAGES[STAGES.index(stage):]:
            self.state.pop(s, None)
