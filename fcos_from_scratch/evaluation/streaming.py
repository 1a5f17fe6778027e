"""A streaming evaluator for the training loop, in torchmetrics' update/compute style.

    evaluator = DetectionEvaluator(num_classes=20)
    for images, targets in loader:
        evaluator.update(model(images), targets)
    metrics = evaluator.compute()   # {"coco": {...}, "voc": {...}}

``update`` keeps a CPU numpy copy of each image's boxes, scores and labels and
nothing else, so memory is linear in the number of detections kept; the whole
computation happens once, in ``compute``, with the same code as the one-shot
:func:`coco_eval` and :func:`voc_eval` (so streaming == one-shot exactly).
"""

from .coco import coco_eval
from .inputs import check_per_image
from .io import detections_to_coco, targets_to_coco
from .voc import voc_eval


class DetectionEvaluator:
    """Accumulate per-image predictions and targets; compute COCO and VOC mAP.

    Args:
        num_classes: K; labels are 0..K-1 and every class is declared to the COCO
            evaluation (classes without GT then count as pycocotools counts
            them: absent, -1). ``None``: the labels seen in targets and preds.
        label_to_category: {label: COCO category id}; identity when ``None``.
        voc_iou_threshold: the VOC match threshold (IoU strictly greater).
        use_07_metric: VOC2007 11-point AP instead of the all-point area.
        legacy_pixel: VOC devkit ``+ 1`` pixel widths.
    """

    def __init__(self, num_classes=None, label_to_category=None, voc_iou_threshold=0.5,
                 use_07_metric=False, legacy_pixel=False):
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.label_to_category = label_to_category
        self.voc_kwargs = dict(iou_threshold=voc_iou_threshold, use_07_metric=use_07_metric,
                               legacy_pixel=legacy_pixel)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._preds, self._targets = [], []

    def __len__(self) -> int:
        return len(self._targets)

    def update(self, preds, targets) -> None:
        """Add one batch.

        Args:
            preds: list of B dicts: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).
            targets: list of B dicts: ``boxes`` (M, 4) xyxy, ``labels`` (M,), optional
                ``difficult``, ``iscrowd``, ``area``, ``image_id``.
        """
        preds = check_per_image(preds, "preds", ("boxes", "scores", "labels"))
        targets = check_per_image(targets, "targets", ("boxes", "labels"),
                                  optional=("difficult", "iscrowd", "area"))
        if len(preds) != len(targets):
            raise ValueError(f"preds has {len(preds)} images but targets has {len(targets)}")
        if self.num_classes is not None:
            for name, items in (("preds", preds), ("targets", targets)):
                for i, item in enumerate(items):
                    if len(item["labels"]) and item["labels"].max() >= self.num_classes:
                        raise ValueError(f"{name}[{i}]['labels']: label {item['labels'].max()} "
                                         f">= num_classes={self.num_classes}")
        keep = ("boxes", "scores", "labels")
        self._preds.extend({k: p[k] for k in keep} for p in preds)
        self._targets.extend({k: v for k, v in t.items()
                              if k in ("boxes", "labels", "difficult", "iscrowd", "area", "image_id")}
                             for t in targets)

    def _categories(self):
        if self.label_to_category is not None:
            return list(self.label_to_category.values())
        if self.num_classes is not None:
            return list(range(self.num_classes))
        labels = set()
        for item in self._preds + self._targets:
            labels.update(int(label) for label in item["labels"])
        return sorted(labels)

    def compute(self) -> dict:
        """``{"coco": coco_eval(...) result, "voc": voc_eval(...) result}`` over all updates."""
        image_ids = [int(t.get("image_id", i)) for i, t in enumerate(self._targets)]
        coco_gt = targets_to_coco(self._targets, image_ids, self.label_to_category, self._categories())
        coco_dets = detections_to_coco(self._preds, image_ids, self.label_to_category)
        return {"coco": coco_eval(coco_gt, coco_dets),
                "voc": voc_eval(self._targets, self._preds, **self.voc_kwargs)}
