"""Where a trained adapter's base model lives, recorded so that a run folder can move.

The train stage records the base model an adapter was trained on (``model/ccl_model.json``:
``base_dir``, the absolute folder at training time, and ``base``, this module's reference):
its path relative to the backbone cache (``paths.cache_dir``) and to the run folder, the
backbone's name and a fingerprint of its files. Loading resolves the reference
(:func:`resolve_base`) through, in order: a cache given now (``--cache-dir`` of
``ccl.cli.predict`` or ``CCL_CACHE``), the same relative place beside the run folder (a run folder
moved or copied together with its cache), the run's configured cache, the recorded absolute
folder, and a copy packed into the run folder (``RUN/base_model``, :func:`pack_base`). A
candidate is used only when its fingerprint matches, so a rebuilt or other model at the same
path is never taken for the trained-on one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

PACKED = "base_model"  # RUN/base_model: a copy of the base beside model/ (ccl.cli.predict --pack)


def fingerprint(folder: Path) -> str:
    """A cheap content fingerprint of a model folder: sha256 over ``config.json``'s bytes and
    the names and sizes of its other files (weights are not read: GBs). 16 hex digits."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for item in sorted(folder.iterdir()):
        if item.is_file() and not item.name.startswith(".") and item.name != "config.json":
            digest.update(f"{item.name}:{item.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def _relative(path: Path, root: Path) -> str | None:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return None


def base_reference(base_dir: str, name: str, cache_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The reference the train stage records for base model ``base_dir`` (a folder or a hub id).

    Keys: ``name`` (the backbone), ``hub_id`` (when ``base_dir`` is not a local folder),
    ``cache_relative`` (its path under ``cache_dir``, or None), ``run_relative`` (its path
    relative to ``run_dir``, e.g. ``../ccl-cache/backbones/tiny-…``) and ``fingerprint``.
    """
    folder = Path(base_dir)
    if not base_dir or not (folder / "config.json").is_file():
        return {"name": name, "hub_id": base_dir}
    return {"name": name, "cache_relative": _relative(folder, cache_dir),
            "run_relative": os.path.relpath(folder.resolve(), Path(run_dir).resolve()),
            "fingerprint": fingerprint(folder)}


def candidates(meta: dict[str, Any], run_dir: Path, cache_dirs: list[Path]) -> list[Path]:
    """The folders :func:`resolve_base` tries, in order (see the module's docstring)."""
    ref = meta.get("base") or {}
    recorded = Path(meta["base_dir"]) if meta.get("base_dir") else None
    relative = ref.get("cache_relative")
    if relative is None and recorded is not None and "fingerprint" not in ref:  # a run of before this record
        relative = str(Path(*recorded.parts[-2:])) if len(recorded.parts) >= 2 else None
    found: list[Path] = []
    given, configured = cache_dirs[:-1], cache_dirs[-1:]
    found += [c / relative for c in given if relative]
    if ref.get("run_relative"):
        found.append(Path(run_dir) / ref["run_relative"])
    found += [c / relative for c in configured if relative]
    if recorded is not None:
        found.append(recorded)
    found.append(Path(run_dir) / PACKED)
    return list(dict.fromkeys(Path(os.path.normpath(p)) for p in found))


def resolve_base(meta: dict[str, Any], run_dir: Path, cache_dir: Path | None = None,
                 configured_cache: Path | None = None) -> str:
    """The base model folder (or hub id) of a trained adapter, wherever the run now lies.

    ``meta``: ``model/ccl_model.json``. ``cache_dir``: a cache given now (else ``CCL_CACHE``);
    ``configured_cache``: the run config's ``paths.cache_dir``. Raises ``FileNotFoundError``
    in one line naming the base model, where it was looked for, and what to do.
    """
    ref = meta.get("base") or {}
    if ref.get("hub_id") is not None and "fingerprint" not in ref:
        return ref["hub_id"] or meta.get("base_dir", "")
    given = [Path(p) for p in (cache_dir, os.environ.get("CCL_CACHE")) if p]
    tried = candidates(meta, Path(run_dir), [*given, *([Path(configured_cache)] if configured_cache else [])])
    want = ref.get("fingerprint")
    for folder in tried:
        if (folder / "config.json").is_file() and (want is None or fingerprint(folder) == want):
            return str(folder)
    recorded = str(meta.get("base_dir") or "")
    if not ref and recorded and not Path(recorded).is_absolute():  # a record of before: a hub id
        return recorded
    name = ref.get("cache_relative") or recorded
    raise FileNotFoundError(
        f"{run_dir}: the base model {name} (backbone {meta.get('backbone')!r}"
        f"{', fingerprint ' + want if want else ''}) that the adapter in model/ was trained on is not found "
        f"(looked in {', '.join(str(p) for p in tried)}); move or copy the backbone cache together with the "
        "run folder, or pass --cache-dir (or set CCL_CACHE) to the cache that holds it, or pack it into the "
        "run with python -m ccl.cli.predict RUN --pack before moving"
    )


def pack_base(meta: dict[str, Any], run_dir: Path, **where: Any) -> Path | None:
    """Copy the run's base model into ``RUN/base_model`` (so the folder moves alone); returns
    the copy, or None when the run needs none (a full fine-tune, or a hub id)."""
    if meta.get("mode") == "full" or "fingerprint" not in (meta.get("base") or {}):
        return None
    source = Path(resolve_base(meta, run_dir, **where))
    target = Path(run_dir) / PACKED
    if source.resolve() == target.resolve():
        return target
    tmp = target.with_name(PACKED + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".*"))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
