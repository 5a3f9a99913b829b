"""The package's floors (README "Layout"): data flows one way, and no package reaches into
another's private names. Read from the source with ``ast``, so a new import is checked as
soon as it is written."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ccl"
# The bottom floor: ICD knowledge, the config schema, utilities, record types.
BOTTOM = ("ccl.icd", "ccl.config", "ccl.utils", "ccl.records")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports():
    """(importing module, imported module, imported name or None, line) for every project import."""
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _module(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ccl":
                for alias in node.names:
                    yield here, node.module, alias.name, node.lineno
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ccl":
                        yield here, alias.name, None, node.lineno


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _package(module: str) -> str:
    """``ccl.spans.llm.base`` -> ``ccl.spans``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def test_the_bottom_floor_imports_nothing_above_it():
    upward = [f"{here}:{line} imports {target}" for here, target, _, line in _imports()
              if _within(here, BOTTOM) and not _within(target, BOTTOM)]
    assert not upward, "\n".join(upward)


def test_no_package_imports_a_private_name_of_another():
    private = [f"{here}:{line} imports {target}.{name}" for here, target, name, line in _imports()
               if name and name.startswith("_") and _package(here) != _package(target)]
    assert not private, "\n".join(private)


def test_the_checks_see_the_imports():
    """Guards the two tests above against reading nothing."""
    found = {(here, target) for here, target, _, _ in _imports()}
    assert ("ccl.run", "ccl.config") in found and len(found) > 200


def test_the_data_floor_imports_no_span_tier():
    """Documents come before span tiers: ``ccl.data`` (every source, the demo one included)
    never imports ``ccl.spans``; what both need (gold pairs from the ICD books) lives in ``ccl.data.pairs``."""
    upward = [f"{here}:{line} imports {target}" for here, target, _, line in _imports()
              if _within(here, ("ccl.data",)) and _within(target, ("ccl.spans",))]
    assert not upward, "\n".join(upward)


# The generation layer serves prediction, training data and expansion alike: it stands on the
# bottom floor only (the answer headers it reads are in ccl.records), so nothing above it
# is ever imported back.
GENERATION = ("ccl.generation",)
GENERATION_MAY_IMPORT = (*BOTTOM, "ccl.generation")


def test_the_generation_layer_imports_only_the_floor_below():
    upward = [f"{here}:{line} imports {target}" for here, target, _, line in _imports()
              if _within(here, GENERATION) and not _within(target, GENERATION_MAY_IMPORT)]
    assert not upward, "\n".join(upward)


def test_one_has_chat_template():
    """Chat rendering has one home (ccl.generation.chat); nobody defines it again."""
    defined = [str(p.relative_to(PACKAGE.parent)) for p in sorted(PACKAGE.rglob("*.py"))
               if "def has_chat_template(" in p.read_text()]
    assert defined == ["ccl/generation/chat.py"]


def test_the_expansion_llm_package_starts_without_deep_learning_libraries():
    """An OpenAI-only span-tier run (``ccl/spans/llm/__init__.py``: "imports here stay
    light") must not load torch, transformers or Lightning just to import its backends."""
    import subprocess
    import sys

    code = ("import sys, ccl.spans.llm, ccl.spans.llm.cache, ccl.generation.progress; "
            "print(sorted(m for m in ('torch', 'transformers', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"


# Names several modules define on purpose: each command's entry point and argument parser, the
# span tiers' ``build(ctx)`` protocol, and words whose meaning differs by room (a report page's
# ``render``, a memory ``measure``, an error's ``describe``, a span's ``locate``).
SHARED_NAMES = {"main", "parse_args", "build", "render", "measure", "describe", "locate"}


def test_each_public_function_has_one_home():
    """No twins: a public function or class of one name is defined in one module (issue 27:
    ``is_main_process``/``is_rank0``, two ``read_predictions``, two ``compose_config``)."""
    homes: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(_module(path))
    twins = {name: where for name, where in homes.items() if len(where) > 1 and name not in SHARED_NAMES}
    assert not twins, twins
    assert not any(name in homes for name in ("is_rank0",)), "one rank test: ccl.utils.distributed.is_main_process"
