"""Stage-by-stage differences between torchvision's Faster R-CNN and ours (a diagnostic).

Run where torchvision is installed, with this worktree first on the path::

    OMP_NUM_THREADS=1 PYTHONPATH=. /work/refvenv/bin/python tests/reference/compare_faster_rcnn_stages.py NAME --double
    OMP_NUM_THREADS=1 PYTHONPATH=. /work/refvenv/bin/python tests/reference/compare_faster_rcnn_stages.py --train NAME

(NAME optional: every model of the fixture; --double optional.)

Both models get the weights of ``make_faster_rcnn_torchvision_refs.py``'s fixture
(formula weights plus the stored overrides) and run in the same process, so the
PyTorch build is the same on both sides. Every stage is fed *torchvision's* output of
the stage before, so each line is that stage's own difference, not the sum of the
stages upstream ("local"); the last lines compare the two end-to-end runs
(``--double`` adds float64 runs and each side's float32-to-float64 distance, the
float32 noise floor; ``--train`` compares proposals, sampled RoIs and losses). Nothing
here is asserted: it prints the max absolute differences, to find where a
difference is born.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deterministic_weights import deterministic_image, deterministic_state_dict  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "faster_rcnn_torchvision_refs.pt")


def diff(a, b):
    if isinstance(a, (list, tuple)):
        return max((diff(x, y) for x, y in zip(a, b)), default=0.0)
    if a.shape != b.shape:
        return float("nan")
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def rows_sorted(boxes):
    for column in range(3, -1, -1):
        boxes = boxes[torch.sort(boxes[:, column], stable=True).indices]
    return boxes


def build(name, refs, dtype):
    import torchvision.models.detection as detection
    from fcos_from_scratch.models import from_torchvision

    case = refs["models"][name]
    template = {k: (tuple(s), getattr(torch, d)) for k, s, d in zip(case["keys"], case["shapes"], case["dtypes"])}
    state = deterministic_state_dict(template, case["overrides"])
    frozen = name.endswith("_frozen")  # v1 with FrozenBatchNorm2d, as torchvision builds it around weights
    if frozen:
        from make_faster_rcnn_torchvision_refs import frozen_v1 as builder
    else:
        builder = getattr(detection, name)
    theirs = builder(weights=None, weights_backbone=None, num_classes=refs["num_classes"] + 1,
                     min_size=refs["min_size"], max_size=refs["max_size"])
    theirs.load_state_dict(state)
    ours = from_torchvision(name.removesuffix("_frozen"), dict(state), frozen_bn=frozen)
    return theirs.eval().to(dtype), ours.eval().to(dtype)


def compare(name, refs, dtype):
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    theirs, ours = build(name, refs, dtype)
    images = [deterministic_image(h, w, i).to(dtype) for i, (h, w) in enumerate(refs["image_sizes"])]
    print(f"== {name} ({dtype}) ==")
    image_list, _ = theirs.transform(images)
    batch, sizes = ours.preprocess(images, None)
    print(f"  normalised batch   {diff(batch, image_list.tensors):.3g}")
    x = image_list.tensors
    body = theirs.backbone.body(x)
    print(f"  trunk C2..C5       {diff(list(ours.backbone(x).values()), list(body.values())):.3g}")
    pyramid = theirs.backbone.fpn(body)
    levels = list(pyramid.values())
    print(f"  FPN P2..P6         {diff(ours.fpn(list(body.values())), levels):.3g}")
    obj_t, deltas_t = theirs.rpn.head(levels)
    anchors_t = theirs.rpn.anchor_generator(image_list, levels)
    obj_t, deltas_t = concat_box_prediction_layers(obj_t, deltas_t)
    obj_o, deltas_o, anchors_o, proposals_o, counts = ours.rpn.predict(tuple(x.shape[-2:]), levels)
    print(f"  RPN objectness     {diff(obj_o.reshape(-1, 1), obj_t):.3g}")
    print(f"  RPN deltas         {diff(deltas_o.reshape(-1, 4), deltas_t):.3g}")
    print(f"  anchors            {diff(anchors_o, anchors_t):.3g}")
    decoded_t = theirs.rpn.box_coder.decode(deltas_t, anchors_t).view(len(images), -1, 4)
    decoded_o = ours.rpn.box_coder.decode(deltas_t, anchors_t).view(len(images), -1, 4)
    print(f"  RPN decode         {diff(decoded_o, decoded_t):.3g}")
    props_t, _ = theirs.rpn.filter_proposals(decoded_t, obj_t.view(len(images), -1), image_list.image_sizes,
                                             counts)
    from fcos_from_scratch.models.detectors.rpn import filter_proposals
    props_o, _ = filter_proposals(decoded_t, obj_t.view(len(images), -1), image_list.image_sizes, counts,
                                  pre_nms_top_n=1000, post_nms_top_n=1000)
    print(f"  filter_proposals   {diff(props_o, props_t):.3g} (shapes {[tuple(p.shape) for p in props_o]} "
          f"vs {[tuple(p.shape) for p in props_t]})")
    sizes = image_list.image_sizes
    pooled_t = theirs.roi_heads.box_roi_pool(pyramid, props_t, sizes)
    pooled_o = ours.roi_pool({str(i): v for i, v in enumerate(levels[:-1])}, props_t, sizes)
    print(f"  MultiScaleRoIAlign {diff(pooled_o, pooled_t):.3g} (max |value| {pooled_t.abs().max():.3g})")
    head_t = theirs.roi_heads.box_head(pooled_t)
    print(f"  box head           {diff(ours.box_head(pooled_t), head_t):.3g}")
    logits_t, reg_t = theirs.roi_heads.box_predictor(head_t)
    logits_o, reg_o = ours.box_predictor(head_t)
    print(f"  predictor          {diff(logits_o, logits_t):.3g} / {diff(reg_o, reg_t):.3g}")
    boxes_t = theirs.roi_heads.box_coder.decode(reg_t, props_t)
    boxes_o = ours.box_coder.decode(reg_t, props_t)
    print(f"  RoI decode         {diff(boxes_o, boxes_t):.3g}")
    dets_t = theirs.roi_heads.postprocess_detections(logits_t, reg_t, props_t, sizes)
    from fcos_from_scratch.models.detectors.faster_rcnn import postprocess
    dets_o = postprocess(logits_t, boxes_t, [len(p) for p in props_t], sizes)
    print(f"  postprocess        boxes {diff([d['boxes'] for d in dets_o], dets_t[0]):.3g}, "
          f"scores {diff([d['scores'] for d in dets_o], dets_t[1]):.3g}, labels equal "
          f"{all(torch.equal(d['labels'] + 1, l) for d, l in zip(dets_o, dets_t[2]))}")

    print("  -- end to end --")
    found = {}
    hooks = [theirs.rpn.register_forward_hook(lambda _m, _i, out: found.update(props_t=out[0])),
             ours.rpn.register_forward_hook(lambda _m, _i, out: found.update(props_o=out[0])),
             theirs.roi_heads.box_roi_pool.register_forward_hook(lambda _m, _i, out: found.update(pool_t=out)),
             ours.roi_pool.register_forward_hook(lambda _m, _i, out: found.update(pool_o=out)),
             theirs.roi_heads.box_predictor.register_forward_hook(lambda _m, _i, out: found.update(pred_t=out)),
             ours.box_predictor.register_forward_hook(lambda _m, _i, out: found.update(pred_o=out))]
    end_t = theirs(images)
    end_o = ours(images)
    for hook in hooks:
        hook.remove()
    print(f"  proposals          {diff(found['props_o'], found['props_t']):.3g}")
    print(f"  pooled             {diff(found['pool_o'], found['pool_t']):.3g}")
    print(f"  logits / deltas    {diff(found['pred_o'][0], found['pred_t'][0]):.3g} / "
          f"{diff(found['pred_o'][1], found['pred_t'][1]):.3g}")
    print(f"  detections         boxes {diff([d['boxes'] for d in end_o], [d['boxes'] for d in end_t]):.3g}, "
          f"scores {diff([d['scores'] for d in end_o], [d['scores'] for d in end_t]):.3g}")
    stored = refs["models"][name]["detections"]
    if dtype == torch.float32:
        print(f"  vs fixture: ours {diff([d['boxes'] for d in end_o], [d['boxes'] for d in stored]):.3g}, "
              f"theirs now {diff([d['boxes'] for d in end_t], [d['boxes'] for d in stored]):.3g}")
    return end_t, end_o


def main():
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    refs = torch.load(FIXTURE, weights_only=True)
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(refs["models"])
    dtypes = [torch.float32] + ([torch.float64] if "--double" in sys.argv else [])
    for name in names:
        runs = {dtype: compare(name, refs, dtype) for dtype in dtypes}
        if len(runs) == 2:  # each side's own float32 rounding, against its float64 run
            (t32, o32), (t64, o64) = runs[torch.float32], runs[torch.float64]
            for side, a, b in (("torchvision", t32, t64), ("ours", o32, o64)):
                print(f"  {side} float32 - float64: boxes {diff([d['boxes'] for d in a], [d['boxes'] for d in b]):.3g}, "
                      f"scores {diff([d['scores'] for d in a], [d['scores'] for d in b]):.3g}")


if __name__ == "__main__" and "--train" not in sys.argv:
    main()


def compare_train(name, refs):
    """Train-mode losses and the RoIs each side samples (BatchNorm on running statistics)."""
    theirs, ours = build(name, refs, torch.float32)
    images = [deterministic_image(h, w, i) for i, (h, w) in enumerate(refs["image_sizes"])]
    found = {}
    for key, model, pool in (("t", theirs, theirs.roi_heads.box_roi_pool), ("o", ours, ours.roi_pool)):
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        hooks = [pool.register_forward_hook(lambda _m, inputs, out, key=key: found.update({f"rois_{key}": inputs[1]})),
                 model.rpn.register_forward_hook(lambda _m, _i, out, key=key: found.update({f"props_{key}": out[0]}))]
        labels = [torch.tensor(t["labels"]) - int(key == "o") for t in refs["targets"]]
        targets = [{"boxes": torch.tensor(t["boxes"]), "labels": l} for t, l in zip(refs["targets"], labels)]
        torch.manual_seed(refs["seed"])
        if key == "o":
            for _ in targets:  # torchvision's train-mode transform draws a min_size per image first
                torch.empty(1).uniform_(0.0, 1.0)
        found[f"losses_{key}"] = model(images, targets)
        for hook in hooks:
            hook.remove()
    print(f"== {name} train ==")
    print(f"  proposals {[tuple(p.shape) for p in found['props_o']]} vs {[tuple(p.shape) for p in found['props_t']]}, "
          f"max diff {diff(found['props_o'], found['props_t']):.3g}")
    for image, (mine, their) in enumerate(zip(found["props_o"], found["props_t"])):
        differs = torch.where((mine != their).any(dim=1))[0]
        same_set = torch.equal(rows_sorted(mine), rows_sorted(their))
        print(f"  image {image}: same set {same_set}, {len(differs)} rows in another place, first at "
              f"{differs[:1].tolist()}: ours {mine[differs[:2]].tolist()} theirs {their[differs[:2]].tolist()}")
    print(f"  sampled RoIs {[tuple(p.shape) for p in found['rois_o']]} vs {[tuple(p.shape) for p in found['rois_t']]}, "
          f"max diff {diff(found['rois_o'], found['rois_t']):.3g}")
    for key, value in found["losses_t"].items():
        mine = found["losses_o"][key]
        print(f"  {key:18s} ours {mine.item():.9g} theirs {value.item():.9g} rel {abs(mine.item() / value.item() - 1):.3g}")


if __name__ == "__main__" and "--train" in sys.argv:
    torch.set_num_threads(1)
    for train_name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["fasterrcnn_resnet50_fpn"]:
        compare_train(train_name, torch.load(FIXTURE, weights_only=True))
