"""Random COCO ground truth + results for testing evaluators (pure Python ``random``).

Used by ``make_coco_eval_refs.py`` (whose output, data included, is frozen in
``tests/fixtures/coco_eval_refs.json``) and by ``benchmarks/bench_eval.py``.
The cases are built to hit every rule of COCOeval: crowd regions, GT ``area``
different from ``w * h`` and exactly on the small/medium/large bounds, more than
100 detections per image and category, images without GT, categories without
GT, tied scores, integer boxes (so IoUs tie exactly), duplicated GT boxes.
"""

import math
import random


def _box(rng, width, height, integer, min_side=2.0, max_side=300.0):
    w = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
    h = w * math.exp(rng.uniform(-0.7, 0.7))
    x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
    box = [x, y, min(w, width - x), min(h, height - y)]
    return [float(round(v)) if integer else round(v, 2) for v in box]


def _jitter(rng, box, scale, integer):
    x, y, w, h = box
    out = [x + rng.gauss(0, scale * w), y + rng.gauss(0, scale * h),
           max(w * math.exp(rng.gauss(0, scale)), 0.0), max(h * math.exp(rng.gauss(0, scale)), 0.0)]
    return [float(round(v)) if integer else round(v, 2) for v in out]


def _gt_area(rng, box, bound_areas):
    """Mostly less than w*h (a mask inside its box); sometimes exactly a range bound."""
    u = rng.random() if bound_areas else 1.0
    if u < 0.05:
        return float(32**2)
    if u < 0.10:
        return float(96**2)
    if u < 0.3:
        return box[2] * box[3]
    return round(box[2] * box[3] * rng.uniform(0.5, 1.0), 2)


def make_case(seed, num_images=20, num_categories=4, categories_without_gt=1, max_gt=8,
              dets_per_gt=(0, 3), background_dets=(0, 10), crowd_prob=0.08,
              empty_image_prob=0.15, score_decimals=2, integer=False, wrong_class_prob=0.1,
              jitter=0.12, size=(480, 640), dense_images=0, dense_count=130, bound_areas=True):
    """Return ``(coco_gt, coco_dets)`` for one random case.

    ``dense_images`` images get ``dense_count`` extra detections of one category,
    to exercise the ``maxDets = 100`` cut per image and category.
    """
    rng = random.Random(seed)
    height, width = size
    images = [{"id": 7 + 3 * i, "height": height, "width": width} for i in range(num_images)]
    categories = [{"id": 1 + 2 * k, "name": f"class_{k}"} for k in range(num_categories)]
    gt_cats = [c["id"] for c in categories[: num_categories - categories_without_gt]]
    annotations, dets = [], []
    for image in images:
        if rng.random() < empty_image_prob:
            boxes = []
        else:
            boxes = [(_box(rng, width, height, integer), rng.choice(gt_cats))
                     for _ in range(rng.randint(0, max_gt))]
            if boxes and integer and rng.random() < 0.5:  # an exact duplicate GT box
                boxes.append((list(boxes[0][0]), boxes[0][1]))
        for box, cat in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": cat,
                                "bbox": box, "area": _gt_area(rng, box, bound_areas),
                                "iscrowd": int(rng.random() < crowd_prob)})
            for _ in range(rng.randint(*dets_per_gt)):
                wrong = rng.random() < wrong_class_prob
                dets.append({"image_id": image["id"],
                             "category_id": rng.choice(categories)["id"] if wrong else cat,
                             "bbox": _jitter(rng, box, jitter, integer)})
        for _ in range(rng.randint(*background_dets)):
            dets.append({"image_id": image["id"], "category_id": rng.choice(categories)["id"],
                         "bbox": _box(rng, width, height, integer)})
    for image in rng.sample(images, dense_images):
        cat = rng.choice(gt_cats)
        for _ in range(dense_count):
            dets.append({"image_id": image["id"], "category_id": cat,
                         "bbox": _box(rng, width, height, integer, max_side=120.0)})
    for det in dets:
        det["score"] = round(rng.random(), score_decimals)
    rng.shuffle(dets)
    return {"images": images, "annotations": annotations, "categories": categories}, dets


CASES = {
    "mixed": dict(seed=1),
    "integer_boxes_ties": dict(seed=2, integer=True, score_decimals=1, max_gt=6, jitter=0.05),
    "crowd_heavy": dict(seed=3, crowd_prob=0.4, max_gt=10),
    "over_100_dets": dict(seed=4, num_images=6, dense_images=3, dense_count=140, num_categories=3),
    "small_objects": dict(seed=5, size=(120, 160), max_gt=12, jitter=0.2),
    "many_categories": dict(seed=6, num_images=12, num_categories=9, categories_without_gt=3),
    "no_large_objects": dict(seed=7, size=(60, 80), max_gt=10, jitter=0.1, bound_areas=False),  # APl = ARl = -1
}


def benchmark_case(num_images=1000, num_categories=20, seed=0):
    """About 100 detections per image over ``num_categories`` classes (``bench_eval.py``)."""
    return make_case(seed, num_images=num_images, num_categories=num_categories,
                     categories_without_gt=0, max_gt=14, dets_per_gt=(2, 6),
                     background_dets=(50, 90), crowd_prob=0.03, empty_image_prob=0.02,
                     score_decimals=4)
