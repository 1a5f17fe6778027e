"""The three tiers of the package, enforced by walking every module's imports.

* ``ops/``: pure tensor functions; import nothing else of the package.
* shared parts (``models/*.py``, ``models/backbones/``, ``nas/``): import ``ops`` and each
  other, never a detector, the registry, the engine or the config. ``nas/proxy.py`` and
  ``nas/search.py`` are the exception: they train detectors, so they sit with the engine.
* detectors (``models/detectors/*.py``): import ``ops`` and shared parts, never
  another detector, the registry or the engine.
* the engine and the command-line entry points reach detectors only through the
  registry (``fcos_from_scratch.models``), never ``models.detectors`` directly.

Nothing in ``ops`` or the shared tier *names* a detector (no function, class or
constant called ``fcos_*``, ``*rcnn*`` ...): a shared part that does is not shared.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fcos_from_scratch"
DETECTOR_WORDS = ("fcos", "rcnn", "refinedet", "nas_")
# Modules every tier may use: process-group helpers shared by losses and the engine.
COMMON = {"fcos_from_scratch.comm"}
# nas/'s space, decoder and controller are shared parts; its proxy task and search command
# build detectors through the registry and write runs, like the engine.
NAS_APPS = {"fcos_from_scratch.nas.proxy", "fcos_from_scratch.nas.search"}
# Detectors split over two modules: faster_rcnn.py composes its first stage, rpn.py;
# refinedet_lite.py its target assignment, refinedet_targets.py. NAS-FCOS is FCOS with a
# searched decoder: it extends FCOS's module rather than copying it.
DETECTOR_PARTS = {"fcos_from_scratch.models.detectors.faster_rcnn": {"fcos_from_scratch.models.detectors.rpn"},
                  "fcos_from_scratch.models.detectors.refinedet_lite": {
                      "fcos_from_scratch.models.detectors.refinedet_targets"},
                  "fcos_from_scratch.models.detectors.nas_fcos": {"fcos_from_scratch.models.detectors.fcos"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path):
    """Absolute names of the package modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # submodule imports
    return {name for name in found if name.startswith("fcos_from_scratch")}


def tier(name: str) -> str:
    if name.startswith("fcos_from_scratch.ops"):
        return "ops"
    if name.startswith("fcos_from_scratch.models.detectors"):
        return "detector"
    if name in ("fcos_from_scratch.models", "fcos_from_scratch.models.registry",
                "fcos_from_scratch.models.torchvision_weights"):
        return "registry"
    if name in NAS_APPS:
        return "app"  # the proxy task and the search train detectors: they use the registry and the engine
    if name.startswith("fcos_from_scratch.models") or name.startswith("fcos_from_scratch.nas"):
        return "shared"  # nas/ composes ops and shared parts into searchable decoders
    return "app"  # config, engine, data, evaluation, visualize, entry points


def existing(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_the_tiers(path):
    name, own = module_name(path), tier(module_name(path))
    for target in sorted(n for n in imported_modules(path) if existing(n) and n not in COMMON):
        other = tier(target)
        if own == "ops":
            assert other == "ops", f"{name} (ops) imports {target}: ops are pure tensor functions"
        elif own == "shared":
            assert other in ("ops", "shared"), f"{name} (shared) imports {target} ({other})"
        elif own == "detector":
            assert other in ("ops", "shared") or target == name or target in DETECTOR_PARTS.get(name, ()), \
                f"{name} (a detector) imports {target} ({other}): detectors use ops and shared parts only"
        elif own == "app":
            assert other != "detector" or name.startswith("fcos_from_scratch.visualize"), \
                f"{name} imports {target}: reach detectors through fcos_from_scratch.models"


@pytest.mark.parametrize("path", [p for p in MODULES if tier(module_name(p)) in ("ops", "shared")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_shared_tiers_name_no_detector(path):
    tree = ast.parse(path.read_text())
    names = [node.name for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    names += [t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)]
    bad = [n for n in names if any(word in n.lower() for word in DETECTOR_WORDS)]
    assert not bad, f"{path.name} defines detector-named symbols {bad}"


def test_the_walk_sees_every_tier():
    tiers = {tier(module_name(p)) for p in MODULES}
    assert tiers == {"ops", "shared", "detector", "registry", "app"}
    fcos = PACKAGE / "models" / "detectors" / "fcos.py"
    assert "fcos_from_scratch.ops" in imported_modules(fcos)  # relative imports are resolved
    assert "fcos_from_scratch.models.images" in imported_modules(fcos)
