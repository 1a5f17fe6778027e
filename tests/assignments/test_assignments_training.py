"""The training unit: the same isolated path as the graded run, on a tiny run (seconds).

The graded run itself (the library's parts reach the full-marks AP50) is the slow
``test_isolated_grader_full_marks_and_zero_for_every_unit[training]``.
"""

import json
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assignments import codegen, grader  # noqa: E402
from assignments.units import (AP50_THRESHOLDS, TINY_TRAINING_RUN, UNITS, training_cases,  # noqa: E402
                               training_judge, training_unit)

TINY = training_unit(TINY_TRAINING_RUN)


def _flat(detections):
    """What the child sends back for a list of detections (raw arrays)."""
    from assignments import _child

    return _child.flatten(detections, torch)


@pytest.fixture(scope="module")
def tiny_case():
    return training_cases(1234, TINY_TRAINING_RUN)[0]


def test_tiny_run_is_graded_in_isolation_and_appends_a_leaderboard_line(tmp_path):
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / TINY.file).write_text(codegen.solution_source(TINY))
    board = tmp_path / "leaderboard.jsonl"
    results = grader.grade(TINY, submission, tmp_path / "results.json", name="ada", leaderboard_path=board)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    (test,) = results["tests"]
    assert test["name"] == "AP50: public (digits)" and test["max_score"] == 20
    assert "test AP50" in test["output"] and "after 2 steps" in test["output"], test["output"]
    assert [e["name"] for e in results["leaderboard"]] == ["AP50", "AP", "steps", "seconds"]
    (line,) = board.read_text().splitlines()
    entry = json.loads(line)
    assert entry["name"] == "ada" and entry["unit"] == "training" and entry["steps"] == 2
    assert 0 <= entry["AP50"] <= 1 and entry["seconds"] > 0 and entry["score"] == test["score"]


CLAIMS = '''
import training_run  # the grader's driver: replace it with one that only claims a result
training_run.train_and_evaluate = lambda *args, **kwargs: {"AP50": 1.0, "AP": 1.0, "steps": 600.0}
'''


def test_starter_and_a_forged_result_score_zero(tmp_path):
    for name, source in (("starter", codegen.starter_source(TINY)), ("claims", CLAIMS)):
        submission = tmp_path / name
        submission.mkdir()
        (submission / TINY.file).write_text(source)
        results = grader.grade(TINY, submission, name=name)
        assert results["tests"][0]["score"] == 0, name
        assert results["leaderboard"][0] == {"name": "AP50", "value": 0.0, "order": "desc"}


def test_judge_scores_detections_against_the_parents_ground_truth(tiny_case):
    truth = tiny_case.reference
    perfect = [{"boxes": t["boxes"].float(), "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
               for t in truth]
    assert training_judge(tiny_case, _flat(perfect))[0] == 1.0
    wrong_class = [dict(d, labels=(d["labels"] + 1) % 10) for d in perfect]
    assert training_judge(tiny_case, _flat(wrong_class))[0] == 0.0
    nan = [dict(d, boxes=torch.full_like(d["boxes"], float("nan"))) for d in perfect]
    assert training_judge(tiny_case, _flat(nan))[0] == 0.0
    assert training_judge(tiny_case, _flat(perfect[:-1]))[0] == 0.0  # one image short
    assert training_judge(tiny_case, None)[0] == 0.0
    # The child never sees the labels: only images travel.
    assert [type(a) for a in tiny_case.args[0]] == [torch.Tensor] * len(truth)
    assert all(a.dtype == torch.uint8 and a.shape[-1] == 3 for a in tiny_case.args[0])
    assert [low for low, _ in AP50_THRESHOLDS] == sorted((low for low, _ in AP50_THRESHOLDS), reverse=True)


def test_test_images_depend_on_the_grading_seed(tiny_case):
    other = training_cases(99, TINY_TRAINING_RUN)[0]
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(tiny_case.args[0], other.args[0]))
    assert UNITS["training"].max_points() == 20
