"""A Gradescope autograder zip for one unit: ``setup.sh`` and ``run_autograder`` at its root.

``source/`` holds this repository's ``fcos_from_scratch`` and ``assignments`` and the
seed file. ``run_autograder`` closes the source and results folders to other users
(Gradescope's advice: the student's code then cannot read the seeds or forge the
results when the child runs as an unprivileged user) and runs exactly
``python -m assignments grade``. ``AUTOGRADER_ROOT`` (default ``/autograder``) lets
the tests run it against a fake tree.
"""

import json
import zipfile
from pathlib import Path

from .codegen import REPO

SETUP = """#!/bin/bash
set -e
pip3 install torch numpy pillow matplotlib
cd /autograder/source && pip3 install -e .
"""

RUN = """#!/bin/bash
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
chmod o= "$ROOT/source" "$ROOT/results" 2>/dev/null || true
cd "$ROOT/source" && exec python3 -B -m assignments grade {unit} \\
    --submission "$ROOT/submission" --results "$ROOT/results/results.json" --seeds "$ROOT/source/seeds.json" \\
    --leaderboard "$ROOT/results/leaderboard.jsonl"
"""


def _add_executable(archive: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o100755 << 16
    archive.writestr(info, text)


def build_zip(unit, out: Path, seeds: Path = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seed_text = Path(seeds).read_text() if seeds else json.dumps({"default": 1234})
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        _add_executable(archive, "setup.sh", SETUP)
        _add_executable(archive, "run_autograder", RUN.format(unit=unit.name))
        archive.writestr("source/seeds.json", seed_text)
        for folder in ("fcos_from_scratch", "assignments"):
            for path in sorted((REPO / folder).rglob("*.py")):
                if "__pycache__" not in path.parts and "starters" not in path.parts:
                    archive.write(path, f"source/{path.relative_to(REPO)}")
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            archive.write(REPO / name, f"source/{name}")
    return out
