"""The package's dependency rules (docs/architecture.md), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hierbench"

# module (file or package under hierbench/) -> hierbench modules it must not import
FORBIDDEN = {
    "data": {"models", "ops", "codec", "transfer", "methods", "runtime", "report", "_ext"},
    "models": {"data", "ops", "codec", "transfer", "methods", "runtime", "report", "_ext"},
    "ops": {"data", "models", "codec", "transfer", "methods", "runtime", "report"},
    "codec": {"data", "models", "transfer", "methods", "runtime", "report"},
    "transfer": {"data", "models", "ops", "codec", "methods", "runtime", "report"},
    "runtime": {
        "data",
        "models",
        "ops",
        "codec",
        "transfer",
        "methods",
        "report",
        "experiments",
        "_ext",
    },
    "report": {"data", "models", "ops", "codec", "transfer", "methods", "experiments", "_ext"},
    "experiments": {"report"},
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
    return found


def _files(module: str) -> list[Path]:
    if (PKG / module).is_dir():
        return sorted((PKG / module).rglob("*.py"))
    return [PKG / f"{module}.py"] if (PKG / f"{module}.py").exists() else []


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_respects_layering(module):
    for f in _files(module):
        bad = (_imports(f) - {module}) & FORBIDDEN[module]
        assert not bad, f"{f.relative_to(PKG.parent)} imports {sorted(bad)}"


def test_only_ext_imports_the_compiled_module():
    for f in PKG.rglob("*.py"):
        if f.name == "_ext.py":
            continue
        assert "_C" not in _imports(f), f"{f.relative_to(PKG.parent)} imports hierbench._C"
