"""The named training presets: each a flat dict of training and detector fields.

A preset lists only what differs from the defaults of ``TrainConfig`` and of its
detector's config, and names its detector with ``model``. ``config.get_preset``
turns one into a checked ``RunConfig``; ``python -m fcos_from_scratch.train
--preset=NAME`` uses it, and ``--model``/``--dataset`` without ``--preset`` start
from :data:`DATASET_PRESETS`. This module is data only: it imports nothing.
"""

from typing import Any, Dict

DEFAULT_PRESET = "digits"
# (model, dataset) -> the preset that `--model M --dataset D` starts from.
DATASET_PRESETS: Dict[tuple, str] = {
    ("fcos", "digits"): "digits",
    ("fcos", "voc"): "voc_r18",
    ("fcos", "coco"): "coco_r50",
    ("faster_rcnn", "digits"): "digits_faster_rcnn",
    ("faster_rcnn", "voc"): "voc_faster_rcnn",
    ("refinedet_lite", "digits"): "digits_refinedet_lite",
    ("refinedet_lite", "digits_imbalanced"): "digits_refinedet_lite",
    ("refinedet_lite", "coco"): "coco_refinedet_lite",
    ("nas_fcos", "digits"): "digits_nas_fcos",
}

# Each preset lists only what differs from the defaults of TrainConfig and of its
# detector's config, and names its detector with "model".
PRESETS: Dict[str, Dict[str, Any]] = {
    # Designed for a 2-core CPU: the "tiny" trunk, a narrow FPN with three levels
    # (digits are 12-120 px, so P6/P7 get almost no positives), a two-conv head and
    # AdamW (quick start without tuning momentum). A fixed number of steps, so the
    # same seed gives the same numbers on every machine; a slower machine takes
    # longer, it does not learn less.
    "digits": dict(
        model="fcos",
        dataset="digits",
        num_classes=10,
        backbone="tiny",
        fpn_channels=64,
        num_levels=3,
        head_convs=2,
        # Digits are 12-120 px: with [fcos]'s (0, 64, 128, inf) P5 gets no positive
        # at all (8245 / 566 / 0 per level); halving the bounds spreads them
        # 4870 / 3320 / 756 and lifted val AP50 0.897 -> 0.924 (measured).
        sizes_of_interest=(0.0, 32.0, 64.0, float("inf")),
        optimizer="adamw",
        lr=2e-3,
        min_lr=2e-5,
        weight_decay=0.05,
        # Adam's squared-gradient average over ~100 steps (beta2 0.99), not ~1000 (0.999):
        # a short run's gradients change within a 1000-step window. Measured (3 epochs of
        # 4): val AP 0.609 -> 0.618, AP50 0.825 -> 0.847; beta2 0.95: 0.611.
        betas=(0.9, 0.99),
        warmup_fraction=0.03,
        # 4 epochs of 500 batches of 4 = 2000 steps, no augmentation: the whole run
        # (data generation, training, evaluation) in about 5 minutes on a quiet 2-core
        # CPU (README, "Main job": 282-316 s; 3 epochs reached test AP50 0.80 / AP 0.58,
        # 4 reach 0.88 / 0.64, and 0.89 / 0.66 with beta2 0.99: the training loss still
        # halves every epoch, so extra steps still pay). Measured against the 10-epoch
        # recipe (batches of 8, gamma 2, augmentation; test AP50 0.912 / AP 0.708 in 16.5
        # minutes), whose errors were mostly classification (digit confusions), at equal
        # images:
        # * focal_gamma = 1: gamma = 2 scales a wrong class scoring p by p^2, so
        #   moderately confident confusions barely train; 2 epochs: AP50 0.22 -> 0.43
        #   ([focal] Table 1b sweeps gamma; 1 is one of its settings). gamma = 0.5 made
        #   the gradient of (1 - p)^gamma infinite at p = 1 (NaN at step 547);
        # * cls_weight = 2 (weight of the focal term, [fcos] Eq. 2): 2 epochs, gamma 2,
        #   AP50 0.14 -> 0.22 (4 was worse at gamma 1);
        # * batches of 4, not 8: twice the optimiser steps per image and less padding;
        #   2 epochs AP50 0.43 -> 0.60 (batches of 2 and 1 learn more per image but cost
        #   1.4x and 1.8x the time per image on 2 cores);
        # * no augmentation: nothing overfits in 3 epochs, and colour jitter and the
        #   affine warp cost ~11 ms of CPU per image; 2 epochs AP50 0.597 -> 0.603;
        #   without it a loader worker no longer pays for itself (num_workers=0: ~4 %
        #   more steps per second).
        # Measured and not adopted, val AP (4 epochs of 4: 0.665): lr 3e-3 0.656,
        # weight_decay 1e-4 0.659, focal_alpha 0.5 0.652, sizes_of_interest
        # (0, 24, 48, inf) 0.660, cls_weight 4 0.634; (3 epochs of 2: 0.625):
        # center_sampling_radius 2.5 0.623, GroupNorm of 8 channels per group 0.619;
        # size-grouped batches and an EMA of the weights (10-epoch recipe); (3 epochs of
        # 4, val AP 0.609): focal_gamma 0 (alpha 0.25 / 0.5) 0.536 / 0.522, one conv in
        # the regression tower 0.592, three in the classification tower and one in the
        # regression tower test AP 0.498 (0.576 without), a stride-4 space-to-depth
        # stem 0.582, identity shortcuts around each trunk stage's second conv 0.609.
        augment=False,
        focal_gamma=1.0,
        cls_weight=2.0,
        epochs=4,
        batch_size=4,
        num_workers=0,
        grad_clip_norm=10.0,
        out="runs/digits",
    ),
    # [cs771-hw3]: ResNet-18, 10 epochs, LR 0.01 (0.1 gave NaN). VOC has no held-out
    # split besides 07 test, so nothing is selected: the last epoch is reported.
    "voc_r18": dict(
        model="fcos",
        dataset="voc",
        val_split="",
        num_classes=20,
        backbone="resnet18",
        pretrained="imagenet",  # torchvision's ImageNet weights, downloaded once
        min_size=512,
        max_size=853,
        lr=0.01,
        epochs=10,
        batch_size=16,
        grad_clip_norm=35.0,
        out="runs/voc_r18",
    ),
    # [fcos-light]'s final setting: cosine 1e-2 -> 1e-5, 1 % warm-up, batch 8, 30 epochs.
    "voc_r50": dict(
        model="fcos",
        dataset="voc",
        val_split="",
        num_classes=20,
        backbone="resnet50",
        pretrained="imagenet",
        min_size=800,
        max_size=1333,
        lr=0.01,
        epochs=30,
        batch_size=8,
        grad_clip_norm=35.0,
        out="runs/voc_r50",
    ),
    "voc_mobilenetv2": dict(
        model="fcos",
        dataset="voc",
        val_split="",
        num_classes=20,
        backbone="mobilenet_v2",
        pretrained="imagenet",
        min_size=800,
        max_size=1333,
        lr=0.01,
        epochs=30,
        batch_size=8,
        grad_clip_norm=35.0,
        out="runs/voc_mobilenetv2",
    ),
    # [fcos] Sec. 4's "1x" COCO schedule: ResNet-50, batch 16, LR 0.01, 90k
    # iterations with x0.1 at 60k and 80k, 500 warm-up iterations (~0.6 %). COCO's
    # test-dev labels are private, so val2017 is the reported split (as in [fcos]);
    # nothing is selected on it.
    "coco_r50": dict(
        model="fcos",
        dataset="coco",
        train_split="train",
        val_split="",
        test_split="val",
        num_classes=80,
        backbone="resnet50",
        pretrained="imagenet",
        min_size=800,
        max_size=1333,
        optimizer="sgd",
        lr=0.01,
        weight_decay=1e-4,
        schedule="step",
        max_steps=90000,
        lr_milestone_steps=(60000, 80000),
        warmup_fraction=0.0056,
        warmup_factor=1.0 / 3,
        batch_size=16,
        grad_clip_norm=35.0,
        out="runs/coco_r50",
    ),
}


# Faster R-CNN ([faster-rcnn] + [fpn]; models/detectors/faster_rcnn.py).
PRESETS.update({
    # CPU-sized: the tiny trunk with C2, a 64-wide FPN, anchors for 12-120 px digits
    # (one size per level, ratios h/w 1 and 2: digits are upright), a proposal and RoI
    # budget a tenth of torchvision's, a 256-wide "2fc" box head. Fixed steps and no
    # time budget, so a run is deterministic on a CPU.
    "digits_faster_rcnn": dict(
        model="faster_rcnn",
        dataset="digits",
        num_classes=10,
        backbone="tiny",
        fpn_channels=32,
        # RoIs are pooled from a P2..P5 pyramid, but the RPN runs on P3..P6 only: P2 holds
        # 3/4 of all anchors, and anchors of 16 px and more cover digits of 12-120 px. The
        # stride-4 P2 is what small digits need in the RoI head: [fpn] Eq. (1) maps every
        # digit (sqrt(w h) < 112 px) to P2, where a 12 px digit spans 3 cells instead of
        # 1.5. Measured against the pyramid from C3 (1750 steps, 1 thread): test AP50 0.912
        # -> 0.955, AP 0.666 -> 0.727, digits under 16 px found at score >= 0.5 28 % -> 76 %
        # (val), whole-number accuracy (val) 0.675 -> 0.835, for ~6 % more time per step.
        # Not adopted (val whole-number accuracy, lab rule): anchors on P2 too (8..128 px,
        # 0.835, +20 % time), anchors 12..96 (0.805), roi_canonical_scale=64 (0.780),
        # representation_size=256 (0.850, test 0.760).
        trunk_features=("C2", "C3", "C4", "C5"),
        rpn_levels=("P3", "P4", "P5", "P6"),
        anchor_sizes=(16, 32, 64, 128),  # P3..P6; digits are 12-120 px high
        aspect_ratios=(1.0, 2.0),  # h / w: upright glyphs; 0.5 matches almost nothing
        rpn_pre_nms_top_n_train=150,  # per level (torchvision 2000)
        rpn_post_nms_top_n_train=100,  # per image (2000): ~3 digits per image
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        representation_size=128,
        optimizer="adamw",
        lr=2e-3,
        min_lr=2e-5,
        weight_decay=0.05,
        warmup_fraction=0.03,
        # 1500 batches of 4 (3 epochs), no augmentation, no loader worker: the recipe the
        # FCOS "digits" preset found (smaller batches learn more per image, nothing
        # overfits in a few epochs, and without augmentation a worker does not pay for
        # itself on 2 cores). The length is set by the 5-minute budget: on the slowest
        # machine measured (an AMD EPYC, 2 cores, where the previous preset ran 317 s) the
        # whole run took 294 s with 1500 steps (test AP50 0.937 / AP 0.694, val
        # whole-number accuracy 0.770) and 304-326 s with 1750 (0.958 / 0.718, val 0.805).
        # Earlier (pyramid from C3): 1000 batches of 8 with augmentation ([digits-lab]: the
        # last epoch without) reached test AP50 0.895 / AP 0.637 in 8.9 min; 1750 batches
        # of 4 val AP50 0.946 / AP 0.697, 1500 val 0.921, lr 3e-3 val 0.861 (measured,
        # README "Faster R-CNN").
        epochs=4,
        max_steps=1500,
        augment=False,
        batch_size=4,
        num_workers=0,
        grad_clip_norm=10.0,
        out="runs/digits_faster_rcnn",
    ),
    # torchvision's fasterrcnn_resnet50_fpn recipe on VOC (GPU): ImageNet ResNet-50,
    # frozen BN, SGD 0.02 for batch 16 ([torchvision]'s reference scripts), 26 epochs
    # with x0.1 at 16 and 22, images 800-1333.
    "voc_faster_rcnn": dict(
        model="faster_rcnn",
        dataset="voc",
        val_split="",
        num_classes=20,
        backbone="resnet50",
        pretrained="imagenet",
        min_size=800,
        max_size=1333,
        optimizer="sgd",
        lr=0.02,
        weight_decay=1e-4,
        schedule="step",
        lr_steps=(16, 22),
        epochs=26,
        warmup_fraction=0.001,
        batch_size=16,
        out="runs/voc_faster_rcnn",
    ),
    # [digits-lab] run (3): v2 (BN FPN, two-conv RPN head, 4conv1fc) + Residual FPN,
    # Adam 1e-4 -> 5e-6 cosine after 5 warm-up epochs from 0 (of 30), backbone x0.5,
    # weight decay 5e-4, batch 2, the last 15 epochs without augmentation. GPU-sized.
    "lab_digits_v2_resfpn": dict(
        model="faster_rcnn",
        dataset="digits",
        num_classes=10,
        backbone="resnet50",
        pretrained="imagenet",
        frozen_bn=False,
        fpn_norm="bn",
        residual_fpn=True,
        rpn_conv_depth=2,
        box_head="4conv1fc",
        optimizer="adam",
        lr=1e-4,
        min_lr=5e-6,
        weight_decay=5e-4,
        lr_mults=("backbone=0.5", "fpn=0.5", "residual=0.5"),  # torchvision's backbone includes the FPN
        warmup="linear",
        warmup_fraction=5 / 30,
        warmup_factor=1e-6,  # "from 0" ([digits-lab]); TrainConfig needs a factor > 0
        schedule="cosine",
        epochs=30,
        no_aug_epochs=15,
        batch_size=2,
        out="runs/lab_digits_v2_resfpn",
    ),
})


# RefineDetLite ([refinedetlite] + [refinedet]; models/detectors/refinedet_lite.py).
PRESETS.update({
    # CPU-sized: Res2NetLite at a reduced width, narrow Light-heads, anchors for
    # 12-120 px digits, AdamW, a fixed number of steps (deterministic on a CPU).
    "digits_refinedet_lite": dict(
        model="refinedet_lite",
        dataset="digits",
        num_classes=10,
        width=16,
        # Sources at strides 8, 16, 32, 64: stage 1 (stride 8) is added and one extra
        # Bottleneck kept. Digits are 12-120 px high (median 36, h / w ~ 1.4); from stride
        # 16 the smallest had no useful anchor. Measured (500 steps of 8, test AP50):
        # strides 16..107 with anchors 28..224: 0.075; strides 8..64 with 16..128: 0.133.
        first_source_stage=1,
        extra_channels=(128,),
        head_channels=64,
        anchor_sizes=(16.0, 32.0, 64.0, 128.0),
        # Two sizes per level (x 1.43) give ~2 positives per box, and the band [0.4, 0.5)
        # is ignored: with one size per level only 49 % of the boxes had an anchor at IoU
        # >= 0.5 and a box's one positive had ~2 near-identical negatives at IoU 0.4-0.5.
        anchor_scales=(1.0, 1.43),
        bg_iou_thresh=0.4,
        # OHEM 1:1, not [ssd]'s 3:1: the hardest negatives of a digits image are digit-like
        # glyph fragments at IoU < 0.4, and three per positive slow the ODM's learning of
        # the classes. 1000 steps of 4: val AP50 0.299 (3:1) -> 0.324 (1:1).
        neg_pos_ratio=1.0,
        optimizer="adamw",
        lr=2e-3,  # 5e-3: val AP50 0.272 (1000 steps of 4, 3:1)
        min_lr=2e-5,
        weight_decay=0.05,
        warmup_fraction=0.03,
        # 850 batches of 4, no augmentation, no loader worker (the recipe of the FCOS
        # "digits" preset): a step costs 0.23-0.34 s at 2 threads (1000 steps took 305 s
        # start to finish, test AP50 0.412), so 850 keep the whole run under 5 minutes.
        # Measured against the earlier 750 steps of 8 with augmentation (test AP50 0.108):
        # 500 steps of 8 without augmentation 0.177 vs 0.133 with; 1000 steps of 4 val
        # AP50 0.324 (1 thread). The loss still falls fast: --epochs=4 --max_steps=0
        # (2000 steps, ~8-9 minutes) reached val AP50 0.731 / test 0.686 (1 thread).
        augment=False,
        max_steps=850,
        epochs=2,
        batch_size=4,
        num_workers=0,
        grad_clip_norm=10.0,
        out="runs/digits_refinedet_lite",
    ),
    # The advanced configuration of [refinedetlite] Sec. 5.1 on the same budget: GIoU,
    # IoU-guided soft labels and sample weights, class weights (W = 10, counts from the
    # training split), learned sigma (Eq. 6; the run's plots show every sigma_*), Soft-NMS.
    "digits_refinedet_lite_pp": dict(
        model="refinedet_lite",
        dataset="digits",
        num_classes=10,
        width=16,
        first_source_stage=1,  # as digits_refinedet_lite
        extra_channels=(128,),
        head_channels=64,
        anchor_sizes=(16.0, 32.0, 64.0, 128.0),
        anchor_scales=(1.0, 1.43),
        bg_iou_thresh=0.4,
        neg_pos_ratio=1.0,
        loc_loss="giou",
        cls_loss="iou_guided",
        class_weight_max=10.0,
        learned_loss_weights=True,
        nms_method="soft_nms",
        optimizer="adamw",
        lr=2e-3,
        min_lr=2e-5,
        weight_decay=0.05,
        warmup_fraction=0.03,
        augment=False,
        max_steps=850,
        epochs=2,
        batch_size=4,
        num_workers=0,
        grad_clip_norm=10.0,
        out="runs/digits_refinedet_lite_pp",
    ),
    # [refinedetlite] Sec. 5.1, basic configuration (GPU): RefineDetLite72 at 320 x 320 with
    # SSD augmentation, batch 128, SGD momentum 0.9, weight decay 5e-4, LR 4e-3 for 150
    # epochs, then 4e-4 and 4e-5 for 50 each (250). The paper mentions no warm-up: none.
    # val2017 is the reported split (test-dev labels are private); nothing is selected on it.
    "coco_refinedet_lite": dict(
        model="refinedet_lite",
        dataset="coco",
        train_split="train",
        val_split="",
        test_split="val",
        num_classes=80,
        input_size=320,
        augmentation="ssd",
        optimizer="sgd",
        lr=4e-3,
        momentum=0.9,
        weight_decay=5e-4,
        warmup="none",
        schedule="step",
        lr_steps=(150, 200),
        lr_gamma=0.1,
        epochs=250,
        batch_size=128,
        out="runs/coco_refinedet_lite",
    ),
    # The advanced configuration (RefineDetLite++, Table 2): the same with GIoU, IoU-guided
    # labels (alpha 0.25, beta 0.9), class weights (gamma 3/4, W 10), learned sigma, Soft-NMS,
    # and LR 1e-2 -> 1e-3 -> 1e-4.
    "coco_refinedet_lite_pp": dict(
        model="refinedet_lite",
        dataset="coco",
        train_split="train",
        val_split="",
        test_split="val",
        num_classes=80,
        input_size=320,
        augmentation="ssd",
        loc_loss="giou",
        cls_loss="iou_guided",
        class_weight_max=10.0,
        learned_loss_weights=True,
        nms_method="soft_nms",
        optimizer="sgd",
        lr=1e-2,
        momentum=0.9,
        weight_decay=5e-4,
        warmup="none",
        schedule="step",
        lr_steps=(150, 200),
        lr_gamma=0.1,
        epochs=250,
        batch_size=128,
        out="runs/coco_refinedet_lite_pp",
    ),
})

# NAS-FCOS ([nas-fcos]; models/detectors/nas_fcos.py): the FCOS digits job with the
# decoder replaced, everything else -- trunk, levels, targets, optimiser, steps --
# copied from "digits" (so it follows that preset when it changes). The default
# architecture is the decoder [mmdet] recovered from [nas-fcos] Fig. 4 ([mmdet-nas-fcos]); pass
# --arch=best.json for one found by python -m fcos_from_scratch.nas.search.
PRESETS["digits_nas_fcos"] = dict(PRESETS["digits"], model="nas_fcos", arch="fig4",
                                  out="runs/digits_nas_fcos")
