"""``build_trunk``: the feature trunk a detector's config names, ImageNet or CPU-sized.

Every detector calls this one function, so ``backbone="tiny"`` (the small CPU
trunk trained from scratch) and the ImageNet classifiers behave the same way in
all of them.
"""

import difflib
from typing import Optional, Sequence

from torch import nn

from .build import BACKBONES, build_backbone
from .tiny import TinyTrunk
from .trunk import FEATURE_NAMES

TRUNKS = ("tiny",) + tuple(BACKBONES)  # every name build_trunk accepts


def build_trunk(backbone: str, pretrained: str = "", frozen_bn: Optional[bool] = None,
                trainable_layers: int = -1, feature_names: Sequence[str] = FEATURE_NAMES) -> nn.Module:
    """The trunk named ``backbone``, returning ``feature_names`` (default C3..C5).

    Args:
        backbone: a name of ``BACKBONES`` or ``"tiny"``.
        pretrained: "imagenet", a path or URL of classifier weights; "" = random init.
        frozen_bn: None freezes BatchNorm when weights are loaded ([fcos-light]) and
            trains it otherwise (frozen random statistics would normalise nothing).
        trainable_layers: -1 = the backbone's default (torchvision's rule).
        feature_names: the subset of C2..C5 to return (Faster R-CNN needs C2).
    """
    if backbone not in TRUNKS:  # checked here, where "tiny" is known, so the list is complete
        close = difflib.get_close_matches(str(backbone), TRUNKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown backbone {backbone!r}{hint} (known backbones: {', '.join(TRUNKS)})")
    trainable = None if trainable_layers < 0 else trainable_layers
    if backbone == "tiny":
        if frozen_bn or pretrained or trainable is not None:
            raise ValueError("backbone='tiny' is trained from scratch: it takes no pretrained, "
                             "frozen_bn=True or trainable_layers")
        return TinyTrunk(feature_names=feature_names)
    frozen = bool(pretrained) if frozen_bn is None else frozen_bn
    return build_backbone(backbone, pretrained=pretrained or None, frozen_bn=frozen,
                          trainable_layers=trainable, feature_names=feature_names)
