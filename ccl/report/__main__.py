"""``python -m ccl.report``: see :mod:`ccl.report.cli`."""

import sys

from ccl.report.cli import main

sys.exit(main())
