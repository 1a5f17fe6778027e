"""Every unit, in process: starters match the library, the library gets full marks, the starter zero.

The isolated grader is exercised end to end in test_assignments_grader.py; here the
same cases, encodings and comparisons run in this process (fast), with the
generated solution and starter imported directly -- which the grader never does.
"""

import ast
import importlib.util
import json
import sys

import pytest
import torch

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assignments import _child, codegen, grader  # noqa: E402
from assignments.units import UNITS  # noqa: E402

STARTERS = REPO / "assignments" / "starters"
# Units graded by equality with the library, case by case (training is graded on AP50:
# tests/assignments/test_assignments_training.py).
BY_EQUALITY = sorted(name for name, unit in UNITS.items() if unit.judge is None)


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score(unit, module):
    cases = unit.cases(grader.DUMMY_SEEDS["default"])
    jobs, arrays = grader.encode_cases(cases)
    expected = grader.expected_outputs(unit, jobs, arrays)
    namespace = {i.name: getattr(module, i.name) for i in unit.items}
    verdicts = []
    for case, job, want in zip(cases, jobs, expected):
        assert "raises" not in want, f"{unit.name} {job['id']}: the library raises on its own case"
        try:
            got = _child.flatten(_child.run_case(job, namespace, arrays, torch), torch)
        except NotImplementedError:
            got = None
        verdicts.append(grader.compare(want, got, case)[0])
    return sum(verdicts), len(verdicts)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_committed_starter_is_regenerated_verbatim(name):
    unit = UNITS[name]
    committed = STARTERS / name / unit.file
    assert committed.read_text() == codegen.starter_source(unit), (
        f"{committed} drifted from the library: run `python -m assignments start {name} "
        f"--out assignments/starters/{name}`")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_starter_copies_signature_and_docstring_from_the_library(name):
    unit = UNITS[name]
    starter = ast.parse(codegen.starter_source(unit))
    defs = codegen.top_defs(starter)
    for item in unit.items:
        library = codegen.top_defs(codegen.parse_module(item.module)[1])[item.name]
        assert ast.get_docstring(defs[item.name]) == ast.get_docstring(library)
        if not isinstance(library, ast.ClassDef):
            assert ast.dump(defs[item.name].args) == ast.dump(library.args)


@pytest.mark.parametrize("name", BY_EQUALITY)
def test_library_gets_full_marks_and_starter_zero(name, tmp_path):
    unit = UNITS[name]
    (tmp_path / "solution.py").write_text(codegen.solution_source(unit))
    passed, total = _score(unit, _load(tmp_path / "solution.py", f"solution_{name}"))
    assert passed == total
    passed, total = _score(unit, _load(STARTERS / name / unit.file, f"starter_{name}"))
    assert passed == 0


@pytest.mark.parametrize("name", BY_EQUALITY)
def test_every_unit_has_public_and_hidden_cases_for_every_graded_name(name):
    unit = UNITS[name]
    cases = unit.cases(7)
    for item in unit.items:
        tiers = {c.tier for c in cases if c.call == item.name}
        assert tiers == {"public", "hidden"}, item.name
    assert [c.args for c in unit.cases(7) if c.tier == "public"] is not None
    other = unit.cases(8)
    hidden = [c for c in cases if c.tier == "hidden"]
    def differs(a, b):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape != b.shape or not torch.equal(a, b)

    def arrays(case):  # the case's tensors: arguments (also inside lists) and a module's state
        values = list(case.args) + list((case.state or {}).values())
        flat = []
        while values:
            value = values.pop(0)
            if isinstance(value, (list, tuple)):
                values = list(value) + values
            elif hasattr(value, "shape"):
                flat.append(value)
        return flat

    assert any(differs(a, b) for c, d in zip(hidden, [c for c in other if c.tier == "hidden"])
               for a, b in zip(arrays(c), arrays(d))), \
        "hidden cases must depend on the seed"


def test_view_stubs_the_answers_but_keeps_the_rest(tmp_path):
    unit = UNITS["nms"]
    codegen.build_view(unit, tmp_path)
    text = (tmp_path / "fcos_from_scratch" / "ops" / "nms.py").read_text()
    tree = codegen.top_defs(ast.parse(text))
    for name in ("nms", "nms_reference", "batched_nms", "_greedy_blocks"):
        body = tree[name].body
        assert isinstance(body[-1], ast.Raise), name
    boxes = (tmp_path / "fcos_from_scratch" / "ops" / "boxes.py").read_text()
    assert boxes == (REPO / "fcos_from_scratch" / "ops" / "boxes.py").read_text()


def test_outputs_must_be_plain_tensors_numbers_or_containers():
    class Sub(torch.Tensor):
        pass

    class Liar:
        def __eq__(self, other):
            return True

    for value in (torch.zeros(2).as_subclass(Sub), Liar(), [torch.zeros(1), Liar()]):
        with pytest.raises(TypeError):
            _child.flatten(value, torch)
    assert set(_child.flatten((torch.zeros(1), 2.0), torch)) == {"out|len", "out[0]|tensor", "out[1]|number"}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_solution_imports_nothing_the_grading_view_stubs(name):
    """The view stubs the answers; what the solution imports from a unit module must survive it."""
    unit = UNITS[name]
    hidden = {m: codegen.hidden_names(m, [i for i in unit.items if i.module == m]) for m in {i.module for i in unit.items}}
    for node in ast.parse(codegen.solution_source(unit)).body:
        if isinstance(node, ast.ImportFrom) and node.module in hidden:
            for alias in node.names:
                used = {alias.name} | codegen.reach(node.module, [alias.name])
                assert not used & hidden[node.module], (alias.name, used & hidden[node.module])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(UNITS))
def test_isolated_grader_full_marks_and_zero_for_every_unit(name, tmp_path):
    unit = UNITS[name]
    (tmp_path / unit.file).write_text(codegen.solution_source(unit))
    results = grader.grade(unit, tmp_path)
    assert sum(t["score"] for t in results["tests"]) == pytest.approx(sum(t["max_score"] for t in results["tests"]))
    results = grader.grade(unit, STARTERS / name)
    assert sum(t["score"] for t in results["tests"]) == 0


def test_candidates_are_compared_as_sets_per_image():
    """topk's order among equal scores is free: a permutation passes, a missing or wrong row fails."""
    unit = UNITS["fcos_loss_inference"]
    case = next(c for c in unit.cases(7) if c.call == "select_candidates" and c.family == "ties")
    jobs, arrays = grader.encode_cases([case])
    (want,) = grader.expected_outputs(unit, jobs, arrays)
    boxes, scores, labels = (want[f"out[{i}]|tensor"] for i in range(3))
    order = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(0)).numpy()
    permuted = dict(want, **{"out[0]|tensor": boxes[:, order], "out[1]|tensor": scores[:, order],
                             "out[2]|tensor": labels[:, order]})
    assert grader.compare(want, permuted, case)[0]
    kept = scores[0] > -1
    assert kept.sum() > 1
    dropped = scores.copy()
    dropped[0, kept.nonzero()[0][0]] = -1.0  # one candidate masked
    assert not grader.compare(want, dict(want, **{"out[1]|tensor": dropped}), case)[0]
    relabelled = labels.copy()
    relabelled[0, kept.nonzero()[0][0]] += 1
    assert not grader.compare(want, dict(want, **{"out[2]|tensor": relabelled}), case)[0]
    ok, message = grader.compare(want, {"out|len": want["out|len"]}, case)
    assert not ok and message.startswith("malformed output")
