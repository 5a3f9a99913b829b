"""``python -m ccl.cli.audit docs=NAME [overrides]``: the contamination audit of a run's data.

Builds the data of a run (as the data stage does, in a temporary folder, with
``audit.enabled=true``) and prints the report the data stage writes into
``data_manifest.json`` under ``audit``. The rules and settings are
:mod:`ccl.data.audit`'s; ``-h`` / ``--help`` prints this text.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ccl.cli.errors import cli_main
from ccl.config import compose_config
from ccl.data.audit import render
from ccl.stages.data import build_data


@cli_main("ccl.cli.audit")
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compose the config from Hydra overrides (as ``ccl.cli.stats``), build the data, print the audit.
    ``-h`` / ``--help`` prints the module's text."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in overrides):  # Hydra overrides have no flags
        print(__doc__)
        return {}
    cfg = compose_config(["audit.enabled=true", *overrides])
    console = Console(width=None if sys.stdout.isatty() else 120)
    with tempfile.TemporaryDirectory() as run_dir:
        bundle = build_data(cfg, Path(run_dir), Console(quiet=True))
    report = bundle.manifest["audit"]
    render(report, console)
    return report


if __name__ == "__main__":
    main()
