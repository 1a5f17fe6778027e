"""Freeze torchvision's ``roi_align`` (forward values and input gradients) in float64.

Each case also stores torchvision's float32 output on the same input and boxes cast
to float32, whose exact bits ``roi_align(..., summation="kernel")`` must reproduce.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_roi_align_refs.py   # writes tests/fixtures/roi_align_refs.pt

Each case stores the inputs, the call's arguments, a random upstream gradient
``grad_output``, torchvision's output and the gradient it gives the input. The
cases cover: aligned True/False, adaptive (sampling_ratio <= 0) and fixed grids,
spatial_scale 1/8 and 0.5, non-square outputs, boxes partly and fully outside the
map, tiny and inverted boxes (legacy minimum size 1 when not aligned; no samples
when aligned), samples exactly on the y = -1 and y = H boundaries, list-of-boxes
input with an empty entry, and random boxes. The fixture records the versions.
"""

import os
import platform

import torch
import torchvision
from torchvision.ops import roi_align

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "roi_align_refs.pt")

# Hand-picked boxes (x1, y1, x2, y2) on a 10 x 12 (H x W) map at spatial_scale 1.
EDGE_BOXES = [
    [1.0, 1.0, 7.0, 6.0],       # inside
    [2.3, 0.7, 9.9, 8.4],       # inside, fractional
    [-3.0, -2.5, 4.0, 3.0],     # partly outside, top-left
    [8.0, 6.0, 15.0, 13.0],     # partly outside, bottom-right
    [20.0, 20.0, 30.0, 25.0],   # fully outside
    [-9.0, -9.0, -2.0, -3.0],   # fully outside, negative
    [4.2, 5.1, 4.5, 5.3],       # tiny: legacy mode grows it to 1 x 1
    [6.0, 3.0, 6.0, 3.0],       # zero size
    [7.0, 6.0, 3.0, 2.0],       # inverted
    [0.0, 0.0, 12.0, 10.0],     # the whole map
    [-1.5, -1.5, 12.5, 10.5],   # slightly larger than the map
]
# sampling_ratio = 1, output 1 x 1: a single sample at the box centre, chosen to land
# exactly on the validity boundaries y = -1, x = -1 (valid), y = H, x = W (valid)
# and just past them (zero).
BOUNDARY_BOXES = [
    [-1.5, -1.5, -0.5, -0.5],   # sample at (-1, -1): clamped to pixel (0, 0)
    [11.5, 9.5, 12.5, 10.5],    # sample at (W, H): reads pixel (W-1, H-1)
    [-1.75, -1.75, -0.25, -0.25],  # same centre, bigger box
    [-2.0, -2.0, -0.5, -0.5],   # sample at (-1.25, -1.25): outside -> 0
    [11.5, 9.75, 12.5, 10.75],  # sample y = 10.25 > H: outside -> 0
]


def run_case(inputs, generator, name, key, boxes, output_size, spatial_scale,
             sampling_ratio, aligned):
    x = inputs[key].clone().requires_grad_(True)
    out = roi_align(x, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    grad_output = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    if out.numel():
        out.backward(grad_output)
        grad_input = x.grad
    else:
        grad_input = torch.zeros_like(x)
    # float32 as well: its exact bits, to pin roi_align(..., summation="kernel")
    boxes32 = [b.float() for b in boxes] if isinstance(boxes, list) else boxes.float()
    with torch.no_grad():
        out32 = roi_align(inputs[key].float(), boxes32, output_size, spatial_scale, sampling_ratio, aligned)
    return {
        "name": name,
        "input": key,  # a key of the fixture's "inputs"
        "boxes": boxes,
        "output_size": list(output_size) if isinstance(output_size, tuple) else output_size,
        "spatial_scale": spatial_scale,
        "sampling_ratio": sampling_ratio,
        "aligned": aligned,
        "grad_output": grad_output,
        "output": out.detach(),
        "grad_input": grad_input,
        "output_float32": out32,
    }


def with_batch_index(boxes, batch_index):
    boxes = torch.tensor(boxes, dtype=torch.float64)
    index = torch.as_tensor(batch_index, dtype=torch.float64).expand(len(boxes))
    return torch.cat([index[:, None], boxes], dim=1)


def random_rois(generator, k, batch_size, height, width, scale):
    """(k, 5) RoIs in image pixels, mostly on the map, some hanging off it."""
    size = torch.tensor([width, height], dtype=torch.float64) / scale
    centre = torch.rand(k, 2, generator=generator, dtype=torch.float64) * 1.4 * size - 0.2 * size
    wh = torch.rand(k, 2, generator=generator, dtype=torch.float64) ** 2 * size
    index = torch.randint(0, batch_size, (k, 1), generator=generator).to(torch.float64)
    return torch.cat([index, centre - wh / 2, centre + wh / 2], dim=1)


def main():
    g = torch.Generator().manual_seed(20260521)
    inputs = {  # (B, C, H, W) feature maps, stored once
        "small": torch.randn(2, 3, 10, 12, generator=g, dtype=torch.float64),
        "random": torch.randn(2, 4, 13, 11, generator=g, dtype=torch.float64),
    }
    edge = torch.cat([with_batch_index(EDGE_BOXES, 0), with_batch_index(EDGE_BOXES[:4], 1)])
    bound = with_batch_index(BOUNDARY_BOXES, 1)
    to_image = torch.tensor([1, 8, 8, 8, 8.0])  # box coordinates x 8, for spatial_scale 1/8
    shift = torch.tensor([0, 0.5, 0.5, 0.5, 0.5])  # aligned subtracts it again
    per_image = [torch.tensor(EDGE_BOXES[:5], dtype=torch.float64) * 2,
                 torch.zeros(0, 4, dtype=torch.float64)]
    # (name, input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    specs = [
        ("edge_legacy_adaptive", "small", edge, (3, 4), 1.0, -1, False),
        ("edge_aligned_adaptive", "small", edge, (3, 4), 1.0, 0, True),
        ("edge_legacy_sr2", "small", edge, 2, 1.0, 2, False),
        ("edge_aligned_sr3_scale_1/8", "small", edge * to_image, (2, 3), 1 / 8, 3, True),
        ("boundary_legacy", "small", bound, 1, 1.0, 1, False),
        ("boundary_aligned", "small", bound + shift, 1, 1.0, 1, True),
        ("list_aligned_scale_0.5", "small", per_image, (2, 3), 0.5, -1, True),
        ("empty", "small", torch.zeros(0, 5, dtype=torch.float64), 3, 1.0, -1, False),
    ]
    for aligned in (False, True):
        for scale, ratio in ((1.0, -1), (0.25, 2), (1 / 8, 0)):
            rois = random_rois(g, 12, 2, 13, 11, scale)
            name = f"random_aligned={aligned}_scale={scale}_sr={ratio}"
            specs.append((name, "random", rois, (5, 4), scale, ratio, aligned))
    cases = [run_case(inputs, g, *spec) for spec in specs]
    versions = {
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "script": "tests/reference/make_roi_align_refs.py",
    }
    torch.save({"versions": versions, "inputs": inputs, "cases": cases}, OUT)
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
