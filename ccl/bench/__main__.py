"""``python -m ccl.bench COMMAND``: see :mod:`ccl.bench.cli`."""

from ccl.bench.cli import main

main()
