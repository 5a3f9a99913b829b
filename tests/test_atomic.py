"""Atomic writes (ccl/utils/atomic.py): plain permissions (failures: tests/test_run_folder.py)."""

import os
import stat

from ccl.utils.atomic import write_json_atomic


def test_an_atomic_file_gets_the_permissions_of_a_plain_open(tmp_path):
    """A shared cache must stay readable by others: mkstemp's private 0o600 is not kept."""
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "metrics.json", {"micro_f1": 0.5})
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644

