"""The oracle must not share code with what it checks: ``methods/plain.py`` imports nothing from
``hierbench.methods`` but its config (a bug in the roles' modules would otherwise be on both sides
of every comparison)."""

from __future__ import annotations

import ast
from pathlib import Path

import hierbench.methods


def test_plain_imports_nothing_of_the_roles():
    path = Path(hierbench.methods.__file__).with_name("plain.py")
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    bad = {m for m in modules if m.startswith("hierbench.methods")} - {"hierbench.methods.config"}
    assert not bad, f"plain.py imports {sorted(bad)}"
