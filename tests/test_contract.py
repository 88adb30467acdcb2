"""contract/ is the bottom of the import graph: it imports nothing else of jisaku.

If it did, a device (or the MicroPython firmware's tests, or a student's script) that only
wants the wire contract would pull in the gateway or the dashboard, and a change there could
break the contract's users in ways nobody looks for.
"""

from __future__ import annotations

import ast
from pathlib import Path

CONTRACT = Path(__file__).resolve().parent.parent / "contract"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports made absolute within jisaku.contract."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "jisaku.contract" if node.level == 1 else "jisaku"
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module or "")
    return names


def test_contract_imports_nothing_of_the_other_parts() -> None:
    files = sorted(CONTRACT.glob("*.py"))
    assert files, f"no modules in {CONTRACT}"
    for path in files:
        for name in imported_modules(path):
            if name == "jisaku" or name.startswith("jisaku."):
                assert name.startswith("jisaku.contract"), f"{path.name} imports {name}"
