"""Load a torchvision detector's weights into ours: ``from_torchvision(name, state_dict)``.

torchvision ([torchvision]) publishes COCO-trained detectors. Our detectors are
built from the same parts, so a torchvision state dict fits ours once

1. the model is configured as torchvision's constructor of that name configures
   its own (:data:`FCOS_RESNET50_FPN` lists every option, in *our* field names), and
2. each state-dict key is renamed by a short table (:data:`FCOS_KEYS`).

Then, in eval mode, both produce the same detections (pinned to 1e-4 pixels by
``tests/models/test_models_torchvision_weights.py`` against torchvision 0.29)::

    from fcos_from_scratch.models import from_torchvision
    state = torch.load("fcos_resnet50_fpn_coco-99b0c9b7.pth", weights_only=True)
    model = from_torchvision("fcos_resnet50_fpn", state).eval()
    model = from_torchvision("fcos_resnet50_fpn", state, score_thresh=0.05)   # override

Loading is strict: every key of the state dict is used and every tensor of the
model is filled, or one ``ValueError`` lists the missing, unexpected and
mis-shaped keys (in torchvision's names) before anything is loaded. BatchNorm's
``num_batches_tracked`` is optional both ways, so torchvision models built with
``nn.BatchNorm2d`` (no weights) or ``FrozenBatchNorm2d`` (pretrained) both load:
in eval mode they compute the same function.

More detectors register a builder in :data:`TORCHVISION_MODELS` (name -> function
``(state_dict, options) -> model``).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Tuple, Union

import torch
from torch import nn

from .backbones import build_backbone, convert_frozen_batchnorm
from .detectors.faster_rcnn import FasterRCNN, FasterRCNNConfig
from .detectors.fcos import FCOS, FCOSConfig
from .registry import config_fields
from .images import IMAGENET_MEAN, IMAGENET_STD
from .pretrained import _listing, load_state_dict_file, resolve_checkpoint

StateDict = Mapping[str, torch.Tensor]

# ---------------------------------------------------------------------------
# FCOS ResNet-50 FPN: torchvision's constructor in our FCOSConfig field names
# ---------------------------------------------------------------------------

# Everything torchvision's fcos_resnet50_fpn fixes, as FCOSConfig fields. num_classes
# comes from the weights. Where our default differs, the comment gives ours.
FCOS_RESNET50_FPN: Dict[str, object] = dict(
    backbone="resnet50",  # C3..C5 = layer2..layer4
    frozen_bn=True,  # torchvision freezes BN whenever it loads weights (ours: iff pretrained)
    trainable_layers=3,  # torchvision's default with weights
    fpn_channels=256,
    num_levels=5,  # P3..P7
    fpn_extra_source="p5",  # LastLevelP6P7(256, 256): P6 from P5 since the widths agree
    head_convs=4,  # conv + GroupNorm(32) + ReLU, x 4 per tower
    prior_prob=0.01,
    reg_activation="relu",  # relu(x), distances in strides: BoxLinearCoder(normalize_by_size=True)
    level_scales=False,  # ours: True, a learnable s_l per level
    point_offset=0.0,  # anchors of size s_l centred at (col * s, row * s); ours: 0.5
    point_spacing="grid",  # anchor spacing = padded input size // feature size; ours: "stride"
    sizes_of_interest=(0.0, 64.0, 128.0, 256.0, 512.0, math.inf),  # 4 s_l .. 8 s_l (open bounds)
    center_sampling_radius=1.5,
    focal_alpha=0.25,
    focal_gamma=2.0,
    box_weighting="none",  # GIoU / N_pos; ours: weighted by centerness targets
    score_thresh=0.2,  # ours: 0.05
    score_thresh_on="score",  # on sqrt(cls * ctr); ours: "class"
    topk_candidates=1000,  # per level
    per_class_topk=0,
    nms_thresh=0.6,
    detections_per_img=100,
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    size_divisible=32,
)

# Our state-dict key (a regular expression) -> torchvision's. Rows are tried in
# order; the first whose pattern matches the start of the key renames it.
FCOS_KEYS: Tuple[Tuple[str, str], ...] = (
    (r"backbone\.", "backbone.body."),  # ResNet: same names below (conv1, bn1, layer1.0.conv1, ...)
    (r"fpn\.lateral\.(\d+)\.", r"backbone.fpn.inner_blocks.\1.0."),  # 1x1 laterals
    (r"fpn\.output\.(\d+)\.", r"backbone.fpn.layer_blocks.\1.0."),  # 3x3 outputs
    (r"fpn\.extra\.0\.", "backbone.fpn.extra_blocks.p6."),
    (r"fpn\.extra\.1\.", "backbone.fpn.extra_blocks.p7."),
    (r"head\.cls_tower\.", "head.classification_head.conv."),  # same [conv, GN, ReLU] indices
    (r"head\.cls_logits\.", "head.classification_head.cls_logits."),
    (r"head\.reg_tower\.", "head.regression_head.conv."),
    (r"head\.bbox_pred\.", "head.regression_head.bbox_reg."),
    (r"head\.centerness\.", "head.regression_head.bbox_ctrness."),
)

# torchvision < 0.13 saved FPN convs without the ".0" of Conv2dNormActivation
# (torchvision's FPN upgrades such checkpoints when loading; so do we).
LEGACY_FPN_KEY = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")
NUM_CLASSES_KEY = "head.classification_head.cls_logits.weight"  # (K, 256, 3, 3): K = rows
OPTIONAL_SUFFIX = "num_batches_tracked"  # BatchNorm2d has it, FrozenBatchNorm2d not


def rename_key(key: str, table: Tuple[Tuple[str, str], ...]) -> str:
    """torchvision's name of our state-dict ``key`` by the first matching row of ``table``."""
    for pattern, replacement in table:
        renamed, count = re.subn("^" + pattern, replacement, key, count=1)
        if count:
            return renamed
    raise KeyError(f"no row of the key table renames {key!r}")  # a bug in the table


def upgrade_legacy_keys(state_dict: StateDict) -> Dict[str, torch.Tensor]:
    """``backbone.fpn.inner_blocks.0.weight`` -> ``...inner_blocks.0.0.weight`` (older files)."""
    return {LEGACY_FPN_KEY.sub(r"\1.0.\2", key): value for key, value in state_dict.items()}


def load_renamed_(model: nn.Module, state_dict: StateDict, table, name: str) -> nn.Module:
    """Fill every tensor of ``model`` from ``state_dict`` (torchvision's names), strictly.

    Raises:
        ValueError: one message listing missing keys, unexpected keys and shape
            mismatches, all in torchvision's names; ``model`` is left untouched.
    """
    ours = model.state_dict()
    wanted = {rename_key(key, table): key for key in ours}  # torchvision name -> ours
    given = upgrade_legacy_keys(state_dict)
    missing = [k for k in wanted if k not in given and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in given if k not in wanted and not k.endswith(OPTIONAL_SUFFIX)]
    mismatched = [
        f"{k}: state dict {tuple(given[k].shape)} vs model {tuple(ours[wanted[k]].shape)}"
        for k in given if k in wanted and given[k].shape != ours[wanted[k]].shape
    ]
    if missing or unexpected or mismatched:
        parts = [_listing("missing keys", missing), _listing("unexpected keys", unexpected)]
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        raise ValueError(f"state_dict does not fit torchvision's {name!r}: " + "; ".join(parts))
    model.load_state_dict({wanted[k]: v for k, v in given.items() if k in wanted}, strict=False)
    return model


def _options(name: str, detector: str, config_class: type, defaults: Dict[str, object],
             state_dict: StateDict, options: Dict[str, object], classes_key: str = NUM_CLASSES_KEY,
             background: int = 0):
    """``defaults`` + ``num_classes`` from the weights + ``options`` (our field names).

    ``background`` is 1 where torchvision counts a background row (Faster R-CNN):
    our K is the number of rows minus it.
    """
    known = config_fields(detector)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown {DISPLAY_NAMES[detector]} option {key!r}{hint} "
                             f"(options: {', '.join(known)})")
    if classes_key not in state_dict:
        raise ValueError(f"state_dict has no {classes_key!r}: is it torchvision's {name!r}?")
    num_classes = int(state_dict[classes_key].shape[0]) - background
    if options.get("num_classes", num_classes) != num_classes:
        raise ValueError(f"num_classes={options['num_classes']} but the weights have "
                         f"{num_classes} classes ({classes_key} rows{' - 1 background' * background})")
    return config_class(**{**defaults, "num_classes": num_classes, **options})


def _fcos_options(name: str, defaults: Dict[str, object], state_dict: StateDict,
                  options: Dict[str, object]) -> FCOSConfig:
    return _options(name, "fcos", FCOSConfig, defaults, state_dict, options)


def build_fcos_resnet50_fpn(state_dict: StateDict, options: Dict[str, object]) -> FCOS:
    """Our FCOS configured as torchvision's ``fcos_resnet50_fpn``, weights loaded."""
    name = "fcos_resnet50_fpn"
    config = _fcos_options(name, FCOS_RESNET50_FPN, state_dict, options)
    if config.backbone == "tiny" or config.pretrained:
        raise ValueError(f"{name} loads its own ResNet weights: it takes no backbone='tiny' or "
                         f"pretrained, got backbone={config.backbone!r}, pretrained={config.pretrained!r}")
    # Build the trunk with plain BatchNorm and freeze it after loading: the statistics
    # come from the state dict (build_backbone warns about freezing random statistics).
    trainable = None if config.trainable_layers < 0 else config.trainable_layers
    trunk = build_backbone(config.backbone, frozen_bn=False, trainable_layers=trainable)
    if config.frozen_bn:
        convert_frozen_batchnorm(trunk)
    model = FCOS(config, trunk=trunk)
    return load_renamed_(model, state_dict, FCOS_KEYS, name)


# ---------------------------------------------------------------------------
# Faster R-CNN ResNet-50 FPN, v1 and v2
# ---------------------------------------------------------------------------

# torchvision's fasterrcnn_resnet50_fpn in our FasterRCNNConfig names: the config's
# defaults *are* torchvision's v1, so only what the loader fixes is listed.
FASTER_RCNN_RESNET50_FPN: Dict[str, object] = dict(
    backbone="resnet50",
    frozen_bn=True,  # torchvision freezes BN whenever it loads weights
    trainable_layers=3,
    # RoIAlign summed in the order of torchvision's kernel: the pooled features are the
    # same float32 bits, so the detections are torchvision's, not 1e-4 px away from them
    # (ours: "fused", ~1.7x faster; pass roi_align_summation="fused" to fine-tune)
    roi_align_summation="kernel",
)
# fasterrcnn_resnet50_fpn_v2 ([torchvision], after "Benchmarking detection transfer
# learning with vision transformers"): BatchNorm in the trunk and the FPN, two 3x3
# convs in the RPN head, the "4conv1fc" box head.
FASTER_RCNN_RESNET50_FPN_V2: Dict[str, object] = dict(
    backbone="resnet50",
    roi_align_summation="kernel",  # as v1
    frozen_bn=False,  # nn.BatchNorm2d throughout
    fpn_norm="bn",
    rpn_conv_depth=2,
    box_head="4conv1fc",
)

FASTER_RCNN_KEYS: Tuple[Tuple[str, str], ...] = (
    (r"backbone\.", "backbone.body."),
    (r"fpn\.lateral\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),  # with a norm (v2)
    (r"fpn\.lateral\.(\d+)\.norm\.", r"backbone.fpn.inner_blocks.\1.1."),
    (r"fpn\.lateral\.(\d+)\.", r"backbone.fpn.inner_blocks.\1.0."),  # plain conv (v1)
    (r"fpn\.output\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"fpn\.output\.(\d+)\.norm\.", r"backbone.fpn.layer_blocks.\1.1."),
    (r"fpn\.output\.(\d+)\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"rpn\.head\.", "rpn.head."),  # conv.<i>.0, cls_logits, bbox_pred: same names
    (r"box_head\.", "roi_heads.box_head."),  # fc6/fc7 (v1); 0.0..3.1 convs+BN, 5 linear (v2)
    (r"box_predictor\.", "roi_heads.box_predictor."),  # cls_score (K + 1 rows), bbox_pred
)
DISPLAY_NAMES = {"fcos": "FCOS", "faster_rcnn": "Faster R-CNN"}  # in error messages
FASTER_RCNN_CLASSES_KEY = "roi_heads.box_predictor.cls_score.weight"  # (K + 1, 1024)


def _build_faster_rcnn(name: str, defaults: Dict[str, object], state_dict: StateDict,
                       options: Dict[str, object]) -> FasterRCNN:
    config = _options(name, "faster_rcnn", FasterRCNNConfig, defaults, state_dict, options,
                      FASTER_RCNN_CLASSES_KEY, background=1)
    if config.backbone == "tiny" or config.pretrained or config.residual_fpn:
        raise ValueError(f"{name} loads its own ResNet-50 and FPN: it takes no backbone='tiny', "
                         f"pretrained or residual_fpn, got backbone={config.backbone!r}, "
                         f"pretrained={config.pretrained!r}, residual_fpn={config.residual_fpn}")
    trainable = None if config.trainable_layers < 0 else config.trainable_layers
    trunk = build_backbone(config.backbone, frozen_bn=False, trainable_layers=trainable,
                           feature_names=("C2", "C3", "C4", "C5"))
    if config.frozen_bn:
        convert_frozen_batchnorm(trunk)
    return load_renamed_(FasterRCNN(config, trunk=trunk), state_dict, FASTER_RCNN_KEYS, name)


def build_fasterrcnn_resnet50_fpn(state_dict: StateDict, options: Dict[str, object]) -> FasterRCNN:
    """Our Faster R-CNN configured as torchvision's ``fasterrcnn_resnet50_fpn``, weights loaded.

    torchvision's labels are ours + 1 (its class 0 is the background).
    """
    return _build_faster_rcnn("fasterrcnn_resnet50_fpn", FASTER_RCNN_RESNET50_FPN, state_dict, options)


def build_fasterrcnn_resnet50_fpn_v2(state_dict: StateDict, options: Dict[str, object]) -> FasterRCNN:
    """Our Faster R-CNN configured as torchvision's ``fasterrcnn_resnet50_fpn_v2``, weights loaded."""
    return _build_faster_rcnn("fasterrcnn_resnet50_fpn_v2", FASTER_RCNN_RESNET50_FPN_V2, state_dict, options)


# name -> builder(state_dict, options).
TORCHVISION_MODELS: Dict[str, Callable[[StateDict, Dict[str, object]], nn.Module]] = {
    "fcos_resnet50_fpn": build_fcos_resnet50_fpn,
    "fasterrcnn_resnet50_fpn": build_fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": build_fasterrcnn_resnet50_fpn_v2,
}


def from_torchvision(name: str, state_dict: Union[StateDict, str, Path], **options) -> nn.Module:
    """Our detector configured as torchvision's constructor ``name``, with its weights.

    Args:
        name: a key of :data:`TORCHVISION_MODELS`, e.g. ``"fcos_resnet50_fpn"``.
        state_dict: the torchvision model's ``state_dict()`` (BatchNorm2d or
            FrozenBatchNorm2d backbone), or a path or URL of such a ``.pth`` file.
        **options: our config fields overriding torchvision's settings, e.g.
            ``score_thresh=0.05`` (for FCOS, :class:`FCOSConfig`).

    Returns:
        The model in train mode (call ``.eval()`` for detections). FCOS labels
        are torchvision's; Faster R-CNN labels are torchvision's minus 1 (its
        class 0 is the background, ours is internal).

    Raises:
        ValueError: unknown ``name`` or option (with close matches), or a state
            dict that does not fit (listing every bad key).
    """
    if name not in TORCHVISION_MODELS:
        close = difflib.get_close_matches(str(name), list(TORCHVISION_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown torchvision model {name!r}{hint} (supported: "
                         f"{', '.join(TORCHVISION_MODELS)})")
    if isinstance(state_dict, (str, Path)):
        state_dict = load_state_dict_file(resolve_checkpoint(state_dict))
    if not isinstance(state_dict, Mapping) or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise ValueError(f"state_dict must be a mapping of str keys to tensors (or a path/URL), "
                         f"got {type(state_dict).__name__}")
    return TORCHVISION_MODELS[name](state_dict, dict(options))


__all__ = ["FASTER_RCNN_KEYS", "FASTER_RCNN_RESNET50_FPN", "FASTER_RCNN_RESNET50_FPN_V2",
           "FCOS_KEYS", "FCOS_RESNET50_FPN", "TORCHVISION_MODELS", "from_torchvision",
           "load_renamed_", "rename_key"]
