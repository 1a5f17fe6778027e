"""The isolated grader: exactly what Gradescope runs.

The grading process (this module) never imports student code. For one unit it

1. copies only the unit's expected file from the submission (no ``conftest.py``,
   no ``sitecustomize.py``, no symlinks, nothing over 1 MB) into a fresh directory;
2. builds the cases -- public ones fixed, hidden ones from a seed file kept out of
   the repository -- and computes the expected values **here**, with the library;
3. runs the submission on the inputs in one child process per test group
   (``python -I -B``, scrubbed environment, fresh working directory, a wall-clock
   timeout and CPU/memory/file-size/core limits, its own session so the whole
   process group is killed); the child writes raw arrays only;
4. loads those arrays (``allow_pickle=False``) and compares them with its own values;
5. writes Gradescope's ``results.json`` last, atomically (a temporary file then
   ``os.replace``), so anything a submission wrote there is overwritten.

A provisional results file (every test 0, "grading did not finish") is written
first, so even a grader killed from outside leaves a valid file behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import importlib
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from . import _child
from .codegen import build_view

CHILD = Path(_child.__file__).resolve()
MAX_FILE_BYTES = 1 << 20  # a submission file larger than 1 MB is not copied
MEMORY_BYTES = 3 << 30  # RLIMIT_AS of a child: torch's import needs ~1.5 GiB of address space
OUTPUT_BYTES = 64 << 20  # RLIMIT_FSIZE: no file the child writes may exceed this
DUMMY_SEEDS = {"default": 1234}  # CI's seeds; the real ones live outside the repository


@dataclasses.dataclass
class Case:
    """One call of a graded function (or a method of a graded class) on fixed inputs."""

    call: str  # the graded name: a function, or the class to construct
    args: list
    kwargs: dict = dataclasses.field(default_factory=dict)
    tier: str = "public"  # "public" (visible) or "hidden" (after the due date)
    family: str = "random"  # the edge-case family a hidden case belongs to
    method: Optional[str] = None  # for a class: the method to call after construction
    init_args: list = dataclasses.field(default_factory=list)
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    state: Optional[dict] = None  # a state_dict loaded with strict=True before the call
    grad: list = dataclasses.field(default_factory=list)  # args to differentiate out.sum() by
    rtol: float = 1e-5
    atol: float = 1e-6
    label: Optional[str] = None  # the name in the results table (default: call)
    # Parent side only (never sent to the child): maps a flat output to the form compared,
    # e.g. candidates as a set where the library's order among equal scores is arbitrary.
    canonical: Optional[Callable[[dict], dict]] = None
    reference: object = None  # parent side only: what a unit's judge scores against (e.g. ground truth)


# ---------------------------------------------------------------------------
# Encoding cases for the child; expected values in this process
# ---------------------------------------------------------------------------

def _encode(value, arrays: Dict[str, np.ndarray]):
    if isinstance(value, torch.Tensor):
        key = f"a{len(arrays)}"
        arrays[key] = value.detach().cpu().numpy().copy()
        return {"t": key}
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value.copy()
        return {"a": key}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if isinstance(value, list):
        return {"list": [_encode(v, arrays) for v in value]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v, arrays) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("fcos_from_scratch."):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"obj": [type(value).__module__, type(value).__name__, _encode(fields, arrays)]}
    return value


def encode_cases(cases: List[Case]):
    arrays: Dict[str, np.ndarray] = {}
    jobs = []
    for index, case in enumerate(cases):
        job = {"id": f"case{index:03d}", "args": _encode(list(case.args), arrays),
               "kwargs": _encode(dict(case.kwargs), arrays), "grad": list(case.grad)}
        if case.method is not None:
            job.update(construct=case.call, method=case.method,
                       init_args=_encode(list(case.init_args), arrays),
                       init_kwargs=_encode(dict(case.init_kwargs), arrays),
                       state=None if case.state is None else _encode(dict(case.state), arrays))
        else:
            job["call"] = case.call
        jobs.append(job)
    return jobs, arrays


def library_namespace(unit) -> dict:
    return {i.name: getattr(importlib.import_module(i.module), i.name) for i in unit.items}


MALFORMED = "malformed"  # the key of a canonical form that could not be built


def _canonical(flat: Optional[dict], case: Case) -> Optional[dict]:
    if flat is None or case.canonical is None:
        return flat
    try:
        return case.canonical(flat)
    except Exception as error:  # a malformed output: no output (the message says why)
        return {MALFORMED: f"malformed output: {error}"[:300]}


def expected_outputs(unit, jobs, arrays) -> List[Optional[dict]]:
    """The library's answer to every case, computed in this process (None: the library raises)."""
    namespace = library_namespace(unit)
    out = []
    for job in jobs:
        torch.manual_seed(0)
        try:
            out.append(_child.flatten(_child.run_case(job, namespace, arrays, torch), torch))
        except Exception as error:  # the library rejects this input: the student must raise too
            out.append({"raises": type(error).__name__})
    return out


def compare(expected: dict, got: Optional[dict], case: Case):
    """(passed, message) for one case."""
    if "raises" in expected:  # never for a well-built case; tests/assignments checks this
        return False, f"grader error: the library raises {expected['raises']} on this case"
    expected, got = _canonical(expected, case), _canonical(got, case)
    if got is None:
        return False, "no output"
    if MALFORMED in got:
        return False, str(got[MALFORMED])
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        return False, f"output structure differs (missing {missing}, unexpected {extra})"
    for key, want in expected.items():
        have = got[key]
        if have.shape != want.shape:
            return False, f"{key}: shape {tuple(have.shape)}, expected {tuple(want.shape)}"
        if key.endswith("|tensor") or key.endswith("|ndarray"):
            if have.dtype != want.dtype:
                return False, f"{key}: dtype {have.dtype}, expected {want.dtype}"
        if want.dtype.kind == "f":
            if not np.allclose(have, want, rtol=case.rtol, atol=case.atol, equal_nan=True):
                worst = np.nanmax(np.abs(have.astype(np.float64) - want)) if want.size else 0.0
                return False, f"{key}: values differ (max abs error {worst:.3g})"
        elif not np.array_equal(have, want):
            return False, f"{key}: values differ"
    return True, "ok"


# ---------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------

def _limits(cpu_seconds: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_child(unit, submission_file: Optional[Path], jobs, arrays, timeout: float,
              case_seconds: Optional[int] = None, extra_env: Optional[dict] = None) -> Dict[str, dict]:
    """Run the submission on the cases in a fresh directory; returns {case id: flat outputs or error}."""
    root = Path(tempfile.mkdtemp(prefix=f"grade_{unit.name}_"))
    try:
        work = root / "work"
        (work / "out").mkdir(parents=True)
        (work / "submission").mkdir()
        (work / "tmp").mkdir()
        view = root / "view"
        view.mkdir()
        build_view(unit, view)
        for source in unit.driver_files:  # library-side code that runs the student's parts
            shutil.copyfile(source, view / Path(source).name)
        if submission_file is not None:
            shutil.copyfile(submission_file, work / "submission" / unit.file)
        graded = {i.name: i.module for i in unit.items}
        (work / "job.json").write_text(json.dumps(
            {"view": str(view), "file": unit.file, "graded": graded, "cases": jobs,
             "drivers": dict(unit.drivers), "case_seconds": case_seconds or unit.case_seconds}))
        np.savez(work / "inputs.npz", **arrays)
        child = root / "child.py"
        shutil.copyfile(CHILD, child)
        env = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work / "tmp"),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8",
               **(extra_env or {})}
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(child), str(work)], cwd=work, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_limits(int(timeout) + 5), start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=timeout)
            status = f"exit status {process.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            status = f"killed after the {timeout:.0f} s time limit"
            stderr = b""
        results: Dict[str, dict] = {"_status": {"text": status, "stderr": stderr[-2000:].decode(errors="replace")}}
        import_error = work / "out" / "import.err"
        if import_error.is_file():
            results["_import"] = {"error": import_error.read_text(errors="replace")[-1500:]}
        for job in jobs:
            arrays_file = work / "out" / (job["id"] + ".npz")
            error_file = work / "out" / (job["id"] + ".err")
            if arrays_file.is_file() and not arrays_file.is_symlink():
                try:
                    with np.load(arrays_file, allow_pickle=False) as data:
                        results[job["id"]] = {"flat": {k: data[k] for k in data.files}}
                    continue
                except Exception as error:  # a malformed file is no output
                    results[job["id"]] = {"error": f"unreadable output ({type(error).__name__})"}
                    continue
            if error_file.is_file() and not error_file.is_symlink():
                results[job["id"]] = {"error": error_file.read_text(errors="replace")[-800:]}
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# Grading a unit
# ---------------------------------------------------------------------------

def load_seed(unit, seeds_path: Optional[Path]) -> int:
    seeds = DUMMY_SEEDS if seeds_path is None else json.loads(Path(seeds_path).read_text())
    return int(seeds.get(unit.name, seeds.get("default", DUMMY_SEEDS["default"])))


def _submission_file(unit, submission: Path) -> Optional[Path]:
    path = Path(submission) / unit.file
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        return None
    return path


def _tests(unit, cases: List[Case], verdicts, messages) -> List[dict]:
    """One Gradescope test per (function, tier, family); partial credit by cases passed."""
    groups: Dict[tuple, list] = {}
    for case, ok, message in zip(cases, verdicts, messages):
        key = (case.label or case.call, case.tier, case.family)
        groups.setdefault(key, []).append((ok, message))
    tests = []
    for number, ((label, tier, family), outcomes) in enumerate(groups.items(), start=1):
        max_score = unit.points_for(label, tier, family, [k for k in groups if k[0] == label and k[1] == tier])
        passed = sum(float(ok) for ok, _ in outcomes)  # a judge may give a fraction of a case
        failures = [m for ok, m in outcomes if float(ok) < 1][:3]
        output = f"{passed:g}/{len(outcomes)} cases passed" + ("" if not failures else ":\n" + "\n".join(failures))
        tests.append({
            "number": str(number), "name": f"{label}: {tier} ({family})",
            "score": round(max_score * passed / len(outcomes), 4), "max_score": round(max_score, 4),
            "output": output, "visibility": "visible" if tier == "public" else "after_due_date",
        })
    return tests


def write_results(path: Path, results: dict) -> None:
    """Atomically replace ``path`` (a temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".results_", suffix=".json")
    with os.fdopen(handle, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(temporary, path)


def submitter_name(submission: Path) -> str:
    """Gradescope's ``submission_metadata.json`` (next to the submission) names the students."""
    metadata = Path(submission).resolve().parent / "submission_metadata.json"
    try:
        users = json.loads(metadata.read_text())["users"]
        return ", ".join(str(u.get("name") or u.get("email") or u.get("id")) for u in users)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Path(submission).resolve().name


def append_leaderboard_line(path: Path, unit, name: str, entries: list, score: float) -> None:
    """One JSON line per graded run: name, unit, the leaderboard numbers, the score."""
    line = {"name": name, "unit": unit.name, **{e["name"]: e["value"] for e in entries}, "score": score,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def grade(unit, submission: Path, results_path: Optional[Path] = None, seeds_path: Optional[Path] = None,
          tiers=("public", "hidden"), timeout: Optional[float] = None, name: Optional[str] = None,
          leaderboard_path: Optional[Path] = None) -> dict:
    """Grade one unit; returns Gradescope's results dict (and writes it if ``results_path``).

    A unit with a leaderboard (training) also puts Gradescope's ``leaderboard`` entries
    in the results and, with ``leaderboard_path``, appends them as one JSON line.
    """
    started = time.monotonic()
    cases = [c for c in unit.cases(load_seed(unit, seeds_path)) if c.tier in tiers]
    jobs, arrays = encode_cases(cases)
    if results_path is not None:  # provisional: a valid file exists whatever happens next
        write_results(results_path, {"score": 0, "output": "Grading did not finish.", "tests": []})
    # Expected values by the library, here; a unit graded by a threshold (training) has a judge instead.
    expected = [None] * len(jobs) if unit.judge else expected_outputs(unit, jobs, arrays)
    file = _submission_file(unit, Path(submission))
    outputs = run_child(unit, file, jobs, arrays, timeout or unit.timeout, extra_env=unit.child_env())
    verdicts, messages = [], []
    for case, job, want in zip(cases, jobs, expected):
        got = outputs.get(job["id"], {})
        if unit.judge:  # a fraction in [0, 1] and why
            ok, message = unit.judge(case, got.get("flat"))
        else:
            ok, message = compare(want, got.get("flat"), case)
        if not ok and "error" in got and (want is None or "raises" not in want):
            message = got["error"].strip().splitlines()[-1][:300]
        verdicts.append(ok)
        messages.append(f"{job['id']}: {message}")
    tests = _tests(unit, cases, verdicts, messages)
    notes = []
    if file is None:
        notes.append(f"{unit.file} not found in the submission (or not a regular file under 1 MB).")
    if "_import" in outputs:
        notes.append("Importing your file failed:\n" + outputs["_import"]["error"])
    status = outputs["_status"]["text"]
    if not status.startswith("exit status 0"):
        notes.append(f"Your code's process ended abnormally ({status}).")
    total = sum(t["score"] for t in tests)
    maximum = sum(t["max_score"] for t in tests)
    results = {
        "output": f"{unit.name}: {total:g}/{maximum:g} points. " + " ".join(notes),
        "stdout_visibility": "hidden",
        "execution_time": round(time.monotonic() - started, 1),
        "tests": tests,
    }
    if unit.leaderboard is not None and cases:  # Gradescope's leaderboard: [{"name", "value", "order"}]
        results["leaderboard"] = unit.leaderboard(cases[0], outputs.get(jobs[0]["id"], {}).get("flat"),
                                                  results["execution_time"])
        if leaderboard_path is not None:
            append_leaderboard_line(leaderboard_path, unit, name or submitter_name(submission),
                                    results["leaderboard"], round(total, 4))
    if results_path is not None:
        write_results(results_path, results)
    return results


def format_table(results: dict) -> str:
    rows = [f"{'test':58s} {'score':>7s} {'max':>5s}"]
    for test in results["tests"]:
        rows.append(f"{test['name'][:58]:58s} {test['score']:7g} {test['max_score']:5g}")
    total = sum(t["score"] for t in results["tests"])
    maximum = sum(t["max_score"] for t in results["tests"])
    rows.append(f"{'total':58s} {total:7g} {maximum:5g}")
    return "\n".join(rows)
