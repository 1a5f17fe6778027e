"""RoIAlign: frozen torchvision values, a plain-loop oracle, properties and edge cases.

The fixture is written by tests/reference/make_roi_align_refs.py (torchvision 0.29,
float64). ``roi_align_reference`` (the library's plain loop over RoIs, bins and
samples) is pinned to torchvision here, so "vectorised == loop" means something;
the vectorised op must equal it on random cases, output and input gradient.
"""

import importlib
import os

import pytest
import torch

from fcos_from_scratch.ops import roi_align, roi_align_reference
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "roi_align_refs.pt")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


def call_case(refs, case, dtype=torch.float64, summation="fused"):
    """Run our op on a fixture case; returns (output, grad_input)."""
    x = refs["inputs"][case["input"]].to(dtype).clone().requires_grad_(True)
    boxes = case["boxes"]
    boxes = [b.to(dtype) for b in boxes] if isinstance(boxes, list) else boxes.to(dtype)
    out = roi_align(x, boxes, case["output_size"], case["spatial_scale"],
                    case["sampling_ratio"], case["aligned"], summation=summation)
    out.backward(case["grad_output"].to(dtype))
    return out.detach(), x.grad


# ------------------------------------------------------------------ loop oracle

def roi_align_loop(x, rois, pooled, spatial_scale, sampling_ratio, aligned, grad_output):
    """The library's plain loop, with its input gradient for ``grad_output`` (autograd)."""
    x = x.detach().clone().requires_grad_(True)
    out = roi_align_reference(x, rois, pooled, spatial_scale, sampling_ratio, aligned)
    out.backward(grad_output)
    return out.detach(), x.grad


def random_case(seed, k=6, size=(2, 3, 9, 11)):
    """Random map and (k, 5) RoIs, some hanging off the map, tiny or inverted."""
    g = torch.Generator().manual_seed(seed)
    B, _, H, W = size
    x = torch.randn(size, generator=g, dtype=torch.float64)
    extent = torch.tensor([W, H], dtype=torch.float64)
    centre = torch.rand(k, 2, generator=g, dtype=torch.float64) * 1.6 * extent - 0.3 * extent
    wh = (torch.rand(k, 2, generator=g, dtype=torch.float64) - 0.1) * extent
    index = torch.randint(0, B, (k, 1), generator=g).to(torch.float64)
    return x, torch.cat([index, centre - wh / 2, centre + wh / 2], dim=1)


# --------------------------------------------------------------- references

def test_fixture_records_versions(refs):
    assert refs["versions"]["torchvision"].startswith("0.29")
    assert len(refs["cases"]) >= 10


def test_matches_torchvision_float64(refs):
    for case in refs["cases"]:
        out, grad = call_case(refs, case)
        torch.testing.assert_close(out, case["output"], rtol=0, atol=1e-8, msg=case["name"])
        torch.testing.assert_close(grad, case["grad_input"], rtol=0, atol=1e-8,
                                   msg=case["name"])


def test_matches_torchvision_float32(refs):
    for case in refs["cases"]:
        out, grad = call_case(refs, case, torch.float32)
        assert out.dtype == grad.dtype == torch.float32
        torch.testing.assert_close(out.double(), case["output"], rtol=0, atol=1e-5)
        torch.testing.assert_close(grad.double(), case["grad_input"], rtol=0, atol=1e-5)


def test_kernel_summation_is_bit_identical_to_torchvision_float32(refs):
    # summation="kernel" adds taps and samples in the order of torchvision's CPU kernel,
    # so float32 results are the same bits, not just close (the fused sum is a few ulps off)
    for case in refs["cases"]:
        out, _ = call_case(refs, case, torch.float32, summation="kernel")
        assert torch.equal(out, case["output_float32"]), case["name"]
        fused, _ = call_case(refs, case, torch.float32)
        torch.testing.assert_close(fused, out, rtol=0, atol=1e-5, msg=case["name"])


def test_kernel_summation_float64_and_gradient(refs):
    for case in refs["cases"]:
        out, grad = call_case(refs, case, summation="kernel")
        torch.testing.assert_close(out, case["output"], rtol=0, atol=1e-12, msg=case["name"])
        torch.testing.assert_close(grad, case["grad_input"], rtol=0, atol=1e-12, msg=case["name"])


def test_kernel_summation_in_chunks(monkeypatch):
    # the gathered taps are processed in chunks of bins; a chunk of 1 bin changes nothing
    x, rois = random_case(3, k=9)
    whole = roi_align(x.float(), rois.float(), (3, 2), 0.5, -1, False, summation="kernel")
    module = importlib.import_module("fcos_from_scratch.ops.roi_align")  # the package's name is the function
    monkeypatch.setattr(module, "_KERNEL_CHUNK", 1)
    assert torch.equal(roi_align(x.float(), rois.float(), (3, 2), 0.5, -1, False, summation="kernel"), whole)


def test_unknown_summation_is_rejected():
    with pytest.raises(ValueError, match="summation must be one of"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, summation="exact")


def test_loop_oracle_matches_torchvision(refs):
    """The oracle itself is pinned to torchvision, so 'vectorised == loop' means something."""
    for case in refs["cases"]:
        boxes = case["boxes"]
        if isinstance(boxes, list):
            continue  # list input is covered by test_list_boxes_equal_tensor_boxes
        size = case["output_size"]
        pooled = (size, size) if isinstance(size, int) else tuple(size)
        out, grad = roi_align_loop(refs["inputs"][case["input"]], boxes, pooled,
                                   case["spatial_scale"], case["sampling_ratio"],
                                   case["aligned"], case["grad_output"])
        torch.testing.assert_close(out, case["output"], rtol=0, atol=1e-12, msg=case["name"])
        torch.testing.assert_close(grad, case["grad_input"], rtol=0, atol=1e-12)


# Hand-computed on the 2 x 2 map [[1, 2], [3, 4]], i.e. f(x, y) = 1 + x + 2 y at
# pixel (col x, row y); bilinear interpolation of a linear map is the map itself,
# after the clamps. Output 1 x 1, sampling_ratio 1 unless stated.
HAND_TABLE = [
    # box, aligned, sampling_ratio, expected      arithmetic
    ([0.0, 0.0, 1.0, 1.0], False, 1, 2.5),     # sample (0.5, 0.5): 1 + 0.5 + 1
    ([0.5, 0.5, 1.5, 1.5], True, 1, 2.5),      # shift -0.5 -> [0, 0, 1, 1]: same sample
    ([0.5, 0.5, 0.6, 0.6], False, 1, 4.0),     # legacy size 1: sample (1, 1): floor 1 >= W - 1
    ([0.5, 0.5, 0.6, 0.6], True, 1, 1.15),     # [0, 0, .1, .1]: (0.05, 0.05): 1 + .05 + .1
    ([0.0, 0.0, 2.0, 1.0], False, 1, 3.0),     # sample (1, 0.5): 1 + 1 + 1
    ([-1.0, -1.0, 0.0, 0.0], False, 1, 1.0),   # sample (-0.5, -0.5) >= -1: clamped to (0, 0)
    ([-2.5, 0.0, -1.5, 1.0], False, 1, 0.0),   # sample x = -2 < -1: off the map
    ([0.0, 0.0, 2.0, 2.0], False, 2, 3.25),    # samples 0.5, 1.5 -> 0.5, 1 (clamped at W - 1):
                                               # (2.5 + 3 + 3.5 + 4) / 4
]


@pytest.mark.parametrize("box, aligned, sampling_ratio, expected", HAND_TABLE)
def test_hand_computed_table(box, aligned, sampling_ratio, expected):
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    rois = torch.tensor([[0.0] + box], dtype=torch.float64)
    out = roi_align(x, rois, 1, sampling_ratio=sampling_ratio, aligned=aligned)
    assert out.item() == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------- properties

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("aligned", [False, True])
def test_vectorised_equals_loop(seed, aligned):
    x, rois = random_case(seed)
    pooled = (3, 2) if seed % 2 else (2, 4)
    scale, ratio = [(1.0, -1), (0.5, 2), (2.0, 0), (1.0, 3)][seed]
    rois[:, 1:] /= scale
    xg = x.clone().requires_grad_(True)
    out = roi_align(xg, rois, pooled, scale, ratio, aligned)
    grad_output = torch.randn(out.shape, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(seed))
    out.backward(grad_output)
    ref_out, ref_grad = roi_align_loop(x, rois, pooled, scale, ratio, aligned, grad_output)
    torch.testing.assert_close(out.detach(), ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(xg.grad, ref_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("aligned", [False, True])
def test_constant_map_gives_constant_inside(aligned):
    x = torch.full((1, 2, 12, 12), 3.25, dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 11.0], [0, 0.7, 0.7, 1.9, 3.3],
                         [0, 4.5, 5.5, 10.25, 6.75]], dtype=torch.float64)
    out = roi_align(x, rois, (3, 5), sampling_ratio=-1, aligned=aligned)
    torch.testing.assert_close(out, torch.full_like(out, 3.25), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampling_ratio", [-1, 1])
def test_aligned_box_on_pixel_grid_reads_the_pixels(sampling_ratio):
    # aligned: box edges minus 0.5, so bin (ph, pw) of the box [3, 2, 7, 5] is the
    # 1 x 1 square whose single sample (grid = ceil(1 / 1) = 1) sits exactly at
    # pixel centre (x, y) = (3 + pw, 2 + ph) - 0.5 + 0.5: the pixel value itself
    x = torch.randn(2, 4, 8, 9, dtype=torch.float64)
    out = roi_align(x, torch.tensor([[1, 3.0, 2.0, 7.0, 5.0]], dtype=torch.float64), (3, 4),
                    sampling_ratio=sampling_ratio, aligned=True)
    torch.testing.assert_close(out[0], x[1, :, 2:5, 3:7], rtol=0, atol=1e-14)


def test_gradient_of_inside_boxes_sums_to_upstream():
    # every sample inside the map spreads weight 1 / count over its neighbours, so
    # the input gradient of a bin sums to that bin's upstream gradient
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 8.0, 6.0], [1, 2.2, 0.5, 9.1, 9.3],
                         [1, 4.0, 4.0, 4.2, 4.1]], dtype=torch.float64)
    out = roi_align(x, rois, 4, sampling_ratio=2)
    grad_output = torch.rand(out.shape, dtype=torch.float64)
    out.backward(grad_output)
    grad_per_image = x.grad.sum(dim=(1, 2, 3))  # (B,)
    torch.testing.assert_close(grad_per_image[0], grad_output[0].sum())
    torch.testing.assert_close(grad_per_image[1], grad_output[1:].sum())


def test_gradcheck():
    x, rois = random_case(7, k=3, size=(2, 1, 4, 5))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 1.0, -1, True), (x,),
                                    fast_mode=True)


def test_list_boxes_equal_tensor_boxes():
    x, rois = random_case(3, k=8)
    per_image = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    order = torch.argsort(rois[:, 0], stable=True)  # list input: image 0's boxes first
    torch.testing.assert_close(roi_align(x, per_image, 3, aligned=True),
                               roi_align(x, rois[order], 3, aligned=True), rtol=0, atol=0)


def test_batched_equals_per_image():
    x, rois = random_case(4, k=8)
    out = roi_align(x, rois, (2, 3), 1.0, 2, False)
    for b in range(2):
        mine = rois[:, 0] == b
        alone = torch.cat([torch.zeros(int(mine.sum()), 1, dtype=torch.float64),
                           rois[mine, 1:]], dim=1)
        torch.testing.assert_close(out[mine], roi_align(x[b:b + 1], alone, (2, 3), 1.0, 2, False))


def test_linear_in_input():
    x, rois = random_case(5)
    y = torch.randn_like(x)
    lhs = roi_align(2.0 * x - 3.0 * y, rois, 3)
    torch.testing.assert_close(lhs, 2.0 * roi_align(x, rois, 3) - 3.0 * roi_align(y, rois, 3))


# --------------------------------------------------------------- edge cases

def test_no_rois_gives_empty_output_that_backpropagates():
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), (2, 3))
    assert out.shape == (0, 3, 2, 3) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty_lists = roi_align(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2)
    assert empty_lists.shape == (0, 3, 2, 2)


def test_empty_list_entry():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    box = torch.tensor([[0.5, 1.0, 4.0, 4.5]], dtype=torch.float64)
    out = roi_align(x, [torch.zeros(0, 4, dtype=torch.float64), box], 2)
    ref = roi_align(x, torch.cat([torch.ones(1, 1, dtype=torch.float64), box], 1), 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_zero_channels():
    x = torch.randn(1, 0, 5, 6, requires_grad=True)
    out = roi_align(x, torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]]), 2)
    assert out.shape == (1, 0, 2, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_boxes_off_the_map_and_empty_aligned_boxes_give_zeros():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64) + 10.0
    rois = torch.tensor([[0, 20.0, 20.0, 30.0, 25.0],   # far right/below: y, x > H, W
                         [0, -9.0, -9.0, -2.0, -3.0],   # far left/above: y, x < -1
                         [0, 3.0, 3.0, 3.0, 3.0],       # aligned: zero size -> no samples
                         [0, 4.0, 4.0, 2.0, 2.0]],      # aligned: inverted -> no samples
                        dtype=torch.float64)
    out = roi_align(x, rois, 2, aligned=True)
    assert torch.equal(out, torch.zeros_like(out))
    legacy = roi_align(x, rois[2:], 2, aligned=False)  # legacy: grown to 1 x 1, reads the map
    assert (legacy > 5.0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_keeps_dtype(dtype):
    x, rois = random_case(6)
    out = roi_align(x.to(dtype), rois.to(dtype), 2)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), roi_align(x, rois.to(dtype).double(), 2),
                               rtol=0, atol=0.05 if dtype.itemsize == 2 else 1e-5)


def test_memory_layout_does_not_matter():
    x, rois = random_case(9, size=(2, 5, 9, 11))
    expected = roi_align(x, rois, 3)
    assert expected.is_contiguous()
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_align(channels_last, rois, 3), expected, rtol=0, atol=1e-14)
    wide = torch.randn(2, 10, 9, 11, dtype=torch.float64)
    wide[:, ::2] = x  # a strided view of the same values
    torch.testing.assert_close(roi_align(wide[:, ::2], rois, 3), expected, rtol=0, atol=1e-14)


def test_integer_boxes_are_accepted():
    x = torch.randn(1, 2, 6, 6)
    boxes = torch.tensor([[0, 1, 1, 4, 5]])
    torch.testing.assert_close(roi_align(x, boxes, 2), roi_align(x, boxes.float(), 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, rois = random_case(8)
    torch.testing.assert_close(roi_align(x.cuda(), rois.cuda(), 3).cpu(), roi_align(x, rois, 3))


# --------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    ({"input": torch.zeros(3, 5, 5)}, "input must have shape"),
    ({"input": torch.zeros(1, 3, 5, 5, dtype=torch.int64)}, "input must be a floating"),
    ({"input": "features"}, "input must be a torch.Tensor"),
    ({"boxes": torch.zeros(2, 4)}, r"boxes must be a \(K, 5\) tensor"),
    ({"boxes": torch.zeros(2, 5, 1)}, r"boxes must be a \(K, 5\) tensor"),
    ({"boxes": torch.tensor([[2.0, 0, 0, 1, 1]])}, r"boxes\[:, 0\]"),
    ({"boxes": torch.tensor([[-1.0, 0, 0, 1, 1]])}, r"boxes\[:, 0\]"),
    ({"boxes": torch.tensor([[0.5, 0, 0, 1, 1]])}, r"boxes\[:, 0\]"),
    ({"boxes": torch.tensor([[0, float("nan"), 0, 1, 1]])}, "boxes must be finite"),
    ({"boxes": [torch.zeros(1, 4)]}, "list of 1 tensors but input has batch size 2"),
    ({"boxes": [torch.zeros(1, 4), torch.zeros(1, 5)]}, r"boxes\[1\] must have shape \(L, 4\)"),
    ({"boxes": [[0, 0, 1, 1], [0, 0, 1, 1]]}, r"boxes\[0\] must be a torch.Tensor"),
    ({"boxes": "boxes"}, "boxes must be a"),
    ({"output_size": 0}, "output_size must be positive"),
    ({"output_size": (2,)}, "output_size must be an int or a pair"),
    ({"output_size": (2.5, 3)}, "output_size must be an int or a pair"),
    ({"output_size": "7"}, "output_size must be an int or a pair"),
    ({"output_size": True}, "output_size must be an int or a pair"),
    ({"sampling_ratio": 1.5}, "sampling_ratio must be an int"),
    ({"spatial_scale": 0.0}, "spatial_scale must be a positive"),
    ({"spatial_scale": float("nan")}, "spatial_scale must be a positive"),
])
def test_bad_input_raises_value_error(kwargs, match):
    args = {"input": torch.zeros(2, 3, 5, 5), "boxes": torch.tensor([[1.0, 0, 0, 2, 2]]),
            "output_size": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        roi_align(**args)
