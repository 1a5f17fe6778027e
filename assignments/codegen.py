"""Starters, solutions and the grading-time "student view", all derived from the library by AST.

Nothing here is written by hand per function: a unit names the library functions
(or classes) the student writes, and

* the **starter** copies each one's signature and docstring verbatim from the
  library source and replaces the body with a ``NotImplementedError`` that says how
  long the reference is;
* the **solution** copies the library's code verbatim (the graded functions, or the
  plain-loop ``*_reference`` twin a unit teaches from, renamed), together with the
  private helpers of the same module it uses, and imports everything else;
* the **view** is a copy of the library, used only inside the grader's children, in
  which the graded names, their ``*_reference`` twins and the private helpers they
  reach are replaced by the starter's stubs. A submission that imports the
  library's answer therefore imports a stub and gets no credit for it.

Because all three come from the same source, a starter can never drift from the
library: ``tests/assignments`` regenerates the committed starters and compares.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import shutil
import types
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

PACKAGE = "fcos_from_scratch"
REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / PACKAGE

# Every starter and solution starts with these; the names a signature or a body
# needs beyond them are imported explicitly, one line each.
HEADER_IMPORTS = [
    "from __future__ import annotations",
    "",
    "import math",
    "from typing import Dict, List, Optional, Sequence, Tuple",
    "",
    "import numpy as np",
    "import torch",
    "import torch.nn.functional as F",
    "from torch import nn",
]
HEADER_NAMES = {"annotations", "math", "Dict", "List", "Optional", "Sequence", "Tuple", "np",
                "torch", "F", "nn"}


# ---------------------------------------------------------------------------
# Reading the library
# ---------------------------------------------------------------------------

def module_path(modname: str) -> Path:
    """``fcos_from_scratch.ops.nms`` -> the file in this repository."""
    return REPO / (modname.replace(".", "/") + ".py")


def parse_module(modname: str) -> Tuple[List[str], ast.Module]:
    source = module_path(modname).read_text()
    return source.splitlines(), ast.parse(source)


def top_defs(tree: ast.Module) -> Dict[str, ast.AST]:
    """Module-level functions and classes by name."""
    return {node.name: node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def loaded_names(node: ast.AST) -> Set[str]:
    """Every bare name a node reads (a superset of its free names; filtered later)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def reach(modname: str, names: Iterable[str], within=None) -> Set[str]:
    """Module-level functions/classes transitively used by ``names`` (only those in ``within``)."""
    _, tree = parse_module(modname)
    defs = top_defs(tree)
    seen: Set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        node = defs.get(name)
        if node is None:
            continue
        for used in loaded_names(node):
            if used in defs and used not in seen and (within is None or used in within):
                seen.add(used)
                todo.append(used)
    return seen


def private_reach(modname: str, names: Iterable[str]) -> Set[str]:
    """The private (``_``) module-level functions/classes transitively used by ``names``."""
    defs = top_defs(parse_module(modname)[1])
    return reach(modname, names, {n for n in defs if n.startswith("_")})


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def _docstring_end(node) -> int:
    """Last line of the def's signature and docstring (the signature alone if none)."""
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        return first.end_lineno
    return first.lineno - 1  # the signature ends just above the first statement


def code_lines(lines: List[str], node) -> int:
    """Lines of code in a function's body: no docstring, blank lines or comments."""
    start = _docstring_end(node) + 1
    body = lines[start - 1: node.end_lineno]
    return sum(1 for line in body if line.strip() and not line.strip().startswith("#"))


# ---------------------------------------------------------------------------
# Stubs: signature + docstring verbatim, then NotImplementedError
# ---------------------------------------------------------------------------

def _stub_function(lines: List[str], node, public_name: str, length_from=None) -> List[str]:
    head = lines[_first_line(node) - 1: _docstring_end(node)]
    indent = " " * node.body[0].col_offset
    measured = length_from if length_from is not None else (lines, node)
    n = code_lines(*measured)
    message = f"write {public_name}: the library's version is {n} lines of code"
    return head + [f"{indent}raise NotImplementedError({message!r})"]


def stub_lines(lines: List[str], node, length_from=None) -> List[str]:
    """The starter text of one module-level function or class (verbatim up to the bodies)."""
    if isinstance(node, ast.ClassDef):
        out = lines[_first_line(node) - 1: _docstring_end(node)]
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]
        for item in body:
            out.append("")
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out += _stub_function(lines, item, f"{node.name}.{item.name}")
            else:  # class constants and the like stay verbatim
                out += lines[item.lineno - 1: item.end_lineno]
        return out
    return _stub_function(lines, node, node.name, length_from)


# ---------------------------------------------------------------------------
# Imports for the names a piece of code needs
# ---------------------------------------------------------------------------

def import_line(modname: str, name: str) -> str:
    """How to import ``name`` as the library module ``modname`` sees it."""
    module = importlib.import_module(modname)
    value = getattr(module, name)
    if isinstance(value, types.ModuleType):
        real = value.__name__
        return f"import {real}" if real == name else (
            f"import {real} as {name}" if "." in real or real != name else f"import {real}")
    home = getattr(value, "__module__", None)
    if isinstance(home, str) and not home.startswith(PACKAGE) and home != "builtins":
        try:
            if getattr(importlib.import_module(home), name, None) is value:
                return f"from {home} import {name}"
        except ImportError:
            pass
    if isinstance(home, str) and home.startswith(PACKAGE) and not isinstance(value, type(None)):
        if getattr(importlib.import_module(home), name, None) is value:
            return f"from {home} import {name}"
    return f"from {modname} import {name}"


def needed_imports(modname: str, nodes, defined: Set[str]) -> List[str]:
    """Import lines for the module-level names ``nodes`` read that are not ``defined``."""
    module = importlib.import_module(modname)
    names = set()
    for node in nodes:
        names |= loaded_names(node)
    out = []
    for name in sorted(names - defined - HEADER_NAMES):
        if hasattr(module, name):
            out.append(import_line(modname, name))
        elif not hasattr(builtins, name):
            continue  # a local variable
    return sorted(set(out))


def signature_nodes(node) -> List[ast.AST]:
    """What a starter evaluates at definition time: defaults, decorators, class bases."""
    if isinstance(node, ast.ClassDef):
        out = list(node.bases) + list(node.decorator_list)
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out += signature_nodes(item)
            elif not isinstance(item, ast.Expr):
                out.append(item)
        return out
    args = node.args
    return list(args.defaults) + [d for d in args.kw_defaults if d is not None] + list(node.decorator_list)


def _relative_to_absolute(text: str, modname: str) -> str:
    package = modname.rsplit(".", 1)[0]

    def absolute(match):
        dots, rest = len(match.group(1)), match.group(2)
        base = package.split(".")
        base = base[: len(base) - (dots - 1)]
        return "from " + ".".join(base + ([rest] if rest else [])) + " import"

    return re.sub(r"from (\.+)([\w.]*) import", absolute, text)


def _renamed(text: str, renames: Dict[str, str]) -> str:
    for old, new in renames.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


# ---------------------------------------------------------------------------
# Starter, solution and view for one unit
# ---------------------------------------------------------------------------

def _by_module(items) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for item in items:
        out.setdefault(item.module, []).append(item)
    return out


def hidden_names(modname: str, items) -> Set[str]:
    """What the view stubs in one module: graded names, their twins, and their private helpers."""
    names = {i.name for i in items} | {h for i in items for h in i.hide} | {i.source for i in items if i.source}
    defs = top_defs(parse_module(modname)[1])
    # A private helper that public library code outside the unit also needs stays (e.g. grid_points').
    kept_public = [n for n in defs if not n.startswith("_") and n not in names]
    return names | (private_reach(modname, names) - private_reach(modname, kept_public))


def _file_docstring(unit, kind: str) -> List[str]:
    names = ", ".join(f"`{i.name}`" for i in unit.items)
    if kind == "starter":
        text = (f'"""{unit.title} -- write {names}.\n\n'
                f"Starter generated from the library by `python -m assignments start {unit.name}`.\n"
                "Keep every signature and docstring as they are; replace each\n"
                "`raise NotImplementedError` with your code. You may import from\n"
                "`fcos_from_scratch` anything this unit does not ask you to write.\n"
                '"""')
    else:
        text = (f'"""{unit.title} -- the library\'s own code as a submission (for instructors).\n\n'
                f"Generated by `python -m assignments solution {unit.name}`: the graded code\n"
                "and the private helpers it uses are copied verbatim from the library.\n"
                '"""')
    return text.splitlines()


def starter_source(unit) -> str:
    out = _file_docstring(unit, "starter") + [""] + HEADER_IMPORTS
    defined = {i.name for i in unit.items}
    imports: List[str] = []
    blocks: List[List[str]] = []
    for modname, items in _by_module(unit.items).items():
        lines, tree = parse_module(modname)
        defs = top_defs(tree)
        for item in items:
            node = defs[item.name]
            length = None
            if item.source:
                length = (lines, defs[item.source])
            imports += needed_imports(modname, signature_nodes(node), defined)
            blocks.append(stub_lines(lines, node, length))
    imports += list(unit.allowed)
    out += sorted(set(imports))
    for block in blocks:
        out += ["", ""] + block
    return "\n".join(out) + "\n"


def solution_source(unit) -> str:
    out = _file_docstring(unit, "solution") + [""] + HEADER_IMPORTS
    defined = {i.name for i in unit.items}
    imports: List[str] = []
    blocks: List[List[str]] = []
    renames = {i.source: i.name for i in unit.items if i.source}
    copied: Dict[str, str] = {}
    for modname, items in _by_module(unit.items).items():
        lines, tree = parse_module(modname)
        defs = top_defs(tree)
        bodies = [i.source or i.name for i in items]
        hidden = hidden_names(modname, items)
        helpers = sorted(reach(modname, bodies, hidden) - defined - set(bodies), key=lambda n: defs[n].lineno)
        for name in helpers:
            if name in copied and copied[name] != modname:
                raise ValueError(f"helper {name} is defined in {copied[name]} and {modname}")
            copied[name] = modname
        defined |= set(helpers)
        nodes = [defs[n] for n in helpers] + [defs[n] for n in bodies]
        nodes += [n for i in items for n in signature_nodes(defs[i.name])]  # not the fast body it replaces
        for name in helpers:
            node = defs[name]
            blocks.append((modname, lines[_first_line(node) - 1: node.end_lineno]))
        for item in items:
            node = defs[item.name]
            if item.source:
                twin = defs[item.source]
                body = lines[_docstring_end(twin): twin.end_lineno]
                blocks.append((modname, lines[_first_line(node) - 1: _docstring_end(node)] + body))
            else:
                blocks.append((modname, lines[_first_line(node) - 1: node.end_lineno]))
        imports += needed_imports(modname, nodes, defined | set(renames))
    imports += list(unit.allowed)
    out += sorted(set(imports))
    for modname, block in blocks:
        text = _relative_to_absolute("\n".join(block), modname)
        out += ["", ""] + _renamed(text, renames).splitlines()
    return "\n".join(out) + "\n"


def build_view(unit, dest: Path) -> Path:
    """Copy the library to ``dest/fcos_from_scratch`` with the unit's answers stubbed out."""
    target = dest / PACKAGE
    shutil.copytree(LIBRARY, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for modname, items in _by_module(unit.items).items():
        lines, tree = parse_module(modname)
        defs = top_defs(tree)
        for name in sorted(hidden_names(modname, items), key=lambda n: -defs[n].lineno):
            node = defs[name]
            lines[_first_line(node) - 1: node.end_lineno] = stub_lines(lines, node)
        (dest / (modname.replace(".", "/") + ".py")).write_text("\n".join(lines) + "\n")
    return target
