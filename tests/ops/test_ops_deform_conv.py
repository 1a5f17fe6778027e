"""Deformable convolution: frozen torchvision values, a plain-loop oracle, properties, errors.

The fixture is written by tests/reference/make_deform_conv_refs.py (torchvision 0.29,
float64): output and the gradients of input, offset, mask, weight and bias for
cases covering stride, padding, dilation, offset and weight groups, non-square
kernels, masks and biases present or not, offsets off the map and integer offsets.
``deform_conv2d_reference`` (the plain loop) is pinned to the same values, so
"vectorised == loop" means something.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch.ops import DeformConv2d, deform_conv2d, deform_conv2d_reference
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "deform_conv_refs.pt")
ARGS = ("input", "offset", "weight", "bias", "mask")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


def run(fn, case, dtype=torch.float64):
    """Our op on a fixture case: (output, {name: gradient})."""
    leaves = {k: v.to(dtype).clone().requires_grad_(True) for k, v in case["tensors"].items()}
    out = fn(leaves["input"], leaves["offset"], leaves["weight"], leaves.get("bias"),
             stride=tuple(case["stride"]), padding=tuple(case["padding"]),
             dilation=tuple(case["dilation"]), mask=leaves.get("mask"))
    out.backward(case["grad_output"].to(dtype))
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def assert_case_close(case, out, grads, atol):
    name = case["name"]
    torch.testing.assert_close(out.double(), case["output"], rtol=0, atol=atol, msg=name)
    assert set(grads) == set(case["grads"])
    for key, grad in grads.items():
        torch.testing.assert_close(grad.double(), case["grads"][key], rtol=0, atol=atol,
                                   msg=f"{name}: grad of {key}")


def test_fixture_records_versions_and_covers_the_cases(refs):
    assert refs["versions"]["torchvision"].startswith("0.29")
    names = {c["name"] for c in refs["cases"]}
    assert {"offset_groups_2", "weight_groups_2", "off_the_map", "no_mask_no_bias",
            "nonsquare_kernel_2x3", "stride_pad_dil_asym", "integer_offsets"} <= names


def test_matches_torchvision_float64(refs):
    for case in refs["cases"]:
        out, grads = run(deform_conv2d, case)
        assert_case_close(case, out, grads, atol=1e-10)


def test_matches_torchvision_float32(refs):
    for case in refs["cases"]:
        out, grads = run(deform_conv2d, case, torch.float32)
        assert out.dtype == torch.float32
        assert_case_close(case, out, grads, atol=1e-4)


# the loop is slow: cases that together cover both kinds of groups, a mask, samples
# off the map and on integer coordinates (the vectorised op is pinned on all cases)
SMALL = ("integer_offsets_no_mask", "both_groups", "off_the_map")


def test_reference_loop_matches_torchvision(refs):
    for case in (c for c in refs["cases"] if c["name"] in SMALL):
        out, grads = run(deform_conv2d_reference, case)
        assert_case_close(case, out, grads, atol=1e-10)


def test_vectorised_equals_loop_on_random_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 2, generator=g, dtype=torch.float64)  # groups = 2
    off = torch.randn(2, 2 * 2 * 6, 3, 6, generator=g, dtype=torch.float64) * 3  # G_off = 2
    m = torch.rand(2, 2 * 6, 3, 6, generator=g, dtype=torch.float64)
    kwargs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), mask=m)
    torch.testing.assert_close(deform_conv2d(x, off, w, **kwargs),
                               deform_conv2d_reference(x, off, w, **kwargs), rtol=0, atol=1e-12)


def test_zero_offsets_unit_mask_is_conv2d():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 7, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    off = torch.zeros(2, 2 * 9, 4, 8, dtype=torch.float64)
    kwargs = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    ours = deform_conv2d(x, off, w, b, **kwargs)
    torch.testing.assert_close(ours, F.conv2d(x, w, b, groups=2, **kwargs), rtol=0, atol=1e-12)
    ones = torch.ones(2, 9, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d(x, off, w, b, mask=ones, **kwargs), ours)


def test_integer_offset_is_a_shifted_conv():
    """An offset of (dy, dx) = (1, -2) everywhere reads the map shifted by that much."""
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    off = torch.tensor([1.0, -2.0], dtype=torch.float64).repeat(9).reshape(1, 18, 1, 1).expand(1, 18, 4, 5)
    shifted = F.pad(x, (2, 0, 0, 1))[:, :, 1:, :7]  # shifted[y, x] = x[y + 1, x - 2], 0 outside
    torch.testing.assert_close(deform_conv2d(x, off, w), F.conv2d(shifted, w), rtol=0, atol=1e-12)


def test_samples_far_off_the_map_read_zero_and_still_backpropagate():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    off = torch.full((1, 18, 4, 4), 50.0, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64)
    out = deform_conv2d(x, off, w, b, padding=1)
    torch.testing.assert_close(out, b.reshape(1, 2, 1, 1).expand(1, 2, 4, 4))
    out.sum().backward()
    assert x.grad.abs().sum() == 0 and off.grad.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 5, 5, generator=g)
    w = torch.randn(2, 2, 3, 3, generator=g)
    off = torch.randn(3, 18, 5, 5, generator=g)
    m = torch.rand(3, 9, 5, 5, generator=g)
    whole = deform_conv2d(x, off, w, padding=1, mask=m)
    for i in range(3):
        one = deform_conv2d(x[i:i + 1], off[i:i + 1], w, padding=1, mask=m[i:i + 1])
        torch.testing.assert_close(whole[i:i + 1], one)


def test_malformed_calls_raise_torchvisions_exception_types(refs):
    assert len(refs["errors"]) >= 8
    for error in refs["errors"]:
        expected = {"RuntimeError": RuntimeError, "ValueError": ValueError}[error["type"]]
        with pytest.raises(expected):
            deform_conv2d(**error["args"])
        with pytest.raises(ValueError):  # our convention: every bad argument is a ValueError
            deform_conv2d(**error["args"])


def test_module_matches_torchvision_constructor_and_init():
    torch.manual_seed(0)
    layer = DeformConv2d(4, 6, 3, padding=1, groups=2)
    assert layer.weight.shape == (6, 2, 3, 3) and layer.bias.shape == (6,)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 3), (1, 1), (1, 1), (1, 1))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)  # torchvision inits like nn.Conv2d
    torch.testing.assert_close(layer.weight, conv.weight)
    torch.testing.assert_close(layer.bias, conv.bias)
    assert DeformConv2d(2, 2, (1, 3), bias=False).bias is None
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(3, 4, 3, groups=2)
    x = torch.randn(1, 4, 5, 5)
    off = torch.zeros(1, 18, 5, 5)
    torch.testing.assert_close(layer(x, off), conv(x), rtol=1e-5, atol=1e-5)


def test_grid_sample_sampler_matches_the_gather_away_from_integer_coordinates():
    """The fast sampler: same values and gradients where no sample sits on an integer coordinate."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=g)
    offset = torch.rand(2, 2 * 2 * 9, 6, 5, dtype=torch.float64, generator=g) * 6 - 3  # off the map too
    mask = torch.rand(2, 2 * 9, 6, 5, dtype=torch.float64, generator=g)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64, generator=g)
    results = []
    for sampler in ("gather", "grid_sample"):
        leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight)]
        out = deform_conv2d(leaves[0], leaves[1], leaves[3], padding=1, mask=leaves[2], sampler=sampler)
        out.square().sum().backward()
        results.append([out.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    one_wide = torch.randn(1, 2, 4, 1, dtype=torch.float64)  # no normalisation for W = 1: the gather
    off = torch.rand(1, 18, 4, 1, dtype=torch.float64) - 0.5
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d(one_wide, off, w, padding=1, sampler="grid_sample"),
                               deform_conv2d(one_wide, off, w, padding=1))
    with pytest.raises(RuntimeError, match="sampler"):
        deform_conv2d(x, offset, weight, padding=1, mask=mask, sampler="nearest")
