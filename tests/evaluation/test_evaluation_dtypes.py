"""Low-precision predictions (bfloat16 / float16, e.g. from autocast) are evaluated as
float32 instead of failing in numpy, and give the float32 numbers."""

import pytest
import torch

from fcos_from_scratch.evaluation import DetectionEvaluator, voc_eval


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_predictions_are_evaluated(dtype):
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]]),
                "labels": torch.tensor([0, 1])}]
    preds32 = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 22.0, 30.0, 40.0]]),
                "scores": torch.tensor([0.9, 0.75]), "labels": torch.tensor([0, 1])}]
    preds = [{k: v.to(dtype) if v.is_floating_point() else v for k, v in preds32[0].items()}]
    assert voc_eval(targets, preds)["mAP"] == voc_eval(targets, preds32)["mAP"]  # exact in bf16
    results = []
    for p in (preds, preds32):
        evaluator = DetectionEvaluator(num_classes=2)
        evaluator.update(p, targets)
        results.append(evaluator.compute()["coco"]["AP"])
    assert results[0] == pytest.approx(results[1])
