"""Resolve a config's ``_target_`` to the function it names, with one clear error line.

Sources (``docs._target_``) and span tiers (``spans.<tier>._target_``) are registered by
naming their function in YAML, as the lightning-hydra-template names its classes;
:func:`hydra.utils.get_method` imports it. Its failures (a module that is missing or
fails to import, a missing name, something not callable) become one ``ValueError`` naming
the config key, the target, the root cause and the interface expected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


def resolve_target(target: str, key: str, interface: str) -> Callable[..., Any]:
    """The callable ``target`` (``package.module.function``) names.

    ``key``: the config key it came from (``docs._target_``), named in the error;
    ``interface``: the signature expected, e.g. ``load(cfg, tab, cache_dir, index) -> SourceData``.
    Raises ``ValueError`` (one line) when it cannot be imported or is not callable.
    """
    from hydra.utils import get_method

    quiet = logging.getLogger("hydra.utils")  # get_method logs the error too, over several lines
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return get_method(str(target))
    except Exception as err:  # hydra wraps import errors of every kind in ImportError
        root: BaseException = err
        while root.__cause__ is not None:
            root = root.__cause__
        reason = " ".join(f"{type(root).__name__}: {root}".split())
        raise ValueError(f"{key}={str(target)!r} cannot be imported ({reason}); name a function {interface}") from None
    finally:
        quiet.setLevel(level)
