"""Run torchvision's own CPU tests for our ops, with our functions swapped in.

torchvision's ``test/test_ops.py`` is not in its pip package and is not copied into
this repository: fetch it from the torchvision release you compare against, e.g.::

    curl -LO https://raw.githubusercontent.com/pytorch/vision/v0.29.1/test/test_ops.py

then, in a virtual environment that has torchvision and pytest (the suite itself
never imports torchvision)::

    /work/refvenv/bin/python tests/reference/run_torchvision_op_tests.py test_ops.py
    /work/refvenv/bin/python tests/reference/run_torchvision_op_tests.py test_ops.py --theirs

``--theirs`` runs the same selection on torchvision's own ops (the baseline: all
should pass). ``--repo DIR`` takes our package from another checkout (e.g. an
older commit exported with ``git archive``) to count before/after.

What runs: the test classes of the ops we re-implement (``SELECTED_CLASSES``) on
CPU. ``torchvision.ops.<name>`` is replaced by ours for every name in
``SWAPPED``, and so is the ``roi_align`` that ``torchvision.ops.RoIAlign`` calls.
torchvision's private helpers (``ops.boxes._batched_nms_vanilla`` ...) stay theirs.

What does not run, and why (``NOT_APPLICABLE``): TorchScript (``torch.jit.script``
of our Python functions), torch.fx graph tests, quantized tensors and the
``opcheck`` tests of torchvision's registered C++ operators -- none of them is
about values, shapes, dtypes, gradients or errors of the op. ``test_backward`` of
RoIAlign gradchecks the op and then a scripted copy; the scripted copy is
replaced by the plain function, so the gradient check itself still runs.
"""

import argparse
import collections
import functools
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

SWAPPED = (
    "box_area", "box_convert", "box_iou", "clip_boxes_to_image", "complete_box_iou",
    "distance_box_iou", "generalized_box_iou", "remove_small_boxes",
    "complete_box_iou_loss", "distance_box_iou_loss", "generalized_box_iou_loss",
    "sigmoid_focal_loss", "nms", "batched_nms", "roi_align",
)
SELECTED_CLASSES = (
    "TestRoIAlign", "TestNMS", "TestBoxConvert", "TestBoxArea", "TestBoxIou",
    "TestGeneralizedBoxIou", "TestDistanceBoxIoU", "TestCompleteBoxIou",
    "TestGeneralizedBoxIouLoss", "TestCompleteBoxIouLoss", "TestDistanceBoxIouLoss",
    "TestFocalLoss",
)
# substring of a test name -> why it is not run against our ops
NOT_APPLICABLE = {
    "jit": "TorchScript: our ops are plain Python, not scriptable",
    "fx_trace": "torch.fx tracing of torchvision's module wrappers",
    "is_leaf_node": "torch.fx graph of torchvision's module wrappers",
    "qroialign": "quantized tensors",
    "qroi_align": "quantized tensors",
    "qnms": "quantized tensors",
    "test_schema": "opcheck of torchvision's registered C++ operator",
    "test_autograd_registration": "opcheck of torchvision's registered C++ operator",
    "test_faketensor": "opcheck of torchvision's registered C++ operator",
    "test_aot_dispatch": "opcheck of torchvision's registered C++ operator",
}


def _install_shims(swap: bool, repo: str) -> None:
    """Stand-ins for torchvision's test helpers, then (unless ``--theirs``) our ops."""
    import pytest
    import torch
    import torch.testing._internal.optests as optests
    import torchvision
    import torchvision.ops

    common = types.ModuleType("common_utils")  # torchvision's test/common_utils.py, CPU only
    common.assert_equal = functools.partial(torch.testing.assert_close, rtol=0, atol=0)
    common.cpu_and_cuda = lambda: ("cpu",)
    common.cpu_and_cuda_and_mps = lambda: ("cpu",)
    common.needs_cuda = pytest.mark.skip(reason="CPU-only run")
    common.needs_mps = pytest.mark.skip(reason="CPU-only run")
    sys.modules["common_utils"] = common
    optests.generate_opcheck_tests = lambda *args, **kwargs: None  # C++ operator checks

    if not swap:
        return
    sys.path.insert(0, repo)
    from fcos_from_scratch import ops as ours

    for name in SWAPPED:
        setattr(torchvision.ops, name, getattr(ours, name))
    # torchvision.ops.RoIAlign.forward calls the module-level roi_align
    sys.modules["torchvision.ops.roi_align"].roi_align = ours.roi_align


class _Plugin:
    """Keeps the selected classes, drops the not-applicable tests, counts outcomes."""

    def __init__(self, swap: bool):
        self.swap = swap
        self.outcomes = collections.defaultdict(collections.Counter)  # class -> outcome -> n
        self.failed = []
        self.not_applicable = collections.Counter()

    def pytest_collection_modifyitems(self, config, items):
        kept, dropped = [], []
        for item in items:
            cls = item.cls.__name__ if item.cls else ""
            reason = next((why for key, why in NOT_APPLICABLE.items() if key in item.name), None)
            if cls not in SELECTED_CLASSES:
                dropped.append(item)
            elif reason is not None:
                self.not_applicable[f"{cls}: {reason}"] += 1
                dropped.append(item)
            else:
                kept.append(item)
                if self.swap and cls == "TestRoIAlign":  # plain function for the scripted copy
                    item.cls.get_script_fn = _unscripted_roi_align
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    def pytest_runtest_logreport(self, report):
        cls = report.nodeid.split("::")[1] if "::" in report.nodeid else "?"
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome
            self.outcomes[cls][outcome] += 1
            if outcome == "failed":
                message = str(report.longrepr).strip().splitlines()[-1][:160]
                self.failed.append(f"{report.nodeid.split('::', 1)[1]}: {message}")


def _unscripted_roi_align(self, rois, pool_size):
    import torchvision.ops

    return lambda x: torchvision.ops.roi_align(x, rois, pool_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_file", help="torchvision's test/test_ops.py")
    parser.add_argument("--theirs", action="store_true", help="run on torchvision's own ops")
    parser.add_argument("--repo", default=REPO, help="checkout whose fcos_from_scratch is tested")
    parser.add_argument("-k", default="", help="pytest -k expression to narrow the run")
    args = parser.parse_args(argv)

    import pytest
    import torch
    import torchvision

    torch.set_num_threads(1)
    _install_shims(swap=not args.theirs, repo=os.path.abspath(args.repo))
    plugin = _Plugin(swap=not args.theirs)
    pytest_args = [os.path.abspath(args.test_file), "-q", "-p", "no:cacheprovider",
                   "--no-header", "-rN", "-W", "ignore", "--tb=line"]
    if args.k:
        pytest_args += ["-k", args.k]
    pytest.main(pytest_args, plugins=[plugin])

    who = "torchvision's ops" if args.theirs else f"our ops from {os.path.abspath(args.repo)}"
    print(f"\ntorch {torch.__version__}, torchvision {torchvision.__version__}; {who}")
    total = collections.Counter()
    for cls in SELECTED_CLASSES:
        counts = plugin.outcomes.get(cls, collections.Counter())
        total.update(counts)
        print(f"  {cls:<28} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("  total: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    print("not applicable (not run):")
    for reason, count in sorted(plugin.not_applicable.items()):
        print(f"  {count:4d}  {reason}")
    if plugin.failed:
        print("failed:")
        for line in plugin.failed:
            print("  " + line)
    return 1 if plugin.failed else 0


if __name__ == "__main__":
    sys.exit(main())
