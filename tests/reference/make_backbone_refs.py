"""Freeze torchvision's ResNet-18/34/50 and MobileNetV2 as reference values for our backbones.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_backbone_refs.py   # writes tests/fixtures/backbone_refs.pt

Storing real weights would take ~200 MB, so instead every state-dict entry is
filled by a deterministic rule of its key (:func:`fill_deterministic_`, pure
integer hashing, identical in any PyTorch version). ``tests/models/test_models_backbones.py``
imports this file (torchvision is only imported inside :func:`main`), fills our
model with the same rule and compares. The fixture records, per model:

* the ordered state-dict keys and shapes (strict-loading parity);
* the logits and the C3, C4, C5 feature maps on a fixed 1×3×64×64 input in eval mode;
* which parameters torchvision's detection extractors leave trainable for each
  ``trainable_layers`` (ResNet-18 and MobileNetV2; ResNet-18 also with
  ``returned_layers=[1, 2]``, where layer3 and layer4 are dropped);
* C2..C5 of ResNet-50 from torchvision's ``IntermediateLayerGetter`` with
  ``return_layers`` layer1..layer4 (``returned_layers=[1, 2, 3, 4]``), on a
  smaller fixed 1×3×32×48 input (C2 alone is 256×16×16 at 64×64);

plus one torchvision ``FrozenBatchNorm2d`` case and the library versions.
"""

import os
import platform
import zlib

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "backbone_refs.pt")
INPUT_SHAPE = (1, 3, 64, 64)
GETTER_INPUT_SHAPE = (1, 3, 32, 48)  # the IntermediateLayerGetter case: C2 is 256×8×12
MODELS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
# Child names whose outputs are C3, C4, C5 (stride 8, 16, 32) in torchvision's modules.
TAPS = {
    "resnet18": ("layer2", "layer3", "layer4"),
    "resnet34": ("layer2", "layer3", "layer4"),
    "resnet50": ("layer2", "layer3", "layer4"),
    "mobilenet_v2": ("features.6", "features.13", "features.18"),
}
_MASK = 0xFFFFFFFF
_PERIOD = 4099  # a prime: values hashed per tensor before repeating


def hash_uniform(key: str, numel: int) -> torch.Tensor:
    """``numel`` float64 values in [0, 1) from integer hashing of ``key`` and the index.

    A 32-bit integer mixer (multiply by 0x45D9F3B, xor-shift 16, twice) on
    ``index + crc32(key)``; all products stay below 2**63, so the result is exact
    and the same on every machine and PyTorch version.
    """
    h = (torch.arange(numel, dtype=torch.int64) + zlib.crc32(key.encode())) & _MASK
    for _ in range(2):
        h = (h * 0x45D9F3B) & _MASK
        h = h ^ (h >> 16)
    return h.to(torch.float64) / 2.0**32


def deterministic_tensor(key: str, shape, low: float, high: float,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` with values in [low, high), a function of ``key`` only.

    Hashing tens of millions of entries is slow on a laptop, so at most ``_PERIOD``
    values are hashed and then repeated; the period is prime, so consecutive
    filters of a convolution see different shifts of the pattern.
    """
    numel = 1
    for size in shape:
        numel *= int(size)
    pattern = (low + (high - low) * hash_uniform(key, min(numel, _PERIOD))).to(dtype)
    repeats = -(-numel // pattern.numel()) if numel else 0
    return pattern.repeat(repeats)[:numel].reshape(tuple(shape))


def fill_rule(key: str, shape):
    """(low, high) for the state-dict entry ``key`` of ``shape``.

    BatchNorm scales and variances near 1, biases and means near 0, conv and
    linear weights uniform with variance 1 / fan_in (bound sqrt(3 / fan_in)) so
    activations stay O(1) through fifty layers.
    """
    if key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
        return 0.5, 1.5
    if key.endswith("running_mean") or key.endswith("bias"):
        return -0.2, 0.2
    fan_in = 1
    for size in shape[1:]:
        fan_in *= int(size)
    bound = (3.0 / fan_in) ** 0.5
    return -bound, bound


@torch.no_grad()
def fill_deterministic_(module: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every floating-point parameter and buffer of ``module`` by its key's rule."""
    for key, tensor in module.state_dict(keep_vars=True).items():
        if tensor.is_floating_point():
            low, high = fill_rule(key, tensor.shape)
            tensor.copy_(deterministic_tensor(key, tensor.shape, low, high, tensor.dtype))
    return module


def fixed_input(shape=INPUT_SHAPE) -> torch.Tensor:
    """The fixed float32 input image batch, values in [-2, 2)."""
    return deterministic_tensor("input", shape, -2.0, 2.0)


def _forward_with_taps(model, taps):
    features = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, level=level: features.__setitem__(level, out.detach().clone())
        )
        for level, name in zip(("C3", "C4", "C5"), taps)
    ]
    logits = model(fixed_input())
    for handle in handles:
        handle.remove()
    return logits.detach(), features


def _model_case(name, models):
    model = fill_deterministic_(getattr(models, name)(weights=None)).eval()
    state = model.state_dict()
    logits, features = _forward_with_taps(model, TAPS[name])
    return {
        "keys": list(state),
        "shapes": [tuple(t.shape) for t in state.values()],
        "logits": logits,
        **features,
    }


def _trainable_cases(models, backbone_utils):
    """Names of the parameters left trainable, per trainable_layers, by torchvision."""
    cases = {"resnet18": {}, "mobilenet_v2": {}}
    for k in range(6):
        extract = backbone_utils._resnet_fpn_extractor
        body = extract(models.resnet18(), k, returned_layers=[2, 3, 4]).body
        cases["resnet18"][k] = [n for n, p in body.named_parameters() if p.requires_grad]
    for k in range(7):
        body = backbone_utils._mobilenet_extractor(models.mobilenet_v2(), True, k).body
        cases["mobilenet_v2"][k] = [n for n, p in body.named_parameters() if p.requires_grad]
    return cases


def _trainable_subset_cases(models, backbone_utils):
    """Trainable parameters of ResNet-18 returning only layer1, layer2 (C2, C3)."""
    cases = {}
    for k in range(6):
        extract = backbone_utils._resnet_fpn_extractor
        body = extract(models.resnet18(), k, returned_layers=[1, 2]).body
        cases[k] = [n for n, p in body.named_parameters() if p.requires_grad]
    return cases


def _intermediate_layer_getter_case(models, intermediate_layer_getter):
    """C2..C5 of a deterministically filled ResNet-50 through torchvision's getter."""
    model = fill_deterministic_(models.resnet50(weights=None)).eval()
    return_layers = {"layer1": "C2", "layer2": "C3", "layer3": "C4", "layer4": "C5"}
    body = intermediate_layer_getter(model, return_layers=return_layers)
    features = body(fixed_input(GETTER_INPUT_SHAPE))
    return {
        "input_shape": GETTER_INPUT_SHAPE,
        "keys": list(body.state_dict()),
        **{name: value.detach().clone() for name, value in features.items()},
    }


def _frozen_bn_case(frozen_bn_class):
    layer = fill_deterministic_(frozen_bn_class(5))
    x = deterministic_tensor("frozen_bn_input", (2, 5, 3, 4), -3.0, 3.0)
    return {"keys": list(layer.state_dict()), "eps": layer.eps, "input": x, "output": layer(x)}


def main():
    import torchvision
    from torchvision import models
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection import backbone_utils
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.set_grad_enabled(False)
    refs = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "input_shape": INPUT_SHAPE,
        "input_sum": fixed_input().double().sum().item(),
        "models": {name: _model_case(name, models) for name in MODELS},
        "trainable": _trainable_cases(models, backbone_utils),
        "trainable_c2_c3": _trainable_subset_cases(models, backbone_utils),
        "resnet50_c2_c5": _intermediate_layer_getter_case(models, IntermediateLayerGetter),
        "frozen_bn": _frozen_bn_case(FrozenBatchNorm2d),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
