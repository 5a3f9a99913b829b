"""Atomic writes (ccl/utils/atomic.py): whole files, plain permissions, nothing left on failure."""

import os
import stat

import pytest

from ccl.utils.atomic import atomic_file, write_json_atomic


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


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "pairs.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("new\n")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]
