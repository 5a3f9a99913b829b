"""``python -m ccl.cli.stats docs=NAME [overrides]``: what a document source holds, as a table.

Composes the Hydra config of ``conf/`` as ``python -m ccl.run`` does and prints the numbers of
:mod:`ccl.data.stats`; ``-h`` / ``--help`` prints this text and that module's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from ccl.cli.errors import cli_main
from ccl.config import check_closed, compose_config
from ccl.data import stats


@cli_main("ccl.cli.stats")
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compose the config from Hydra overrides, collect and print the statistics."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in overrides):  # Hydra overrides have no flags
        print(__doc__ + (stats.__doc__ or ""))
        return {}
    cfg = compose_config(overrides)
    check_closed(cfg)
    result = stats.collect(cfg)
    # Piped output (CI logs, reports) gets a table wide enough not to wrap.
    stats.render(result, Console(width=None if sys.stdout.isatty() else 120))
    return result


if __name__ == "__main__":
    main()
