"""The code's rooms: imports flow one way, and each folder is the package the README says.

contract at the bottom; device and the kind folders on it; then gateway; then dashboard
and the ``jisaku`` command. A module may import from its own room and the rooms below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Each folder, the package it is installed as, and its floor (higher may import lower).
# firmware is MicroPython that imports nothing of jisaku; the Pi imports its switchboard.py.
ROOMS = {"contract": ("jisaku.contract", 0), "firmware": ("jisaku.firmware", 0),
         "device": ("jisaku.device", 1), "kinds": ("jisaku.kinds", 2),
         "gateway": ("jisaku.gateway", 3), "dashboard": ("jisaku.dashboard", 4), "jisaku": ("jisaku", 5)}


def room_of(module: str) -> str | None:
    """The room an imported ``jisaku.…`` module lives in."""
    for folder, (package, _) in sorted(ROOMS.items(), key=lambda item: -len(item[1][0])):
        if module == package or module.startswith(package + "."):
            return folder
    return None


def imports(path: Path, package: str) -> list[str]:
    """Every jisaku module ``path`` imports, relative imports resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found += [f"{node.module}.{alias.name}" if node.module == "jisaku" else node.module
                          for alias in node.names]
    return [name for name in found if name == "jisaku" or name.startswith("jisaku.")]


@pytest.mark.parametrize("folder", sorted(ROOMS))
def test_imports_flow_one_way(folder):
    package, floor = ROOMS[folder]
    upward = []
    for path in sorted((REPO / folder).rglob("*.py")):
        relative = path.relative_to(REPO / folder).with_suffix("")
        module_package = ".".join([package, *relative.parts[:-1]])
        for name in imports(path, module_package):
            target = room_of(name)
            if target is not None and ROOMS[target][1] > floor:
                upward.append(f"{path.relative_to(REPO)} imports {name} ({target} is above {folder})")
    assert upward == []


def test_the_readme_layout_table_names_every_folder():
    table = (REPO / "README.md").read_text(encoding="utf-8").split("| folder | what it is |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"^\| `([\w-]+)/` \|", table, re.M))
    folders = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in ("node_modules", "data", "test-artifacts", "build", "dist")
               and not p.name.endswith(".egg-info")}
    assert named == folders
    for folder, (package, _) in ROOMS.items():
        assert f"`{folder}/`" in table and (folder == "jisaku" or f"`{package}`" in table)
