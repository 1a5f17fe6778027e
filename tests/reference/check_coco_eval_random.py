"""Compare coco_eval with pycocotools live on many random datasets (reference venv only).

    /work/refvenv/bin/python tests/reference/check_coco_eval_random.py [--cases 60]

Each case draws its own generator settings (integer or float boxes, crowd share,
ties, > 100 detections per image and category, categories and images without
GT) and compares the 12 stats and the full precision (T, R, K, A, M) and recall
arrays. Prints the largest difference; exits 1 if it exceeds 1e-9. The frozen
subset the test suite uses is written by ``make_coco_eval_refs.py``.
"""

import argparse
import os
import random
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from coco_cases import make_case  # noqa: E402
from make_coco_eval_refs import pycocotools_evaluator  # noqa: E402

from fcos_from_scratch.evaluation import STAT_KEYS, evaluate_coco  # noqa: E402


def random_settings(seed):
    rng = random.Random(seed)
    num_categories = rng.randint(1, 5)
    return dict(seed=seed, num_images=rng.randint(1, 15), num_categories=num_categories,
                categories_without_gt=rng.randint(0, 1) if num_categories > 1 else 0,
                integer=rng.random() < 0.5, score_decimals=rng.choice([1, 2, 6]),
                crowd_prob=rng.choice([0.0, 0.1, 0.5]), max_gt=rng.randint(0, 10),
                jitter=rng.choice([0.02, 0.1, 0.3]), dense_images=rng.randint(0, 1),
                dense_count=rng.randint(90, 130), size=rng.choice([(100, 120), (480, 640)]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    args = parser.parse_args(argv)
    worst = 0.0
    for seed in range(1000, 1000 + args.cases):
        gt, dets = make_case(**random_settings(seed))
        if not dets:
            continue  # pycocotools' loadRes cannot take an empty list
        ref = pycocotools_evaluator(gt, dets)
        ours = evaluate_coco(gt, dets)
        diff = max(np.abs(np.array([ours.stats[k] for k in STAT_KEYS]) - ref.stats).max(),
                   np.abs(ours.precision - ref.eval["precision"]).max(),
                   np.abs(ours.recall - ref.eval["recall"]).max())
        worst = max(worst, float(diff))
    print(f"{args.cases} random cases: largest difference to pycocotools = {worst:.3g}")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
