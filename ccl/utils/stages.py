"""The stages of a run, in order, and the ``stage=`` spec that picks some of them.

The ledger of which stage finished under which content key is
:class:`ccl.utils.run_folder.StageLedger` (``stages.json`` of the run folder).

A stage is skipped on a rerun when its key (a hash of the config it reads and of
its inputs' keys) is unchanged and its outputs still exist; changing anything
upstream changes the key and reruns that stage and everything after it.
"""

from __future__ import annotations

import re

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
