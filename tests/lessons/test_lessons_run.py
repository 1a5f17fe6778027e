"""Every lesson runs, as a plain script, in fast mode, within its time budget.

Lessons are ``lessons/NN_topic.py`` (see lessons/README.md for the conventions).
Each runs in a fresh subprocess with ``LESSONS_FAST=1``, a throw-away
``FCOS_DATA_ROOT`` and the Agg backend, and must end by printing exactly
``LESSON COMPLETE: NN_topic``. New lessons are picked up by the glob, no edit here.
"""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from fcos_from_scratch.models import DETECTORS

LESSONS = REPO / "lessons"
LESSON_NAME = re.compile(r"^\d\d_[a-z0-9]+(?:_[a-z0-9]+)*\.py$")
BUDGET_S = 60  # per lesson in fast mode on a busy 2-core machine (they take 4-20 s)


def lesson_files():
    return sorted(p for p in LESSONS.glob("[0-9][0-9]_*.py"))


def test_lessons_exist_and_are_named_nn_topic():
    files = lesson_files()
    assert len(files) >= 9
    bad = [p.name for p in files if not LESSON_NAME.match(p.name)]
    assert not bad, f"lesson names must be NN_topic.py (lowercase, underscores): {bad}"
    numbers = [p.name[:2] for p in files]
    assert len(numbers) == len(set(numbers)), f"two lessons share a number: {numbers}"


def test_every_registered_detector_has_a_lesson():
    names = [p.stem for p in lesson_files()]
    missing = [d for d in DETECTORS if not any(d in n for n in names)]
    assert not missing, f"detectors without a lesson (a file lessons/NN_<name>.py): {missing}"


@pytest.mark.parametrize("lesson", lesson_files(), ids=lambda p: p.stem)
def test_lesson_is_plain_python_without_magics_or_torchvision(lesson):
    source = lesson.read_text(encoding="utf-8")
    assert not re.search(r"^\s*[%!]", source, re.MULTILINE), "no IPython magics or shell escapes"
    assert not re.search(r"^\s*(import|from)\s+torchvision", source, re.MULTILINE), "no torchvision"
    assert source.lstrip().startswith("# %%"), "percent format: start with a # %% cell"
    assert re.search(rf'print\("LESSON COMPLETE: {lesson.stem}"\)\s*$', source), \
        "the last cell prints the completion marker"


@pytest.mark.parametrize("lesson", lesson_files(), ids=lambda p: p.stem)
def test_lesson_runs_in_fast_mode(lesson, tmp_path):
    env = dict(os.environ, LESSONS_FAST="1", FCOS_DATA_ROOT=str(tmp_path / "data"), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        result = subprocess.run([sys.executable, str(lesson)], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{lesson.name} took longer than its {BUDGET_S} s budget in fast mode")
    assert result.returncode == 0, f"{lesson.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line == f"LESSON COMPLETE: {lesson.stem}", f"missing completion marker, last line {last_line!r}"
