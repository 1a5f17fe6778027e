"""Freeze torchvision's ``FeaturePyramidNetwork`` outputs as reference values for our FPN.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_fpn_refs.py   # writes tests/fixtures/fpn_refs.pt

Weights are not stored: as in ``make_backbone_refs.py`` every state-dict entry is
filled by a deterministic rule of its (torchvision) key, and ``tests/models/test_models_fpn.py``
refills it, renames the keys with :func:`torchvision_key_to_ours` and loads the
result into our ``FPN``. Everything runs in float64. The fixture records the
library versions and, per case, torchvision's state-dict keys and shapes, the
input shapes and the output levels:

* ``maxpool``: C2..C5 -> P2..P6 with ``LastLevelMaxPool`` (Faster R-CNN);
* ``p6p7``: C3..C5 -> P3..P7 with ``LastLevelP6P7(256, 256)`` (P6 from P5, FCOS);
* ``bn_maxpool``: as ``maxpool`` with ``norm_layer=BatchNorm2d`` in eval mode
  (torchvision's v2 Faster R-CNN);
* ``gn_c5``: C3..C5 -> P3..P7 with ``norm_layer=GroupNorm(32, .)`` and
  ``LastLevelP6P7(C5 channels, out)`` (P6 from C5, RetinaNet).
"""

import importlib.util
import os
import platform
import re

import torch

HERE = os.path.dirname(__file__)
OUT = os.path.join(HERE, "..", "fixtures", "fpn_refs.pt")
IMAGE_SIZE = (40, 72)  # (H, W): C2 10x18, C3 5x9, C4 3x5, C5 2x3 (odd sizes: ceil halving)
STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
# name -> (input features, their channels, out_channels, extra_source, norm) in our terms.
CASES = {
    "maxpool": (("C2", "C3", "C4", "C5"), (16, 24, 32, 40), 64, "maxpool", None),
    "p6p7": (("C3", "C4", "C5"), (24, 32, 40), 256, "p5", None),
    "bn_maxpool": (("C2", "C3", "C4", "C5"), (16, 24, 32, 40), 64, "maxpool", "bn"),
    "gn_c5": (("C3", "C4", "C5"), (24, 32, 40), 64, "c5", "gn"),
}


def _load_backbone_refs():
    path = os.path.join(HERE, "make_backbone_refs.py")
    spec = importlib.util.spec_from_file_location("make_backbone_refs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BACKBONE_REFS = _load_backbone_refs()  # the deterministic fill rule, shared


def torchvision_key_to_ours(key: str, norm) -> str:
    """Our FPN's state-dict key for torchvision's ``key``.

    torchvision wraps every lateral/output conv in ``Conv2dNormActivation`` (a
    Sequential: ``0`` = conv, ``1`` = norm); ours is a bare conv without a norm and
    a Sequential ``conv``, ``norm`` with one. Extra convs ``p6``, ``p7`` are ``extra.0``, ``.1``::

        inner_blocks.2.0.weight -> lateral.2.weight        (norm None)
        layer_blocks.0.1.bias   -> output.0.norm.bias      (norm "bn" / "gn")
        extra_blocks.p7.weight  -> extra.1.weight
    """
    match = re.fullmatch(r"(inner|layer)_blocks\.(\d+)\.([01])\.(\w+)", key)
    if match:
        block, index, part, leaf = match.groups()
        ours = {"inner": "lateral", "layer": "output"}[block]
        if norm is None:
            return f"{ours}.{index}.{leaf}"
        return f"{ours}.{index}.{'conv' if part == '0' else 'norm'}.{leaf}"
    match = re.fullmatch(r"extra_blocks\.p([67])\.(\w+)", key)
    if match:
        return f"extra.{int(match.group(1)) - 6}.{match.group(2)}"
    raise KeyError(f"no rule for torchvision FPN key {key!r}")


def case_inputs(name: str):
    """The float64 input features of case ``name``: deterministic, values in [-2, 2)."""
    levels, channels = CASES[name][:2]
    height, width = IMAGE_SIZE
    shapes = [(1, c, -(-height // STRIDES[level]), -(-width // STRIDES[level]))  # ceil
              for level, c in zip(levels, channels)]
    return [BACKBONE_REFS.deterministic_tensor(f"fpn_{name}_{level}", shape, -2.0, 2.0,
                                               torch.float64)
            for level, shape in zip(levels, shapes)]


def _torchvision_fpn(name, ops):
    from functools import partial

    from torch import nn

    _, channels, out_channels, extra_source, norm = CASES[name]
    extra = {
        "maxpool": ops.feature_pyramid_network.LastLevelMaxPool(),
        "p5": ops.feature_pyramid_network.LastLevelP6P7(out_channels, out_channels),
        "c5": ops.feature_pyramid_network.LastLevelP6P7(channels[-1], out_channels),
    }[extra_source]
    norm_layer = {None: None, "bn": nn.BatchNorm2d, "gn": partial(nn.GroupNorm, 32)}[norm]
    return ops.FeaturePyramidNetwork(list(channels), out_channels, extra, norm_layer)


def _case(name, ops):
    levels = CASES[name][0]
    fpn = BACKBONE_REFS.fill_deterministic_(_torchvision_fpn(name, ops).double()).eval()
    inputs = case_inputs(name)
    outputs = fpn(dict(zip(levels, inputs)))
    state = fpn.state_dict()
    return {
        "keys": list(state),
        "shapes": [tuple(t.shape) for t in state.values()],
        "input_shapes": [tuple(x.shape) for x in inputs],
        "output_names": list(outputs),
        "outputs": [y.detach().clone() for y in outputs.values()],
    }


def main():
    import torchvision
    from torchvision import ops

    torch.set_grad_enabled(False)
    refs = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "image_size": IMAGE_SIZE,
        "cases": {name: _case(name, ops) for name in CASES},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
