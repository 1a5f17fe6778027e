"""The grader's child: run a submission on given inputs and write raw arrays, nothing else.

Started by :mod:`assignments.grader` as ``python -I -B _child.py WORKDIR`` in a fresh
directory, with a scrubbed environment and resource limits. It reads
``WORKDIR/job.json`` (which functions to call, with which arguments) and
``WORKDIR/inputs.npz``, imports the *view* of the library (the answers stubbed out)
and the submission, and for each case writes ``out/<case>.npz`` (raw arrays,
``allow_pickle=False`` on both sides) or ``out/<case>.err`` (the error text, shown
to the student). It never sees the expected values and writes no verdicts: the
parent compares the arrays with reference values it computed itself.

The encoding helpers below are shared with the parent (which imports this file as
a module, never the submission).
"""

import dataclasses
import importlib
import importlib.util
import json
import os
import signal
import sys
import traceback

import numpy as np

# ---------------------------------------------------------------------------
# Wire format: arguments as JSON + arrays; outputs as flat {path|kind: array}
# ---------------------------------------------------------------------------


def decode(value, arrays, torch):
    """JSON structure + arrays -> Python arguments (fresh tensors every call)."""
    if isinstance(value, dict):
        (kind, inner), = value.items()
        if kind == "t":
            return torch.from_numpy(np.array(arrays[inner]))
        if kind == "a":
            return np.array(arrays[inner])
        if kind == "list":
            return [decode(v, arrays, torch) for v in inner]
        if kind == "tuple":
            return tuple(decode(v, arrays, torch) for v in inner)
        if kind == "dict":
            return {k: decode(v, arrays, torch) for k, v in inner.items()}
        if kind == "dtype":
            return getattr(torch, inner)
        if kind == "obj":  # a library config dataclass, e.g. FCOSConfig (built from the view)
            module, name, fields = inner
            if not module.startswith("fcos_from_scratch."):
                raise ValueError(f"refusing to build {module}.{name}")
            return getattr(importlib.import_module(module), name)(**decode(fields, arrays, torch))
        raise ValueError(f"unknown argument kind {kind!r}")
    return value


def flatten(value, torch, path="out"):
    """An output -> ``{"path|kind": ndarray}``; only plain tensors, numbers, lists, tuples, dicts.

    A tensor subclass, a numpy scalar or any other object (e.g. one whose ``__eq__``
    always answers True) is refused: the grader compares raw numbers, not objects.
    """
    if type(value) is torch.Tensor:  # exactly a tensor, no subclass
        data = torch.Tensor.detach(value).cpu()
        if data.dtype in (torch.bfloat16, torch.float16):
            data = data.float()
        return {f"{path}|tensor": np.ascontiguousarray(data.numpy())}
    if type(value) in (bool, int, float, np.float64, np.float32, np.int64, np.bool_):
        return {f"{path}|number": np.asarray(float(value))}
    if type(value) is np.ndarray and value.dtype.kind in "biuf":
        return {f"{path}|ndarray": np.array(value)}
    if type(value) is dict:
        out = {}
        for key in sorted(value):
            if type(key) is not str:
                raise TypeError(f"{path}: dict keys must be str, got {type(key).__name__}")
            out.update(flatten(value[key], torch, f"{path}.{key}"))
        return out
    if isinstance(value, (list, tuple)) and type(value).__eq__ in (list.__eq__, tuple.__eq__):
        out = {f"{path}|len": np.asarray(len(value))}
        for i, item in enumerate(list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)):
            out.update(flatten(item, torch, f"{path}[{i}]"))
        return out
    raise TypeError(f"{path}: returned a {type(value).__module__}.{type(value).__qualname__}; "
                    "expected tensors, numbers, lists, tuples or dicts")


def run_case(case, namespace, arrays, torch):
    """Call what a case names on its decoded arguments; returns the output (and grads)."""
    args = decode(case["args"], arrays, torch)
    kwargs = decode(case["kwargs"], arrays, torch)
    grads = case.get("grad", [])
    for index in grads:
        args[index].requires_grad_(True)
    if "construct" in case:
        cls = namespace[case["construct"]]
        obj = cls(*decode(case["init_args"], arrays, torch), **decode(case["init_kwargs"], arrays, torch))
        if case.get("state") is not None:
            state = decode(case["state"], arrays, torch)
            check_state_keys(obj, state, case["construct"])
            obj.load_state_dict(state, strict=True)
        if hasattr(obj, "eval"):
            obj.eval()
        out = getattr(obj, case["method"])(*args, **kwargs)
    else:
        out = namespace[case["call"]](*args, **kwargs)
    if grads:
        if type(out) is torch.Tensor:
            loss, value = out.sum(), out.detach()
        elif type(out) is dict and all(type(v) is torch.Tensor for v in out.values()):
            loss = sum(v.sum() for v in out.values())  # a dict of loss terms: their total
            value = {k: v.detach() for k, v in out.items()}
        else:
            raise TypeError("expected a tensor (or a dict of tensors) to differentiate")
        torch.Tensor.backward(loss)
        out = {"value": value, "grads": [args[i].grad for i in grads]}
    return out


def check_state_keys(module, state, name):
    """Refuse, in one readable line, a module whose state-dict keys are not the library's."""
    have = set(module.state_dict())
    want = set(state)
    if have != want:
        missing = sorted(want - have)
        unexpected = sorted(have - want)
        raise KeyError(f"{name}'s state_dict keys differ from the library's: missing {missing[:6]}"
                       f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                       f"{' ...' if len(unexpected) > 6 else ''} (build the same submodules, "
                       "with the same attribute names, in the same order)")


# ---------------------------------------------------------------------------
# The child itself
# ---------------------------------------------------------------------------

class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout("this case ran past its time limit")


def main(work):
    with open(os.path.join(work, "job.json")) as f:
        job = json.load(f)
    out_dir = os.path.join(work, "out")
    sys.path.insert(0, job["view"])
    import torch

    torch.set_num_threads(1)
    arrays = dict(np.load(os.path.join(work, "inputs.npz"), allow_pickle=False))

    def fail(name, text):
        with open(os.path.join(out_dir, name + ".err"), "w") as f:
            f.write(text[-4000:])

    stubs = {}
    for name, modname in job["graded"].items():
        stubs[name] = getattr(importlib.import_module(modname), name)
    try:
        spec = importlib.util.spec_from_file_location("submission", os.path.join(work, "submission", job["file"]))
        student = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = student
        spec.loader.exec_module(student)
    except BaseException:  # SystemExit included: a submission cannot end the child "successfully"
        fail("import", traceback.format_exc(limit=3))
        return
    namespace = {}
    for name, stub in stubs.items():
        impl = getattr(student, name, stub)
        namespace[name] = impl
        # Library code that calls a graded name (e.g. FCOS calling assign_targets) calls the student's.
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("fcos_from_scratch"):
                for key, value in list(vars(module).items()):
                    if value is stub:
                        setattr(module, key, impl)
    for name, modname in job.get("drivers", {}).items():  # library code that runs the parts, e.g. training
        namespace[name] = getattr(importlib.import_module(modname), name)
    signal.signal(signal.SIGALRM, _alarm)
    for case in job["cases"]:
        signal.alarm(job["case_seconds"])
        try:
            torch.manual_seed(0)
            flat = flatten(run_case(case, namespace, arrays, torch), torch)
            signal.alarm(0)
            np.savez(os.path.join(out_dir, case["id"] + ".npz"), **flat)
        except BaseException:
            signal.alarm(0)
            fail(case["id"], traceback.format_exc(limit=2))


if __name__ == "__main__":
    main(sys.argv[1])
