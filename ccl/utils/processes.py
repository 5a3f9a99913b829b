"""Whether a process on this host is still running (for locks and claims a dead holder left)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host, another user's included.

    ``os.kill(pid, 0)`` sends no signal, only checks (POSIX ``kill(2)``): ``ProcessLookupError``
    means no such process, ``PermissionError`` a live process of another user.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
