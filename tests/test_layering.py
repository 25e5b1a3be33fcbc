"""The package's dependency rules (docs/architecture.md, "Dependencies point one way"), checked on
the source: every top-level module of hierbench is listed here with what it may import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hierbench"

_BASE = {"errors", "spec"}  # what everything may import (spec itself only errors)

# module (file or package under hierbench/) -> the hierbench modules it may import, besides itself
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "spec": {"errors"},
    "_ext": {"errors"},  # and hierbench._C, which nothing else imports
    "ops": {"_ext", "errors"},
    "codec": {"ops", "errors"},
    "transfer": {"_ext"} | _BASE,
    "data": _BASE,
    "models": _BASE,
    "runtime": _BASE,  # torch-free: predictions on a laptop
    "methods": {"_ext", "ops", "codec", "transfer", "data", "models"} | _BASE,
    "profiling": {"models", "runtime"} | _BASE,
    "report": {"runtime"} | _BASE,  # torch-free: tables regenerate from records alone
    # many edges, one torch.distributed cloud: the roles' lower-level pieces, like methods
    "fleet": {"_ext", "ops", "codec", "transfer", "data", "models", "methods"} | _BASE,
    "experiments": {"methods", "fleet", "profiling", "runtime"} | _BASE,
    "reproduce": {"data", "models", "methods", "experiments", "report", "runtime"} | _BASE,
    # the command line sits on top and may use anything
    "cli": {
        "_ext",
        "ops",
        "codec",
        "transfer",
        "data",
        "models",
        "runtime",
        "methods",
        "fleet",
        "profiling",
        "report",
        "experiments",
        "reproduce",
    }
    | _BASE,
}

# Modules that must import without torch (and without numpy): a test blocks both and imports them.
TORCH_FREE = ("hierbench.spec", "hierbench.errors", "hierbench.transfer.link")

# Single files held to a narrower rule than their package: the hierbench modules they may import,
# and the third-party packages (anything else must be the standard library). A test imports each
# with torch and the native extension blocked.
FILE_ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    # the torch-free reference decoder of docs/frame-format.md: numpy + zstandard (+ lz4, optional)
    "codec/reference_decoder.py": ({"errors"}, {"numpy", "zstandard", "lz4"}),
    # the fleet's data partition: the standard library only (every role and the oracle draw it)
    "fleet/partition.py": ({"errors"}, set()),
}


def _imports(path: Path) -> set[str]:
    """hierbench submodules imported by one file (``hierbench.x`` -> ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "hierbench" and len(parts) > 1:
                found.add(parts[1])
    return found - {"__version__"}  # the package's version string, not a module


def _units() -> set[str]:
    """Every top-level module of hierbench: its packages and its .py files."""
    units = {p.stem for p in PKG.glob("*.py")}
    units |= {p.parent.name for p in PKG.glob("*/__init__.py")}
    return units


def _files(module: str) -> list[Path]:
    if (PKG / module).is_dir():
        return sorted((PKG / module).rglob("*.py"))
    return [PKG / f"{module}.py"]


def test_every_module_has_a_place_in_the_layering():
    assert _units() == set(ALLOWED), "add new modules to ALLOWED (and docs/architecture.md)"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_respects_layering(module):
    for f in _files(module):
        bad = _imports(f) - {module, "_C"} - ALLOWED[module]
        assert not bad, f"{f.relative_to(PKG.parent)} imports {sorted(bad)}"


def test_only_ext_imports_the_compiled_module():
    for f in PKG.rglob("*.py"):
        if f.name == "_ext.py":
            continue
        assert "_C" not in _imports(f), f"{f.relative_to(PKG.parent)} imports hierbench._C"


def test_layering_is_acyclic():
    seen: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if seen.get(m):
            return
        for dep in ALLOWED[m] - {m}:
            visit(dep, (*path, m))
        seen[m] = 1

    for m in ALLOWED:
        visit(m, ())


def test_spec_imports_without_torch_or_numpy():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        + "".join(f"import {m}\n" for m in TORCH_FREE)
        + "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _top_level_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file (``numpy.linalg`` -> ``numpy``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("rel", sorted(FILE_ALLOWED))
def test_narrow_files_import_only_what_they_may(rel):
    path = PKG / rel
    hierbench_ok, third_party_ok = FILE_ALLOWED[rel]
    assert not _imports(path) - hierbench_ok, f"{rel} imports {sorted(_imports(path))}"
    others = _top_level_imports(path) - {"hierbench", "__future__"} - set(sys.stdlib_module_names)
    assert others <= third_party_ok, f"{rel} imports {sorted(others - third_party_ok)}"


def test_narrow_files_import_without_torch():
    modules = ["hierbench." + rel.removesuffix(".py").replace("/", ".") for rel in FILE_ALLOWED]
    code = (
        "import sys\n"
        "for m in ('torch', 'hierbench._C', 'hierbench.ops'): sys.modules[m] = None\n"
        + "".join(f"import {m}\n" for m in modules)
        + "assert not [k for k, v in sys.modules.items() if v is not None and "
        "k.split('.')[0] == 'torch']\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=PKG.parent, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
