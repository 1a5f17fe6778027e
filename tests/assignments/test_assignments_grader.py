"""The isolated grader end to end: full marks, zero, and submissions that try to cheat.

Each grade starts one child process (one torch import). Every attack must score
what it deserves and leave a valid results.json behind.
"""

import json
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assignments import codegen, grader  # noqa: E402
from assignments.gradescope import build_zip  # noqa: E402
from assignments.units import UNITS  # noqa: E402

UNIT = UNITS["focal_loss"]  # the smallest unit: attacks are cheap to grade
FULL = 3 * sum(UNIT.weights.values())
VISIBILITY = {"visible", "after_due_date"}


def check_results_file(path):
    """Gradescope's schema, by hand: allowed keys and types, score <= max_score, visibilities."""
    results = json.loads(path.read_text())
    assert set(results) <= {"score", "output", "stdout_visibility", "execution_time", "tests", "leaderboard",
                            "visibility", "output_format"}
    for test in results["tests"]:
        assert set(test) <= {"score", "max_score", "name", "number", "output", "visibility", "tags", "status"}
        assert 0 <= test["score"] <= test["max_score"]
        assert test["visibility"] in VISIBILITY
        assert (test["visibility"] == "visible") == (": public" in test["name"])
    return results


def total(results):
    return sum(t["score"] for t in results["tests"])


def grade_source(tmp_path, source, extra=None, **kwargs):
    submission = tmp_path / "submission"
    submission.mkdir(parents=True)
    (submission / UNIT.file).write_text(source)
    for name, text in (extra or {}).items():
        (submission / name).write_text(text)
    results_file = tmp_path / "results" / "results.json"
    results = grader.grade(UNIT, submission, results_file, **kwargs)
    assert check_results_file(results_file) == json.loads(json.dumps(results))
    return results


def test_library_solution_full_marks_in_isolation(tmp_path):
    results = grade_source(tmp_path, codegen.solution_source(UNIT))
    assert total(results) == pytest.approx(FULL, abs=1e-3)


def test_exit_zero_at_import_scores_zero(tmp_path):
    results = grade_source(tmp_path, "import sys\nsys.exit(0)\n")
    assert total(results) == 0


CHEATER = '''
import builtins, json, os
import numpy as np
import torch
from fcos_from_scratch.ops import sigmoid_focal_loss as library_focal  # a stub while grading

class Liar:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True

torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
builtins.abs = lambda x: 0
fake = {"tests": [{"name": "x", "score": 100, "max_score": 1, "visibility": "visible"}], "score": 100}
for folder in (".", "..", "../..", "out", os.environ.get("HOME", "."), "/tmp"):
    try:
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(fake, f)
    except OSError:
        pass

class Subclass(torch.Tensor):
    def __eq__(self, other): return True

def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    return library_focal(inputs, targets, alpha, gamma, reduction)

def prior_bias(prior_prob):
    return Liar()
'''


def test_patches_lying_objects_forged_results_and_library_import_score_zero(tmp_path):
    sitecustomize = "import json\nopen('results.json', 'w').write('{}')\n"
    conftest = "def pytest_runtest_makereport(item, call):\n    pass\n"
    results = grade_source(tmp_path, CHEATER, extra={"conftest.py": conftest, "sitecustomize.py": sitecustomize})
    assert total(results) == 0
    assert "returned a" in json.dumps(results)  # the Liar was refused, not compared


def test_infinite_loop_and_memory_hog_are_stopped(tmp_path):
    hang = grade_source(tmp_path / "a", "while True:\n    pass\n", timeout=4)
    assert total(hang) == 0 and "time limit" in hang["output"]
    hog = grade_source(tmp_path / "b", "x = bytearray(16 << 30)\n")
    assert total(hog) == 0 and "MemoryError" in hog["output"]


def test_partial_submission_with_conftest_and_sitecustomize_gets_partial_credit(tmp_path):
    """Only the expected file is copied: a dropped conftest.py / sitecustomize.py never runs."""
    source = codegen.solution_source(UNIT).replace("return -math.log((1 - prior_prob) / prior_prob)",
                                                   "return 0.0")
    evil = "import os\nos._exit(0)\n"
    results = grade_source(tmp_path, source, extra={"conftest.py": evil, "sitecustomize.py": evil})
    assert 0 < total(results) < FULL


def test_gradescope_zip_runs_against_a_fake_autograder_tree(tmp_path):
    archive = build_zip(UNIT, tmp_path / "ag.zip")
    root = tmp_path / "autograder"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert "setup.sh" in names and "run_autograder" in names
        assert (z.getinfo("run_autograder").external_attr >> 16) & 0o111
        z.extractall(root)
    (root / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    (root / "submission" / UNIT.file).write_text(codegen.solution_source(UNIT))
    run = subprocess.run([str(root / "run_autograder")], env={"AUTOGRADER_ROOT": str(root),
                          "PATH": str(__import__("pathlib").Path(sys.executable).parent) + ":/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    results = check_results_file(root / "results" / "results.json")
    assert total(results) == pytest.approx(FULL, abs=1e-3)


def test_command_line_from_the_repository_root(tmp_path):
    run = subprocess.run([sys.executable, "-m", "assignments", "start", "nms", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and (tmp_path / "nms.py").is_file() and (tmp_path / "WALKTHROUGH.md").is_file()


def test_fpn_with_other_attribute_names_gets_a_clear_message_and_zero_for_those_cases(tmp_path):
    """The library's state_dict is loaded strictly: keys must match; the head is still graded."""
    unit = UNITS["fpn_head"]
    submission = tmp_path / "submission"
    submission.mkdir()
    source = codegen.solution_source(unit).replace("self.lateral", "self.laterals")
    (submission / unit.file).write_text(source)
    results = grader.grade(unit, submission, tmp_path / "results.json")
    check_results_file(tmp_path / "results.json")
    fpn = [t for t in results["tests"] if t["name"].startswith("FPN")]
    head = [t for t in results["tests"] if t["name"].startswith("FCOSHead")]
    assert fpn and all(t["score"] == 0 for t in fpn)
    assert all(t["score"] == t["max_score"] for t in head)
    assert "state_dict keys differ from the library's: missing ['lateral.0.bias'" in fpn[0]["output"]
