"""Freeze pycocotools' COCOeval (bbox) numbers for the cases in ``coco_cases.py``.

Run in the reference venv (pycocotools installed; the suite never imports it)::

    /work/refvenv/bin/python tests/reference/make_coco_eval_refs.py

Writes ``tests/fixtures/coco_eval_refs.json``: per case, the ground truth and
results themselves (so the tests do not depend on the generator), pycocotools'
12 ``stats`` and their printed summary, the per-class AP (IoU .50:.95, area all, 100 dets, mean over
``precision > -1`` as ``summarize`` does, -1 for a class without GT) and the
library versions used.
"""

import contextlib
import copy
import io
import json
import os
import platform
import sys

import numpy as np
import pycocotools
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coco_cases import CASES, make_case  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "coco_eval_refs.json")


def pycocotools_evaluator(gt, dets, printed=None):
    """A COCOeval (bbox) run on copies of ``gt``/``dets``; ``summarize`` prints into ``printed``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    with contextlib.redirect_stdout(printed if printed is not None else io.StringIO()):
        evaluator.summarize()
    return evaluator


def pycocotools_eval(gt, dets):
    """pycocotools' numbers for one case: 12 stats, their printout, per-class AP, recall."""
    printed = io.StringIO()
    evaluator = pycocotools_evaluator(gt, dets, printed)
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        s = precision[:, :, k, 0, -1]
        per_class[str(cat_id)] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    return {"stats": [float(v) for v in evaluator.stats], "per_class": per_class,
            "summary": printed.getvalue(),
            "recall_all_100": evaluator.eval["recall"][:, :, 0, -1].tolist()}


def main():
    cases = {}
    for name, kwargs in CASES.items():
        gt, dets = make_case(**kwargs)
        cases[name] = {"kwargs": kwargs, "coco_gt": gt, "coco_dets": dets, **pycocotools_eval(gt, dets)}
        print(f"{name:<20} {len(gt['annotations']):4d} GT {len(dets):5d} dets  AP={cases[name]['stats'][0]:.4f}")
    fixture = {"versions": {"pycocotools": pycocotools.__version__ if hasattr(pycocotools, "__version__")
                            else _dist_version("pycocotools"),
                            "numpy": np.__version__, "python": platform.python_version()},
               "stat_order": ["AP", "AP50", "AP75", "APs", "APm", "APl",
                              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
               "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
