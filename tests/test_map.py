"""docs/MAP.md: every ``path::symbol`` it names exists, and is defined where it points.

A row such as ``fcos_from_scratch/ops/nms.py::nms`` must name a file that exists, a
module that imports, and a symbol that module *defines*: a class or function whose
``__module__`` is that module, a constant assigned at the module's top level, or
(``Class.attr``) an attribute in that class's own body. A re-export (``from .nms
import nms`` in a package ``__init__``) does not count, so the map always leads to
the code itself.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "MAP.md"
ENTRY = re.compile(r"`(fcos_from_scratch/[\w/]+\.py)::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)`")
# Anything backticked that looks like an entry, so a malformed one cannot slip past.
LOOKS_LIKE_ENTRY = re.compile(r"`(fcos_from_scratch/[^`]*::[^`]*)`")


def map_text() -> str:
    return MAP.read_text(encoding="utf-8")


def entries():
    return sorted(set(ENTRY.findall(map_text())))


def top_level_assignments(path: Path):
    """Names bound by ``NAME = value`` / ``NAME: T = value`` at the top of a module.

    An alias (``MODELS = DETECTORS``: the value is just another name) is not a
    definition, so it is left out.
    """
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and not isinstance(node.value, ast.Name):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and node.value is not None and not isinstance(node.value, ast.Name)):
            names.add(node.target.id)
    return names


def test_map_has_entries_and_all_are_well_formed():
    found = entries()
    assert len(found) > 100, f"only {len(found)} entries parsed from docs/MAP.md"
    malformed = [s for s in LOOKS_LIKE_ENTRY.findall(map_text()) if not ENTRY.fullmatch(f"`{s}`")]
    assert not malformed, f"entries not of the form `fcos_from_scratch/...py::Name[.attr]`: {malformed}"


def test_every_table_row_points_somewhere():
    rows = [line for line in map_text().splitlines()
            if line.startswith("|") and not re.match(r"^\|\s*(concept|-)", line)]
    assert rows
    empty = [row for row in rows if not ENTRY.search(row)]
    assert not empty, f"rows without a `path::symbol`: {empty}"


@pytest.mark.parametrize("path,symbol", entries(), ids=lambda value: value)
def test_entry_resolves_to_its_home(path, symbol):
    file = ROOT / path
    assert file.is_file(), f"{path} does not exist"
    module_name = path[: -len(".py")].replace("/", ".")
    if module_name.endswith(".__init__"):
        module_name = module_name[: -len(".__init__")]
    module = importlib.import_module(module_name)

    owner_name, _, attr = symbol.partition(".")
    assert hasattr(module, owner_name), f"{module_name} has no {owner_name}"
    owner = getattr(module, owner_name)
    if inspect.isclass(owner) or inspect.isfunction(owner):
        assert owner.__module__ == module_name, (
            f"{path}::{owner_name} is defined in {owner.__module__}, not here: point the map there")
    else:
        assert owner_name in top_level_assignments(file), (
            f"{path}::{owner_name} is not assigned in {path} (imported from elsewhere?)")
    if attr:
        assert inspect.isclass(owner), f"{path}::{owner_name} is not a class, so it has no .{attr}"
        assert attr in vars(owner), f"{owner_name}.{attr} is not defined in the body of {owner_name}"
