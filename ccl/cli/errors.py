"""One message, not a traceback, for the errors a user can fix -- at every CLI entry point.

Each entry point (``ccl.run``, ``ccl.cli.predict``, ``ccl.cli.spans``, ``ccl.cli.stats``,
``ccl.report``, ``ccl.bench``) runs its work under :func:`cli_errors` (or the
:func:`cli_main` decorator). A *known* error class -- a missing or malformed file,
a failed download, a file that is not valid text in its encoding, a bad config
key or value, a busy or conflicting run folder, a damaged file, a full disk -- is printed
to stderr as one line ``PROG: error: MESSAGE`` (the message names the file or key and what
to do) and the process exits with status 1. Anything else is a bug and keeps its traceback.

A full disk (``ENOSPC``) is known wherever it is raised: CCL's own writes name the file and
the space the step needs (:class:`ccl.utils.atomic.NoSpaceLeft`); a library's write that
names no file is told by the folders the command registered with :func:`watch` (the run
folder, the cache), the fullest first, with the space free on each.

``--debug`` on any of these command lines, or ``HYDRA_FULL_ERROR=1`` / ``CCL_DEBUG=1``
in the environment, re-raises the error with its full traceback.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ccl.utils.atomic import NoSpaceLeft, free_bytes, human_bytes, is_no_space

DEBUG_FLAG = "--debug"
DEBUG_ENV = ("CCL_DEBUG", "HYDRA_FULL_ERROR")
EXIT_CODE = 1

F = TypeVar("F", bound=Callable[..., Any])
WATCHED: dict[str, str] = {}  # what -> folder, named when a full disk names no file


def watch(what: str, folder: Any) -> None:
    """Name ``folder`` (as ``what``, e.g. ``paths.cache_dir``) in a full-disk message that
    names no file."""
    WATCHED[what] = str(folder)


def debug_enabled() -> bool:
    """True when ``CCL_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` asks for full tracebacks."""
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_ENV)


def strip_debug(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--debug``; when it was there, set ``CCL_DEBUG=1`` (and return the rest)."""
    rest = [a for a in argv if a != DEBUG_FLAG]
    if len(rest) != len(argv):
        os.environ["CCL_DEBUG"] = "1"
    return rest


def hydra_debug_flag() -> None:
    """For ``@hydra.main`` scripts: take ``--debug`` out of ``sys.argv`` (Hydra would reject it)
    and set ``HYDRA_FULL_ERROR=1``, so Hydra's own composition errors show their traceback too."""
    sys.argv[1:] = strip_debug(sys.argv[1:])
    if os.environ.get("CCL_DEBUG"):
        os.environ["HYDRA_FULL_ERROR"] = "1"


# CCL's own error classes whose message is the whole story, as ``module:Class``; imported once an
# error is raised (at the top they would load hydra, requests and pooch, ~0.25 s, into every
# command, --help included).
KNOWN_ERRORS = (
    "ccl.config:UnknownConfigKey",
    "ccl.icd.download:IndexUnavailable",
    "ccl.utils.run_folder:RunRefused",
    "ccl.utils.run_folder:StaleStageOutput",
    "ccl.utils.atomic:NoSpaceLeft",
    "ccl.data.sources.common:DownloadError",
)


def known_errors() -> tuple[type[BaseException], ...]:
    """The error classes whose message is the whole story: the built-in file and value errors,
    YAML, Hydra and OmegaConf errors, and :data:`KNOWN_ERRORS` (imported lazily: cheap CLIs stay
    cheap)."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    found: list[type[BaseException]] = [
        FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
        ValueError,  # bad config values, malformed JSON/records (RecordError), UnicodeDecodeError
        yaml.YAMLError, HydraException, OmegaConfBaseException,
    ]
    for entry in KNOWN_ERRORS:
        module, name = entry.split(":")
        found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def is_known(err: BaseException) -> bool:
    """Whether ``err`` gets one line (:func:`known_errors`, or a full disk of any origin)."""
    return isinstance(err, known_errors()) or is_no_space(err)


def _no_space(err: BaseException) -> str:
    """A full disk that CCL's writers did not name: the file when the error has one, else the
    watched folders, the fullest first."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, NoSpaceLeft):
            return str(cause)
        if isinstance(cause, OSError) and cause.filename:
            return str(NoSpaceLeft(cause.filename))
        cause = cause.__cause__ or cause.__context__
    folders = sorted(WATCHED.items(), key=lambda kv: free_bytes(kv[1]) or 0)
    where = "; ".join(f"{what}={folder}: {human_bytes(free_bytes(folder))} free" for what, folder in folders)
    return (f"no space left on device ({where or 'the file was not named'}). Nothing partial was kept: "
            "free some space (or point paths.output_dir / paths.cache_dir to a larger disk) and rerun")


def describe(err: BaseException) -> str:
    """The one-line message for ``err`` (newlines folded; a decode error gets its byte offset)."""
    if is_no_space(err):
        text = _no_space(err)
    elif isinstance(err, UnicodeDecodeError):
        bad = err.object[err.start : err.start + 1]
        text = (f"not valid {err.encoding} text: byte 0x{bad.hex()} at byte offset {err.start} "
                f"({err.reason}); give the file's encoding (e.g. --encoding latin-1) or convert it to UTF-8")
    elif isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in str(err.args):
        text = f"{err.filename}: no such file or folder"
    else:
        text = str(err) or type(err).__name__
        if isinstance(err, KeyError) and len(err.args) == 1 and text == repr(err.args[0]):
            text = str(err.args[0])
    return " ".join(text.split())


@contextmanager
def cli_errors(prog: str) -> Iterator[None]:
    """Turn a known error (:func:`known_errors`) into ``PROG: error: MESSAGE`` and exit 1.

    Re-raises as it is under ``--debug`` / ``HYDRA_FULL_ERROR=1`` / ``CCL_DEBUG=1``.
    """
    try:
        yield
    except Exception as err:
        if debug_enabled() or not is_known(err):
            raise
        print(f"{prog}: error: {describe(err)} (--debug shows the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODE) from None


def one_line_job_errors(prog: str) -> Any:
    """For a job of a Hydra multirun: a known error becomes a ``hydra.errors.CompactHydraException``
    carrying ``PROG: error: MESSAGE``, which Hydra records as the job's failure and prints as
    that one line (after its own "Error executing job with overrides: [...]") when the sweep
    ends, instead of a traceback. Other jobs of the sweep still run. A context manager."""
    failed = __getattr__("JobFailed")

    @contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except Exception as err:
            if debug_enabled() or not is_known(err):
                raise
            raise failed(f"{prog}: error: {describe(err)} (--debug shows the traceback)") from None

    return guard()


def __getattr__(name: str) -> Any:
    """``JobFailed``: a ``hydra.errors.CompactHydraException`` for a sweep job stopped by a known
    error, made on first use (importing Hydra costs a cheap CLI ~1 s) and kept in this module,
    so a launcher that pickles a job's result (joblib, submitit) finds it by name."""
    if name != "JobFailed":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from hydra.errors import CompactHydraException

    cls = type("JobFailed", (CompactHydraException,), {"__module__": __name__, "__qualname__": "JobFailed",
                                                       "__doc__": "A sweep job stopped by a known error (one line)."})
    globals()["JobFailed"] = cls
    return cls


def cli_main(prog: str) -> Callable[[F], F]:
    """Decorate ``main(argv=None)``: ``--debug`` is taken out of argv and the body runs
    under :func:`cli_errors`."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None, *args: Any, **kwargs: Any) -> Any:
            argv = strip_debug(list(sys.argv[1:] if argv is None else argv))
            with cli_errors(prog):
                return main(argv, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return wrap
