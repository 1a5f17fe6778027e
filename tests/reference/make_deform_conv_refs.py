"""Freeze torchvision's ``deform_conv2d`` (output and all five gradients) in float64.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_deform_conv_refs.py   # writes tests/fixtures/deform_conv_refs.pt

Each case stores its tensors (input, offset, weight, optional bias and mask), the
call's stride/padding/dilation, a random upstream gradient, torchvision's output
and the gradients it gives input, offset, mask, weight and bias. The cases cover
stride, padding, dilation, offset groups > 1, weight groups > 1, with and without
mask and bias, non-square kernels, large offsets that push samples off the map,
and integer offsets (samples exactly on pixels and on the y = -1 / y = H borders,
where the bilinear gradient is a one-sided difference). It also records which
exception type torchvision raises for each malformed call (``errors``).
"""

import os
import platform

import torch
import torchvision
from torchvision.ops import deform_conv2d

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "deform_conv_refs.pt")


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def make_case(g, name, B, C, H, W, C_out, kernel, stride=1, padding=0, dilation=1,
              groups=1, offset_groups=1, use_mask=True, use_bias=True, offset_scale=1.0,
              integer_offsets=False):
    kh, kw = kernel
    st, pd, dl = ((v, v) if isinstance(v, int) else v for v in (stride, padding, dilation))
    OH, OW = out_size(H, kh, st[0], pd[0], dl[0]), out_size(W, kw, st[1], pd[1], dl[1])
    K = kh * kw
    f64 = dict(generator=g, dtype=torch.float64)
    tensors = {
        "input": torch.randn(B, C, H, W, **f64),
        "weight": torch.randn(C_out, C // groups, kh, kw, **f64),
    }
    if integer_offsets:
        offset = torch.randint(-3, 4, (B, 2 * offset_groups * K, OH, OW), generator=g).double()
    else:
        offset = torch.randn(B, 2 * offset_groups * K, OH, OW, **f64) * offset_scale
    tensors["offset"] = offset
    if use_mask:
        tensors["mask"] = torch.rand(B, offset_groups * K, OH, OW, **f64)
    if use_bias:
        tensors["bias"] = torch.randn(C_out, **f64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    out = deform_conv2d(leaves["input"], leaves["offset"], leaves["weight"], leaves.get("bias"),
                        stride=st, padding=pd, dilation=dl, mask=leaves.get("mask"))
    grad_output = torch.randn(out.shape, **f64)
    out.backward(grad_output)
    return {
        "name": name, "stride": list(st), "padding": list(pd), "dilation": list(dl),
        "tensors": tensors, "grad_output": grad_output, "output": out.detach(),
        "grads": {k: v.grad for k, v in leaves.items()},
    }


def error_cases():
    """(name, kwargs) of malformed calls; torchvision's exception type is recorded."""
    x, w = torch.randn(1, 4, 6, 6), torch.randn(2, 4, 3, 3)
    off = torch.randn(1, 18, 4, 4)
    return [
        ("input_3d", dict(input=x[0], offset=off, weight=w)),
        ("offset_channels_not_multiple", dict(input=x, offset=torch.randn(1, 7, 4, 4), weight=w)),
        ("offset_channels_zero", dict(input=x, offset=torch.randn(1, 0, 4, 4), weight=w)),
        ("offset_wrong_spatial", dict(input=x, offset=torch.randn(1, 18, 5, 4), weight=w)),
        ("offset_wrong_batch", dict(input=x, offset=torch.randn(2, 18, 4, 4), weight=w)),
        ("weight_channels_mismatch", dict(input=x, offset=off, weight=torch.randn(2, 3, 3, 3))),
        ("mask_wrong_channels", dict(input=x, offset=off, weight=w, mask=torch.randn(1, 8, 4, 4))),
        ("kernel_larger_than_input", dict(input=x, offset=torch.randn(1, 98, 0, 0),
                                          weight=torch.randn(2, 4, 7, 7))),
        ("offset_groups_do_not_divide_channels",
         dict(input=torch.randn(1, 4, 6, 6), offset=torch.randn(1, 54, 4, 4), weight=w)),
    ]


def main():
    g = torch.Generator().manual_seed(20261201)
    specs = [
        ("plain_3x3", dict(B=2, C=3, H=7, W=6, C_out=4, kernel=(3, 3), padding=1)),
        ("no_mask_no_bias", dict(B=2, C=3, H=6, W=7, C_out=2, kernel=(3, 3), use_mask=False,
                                 use_bias=False)),
        ("mask_no_bias", dict(B=1, C=4, H=6, W=6, C_out=3, kernel=(3, 3), padding=1,
                              use_bias=False)),
        ("stride2_pad1", dict(B=2, C=2, H=9, W=8, C_out=3, kernel=(3, 3), stride=2, padding=1)),
        ("stride_pad_dil_asym", dict(B=1, C=2, H=11, W=10, C_out=2, kernel=(3, 3), stride=(2, 1),
                                     padding=(2, 1), dilation=(2, 3))),
        ("nonsquare_kernel_2x3", dict(B=2, C=3, H=6, W=7, C_out=2, kernel=(2, 3), padding=(1, 0))),
        ("nonsquare_kernel_1x3", dict(B=1, C=2, H=5, W=6, C_out=3, kernel=(1, 3), padding=(0, 1),
                                      use_mask=False)),
        ("offset_groups_2", dict(B=2, C=4, H=6, W=6, C_out=3, kernel=(3, 3), padding=1,
                                 offset_groups=2)),
        ("weight_groups_2", dict(B=2, C=4, H=6, W=5, C_out=6, kernel=(3, 3), padding=1, groups=2)),
        ("both_groups", dict(B=1, C=6, H=6, W=6, C_out=4, kernel=(3, 3), padding=1, groups=2,
                             offset_groups=3, use_bias=False)),
        ("depthwise", dict(B=1, C=3, H=5, W=6, C_out=3, kernel=(3, 3), padding=1, groups=3,
                           offset_groups=3)),
        ("off_the_map", dict(B=2, C=2, H=5, W=5, C_out=2, kernel=(3, 3), padding=1,
                             offset_scale=4.0)),
        ("integer_offsets", dict(B=2, C=2, H=5, W=6, C_out=2, kernel=(3, 3), padding=1,
                                 integer_offsets=True)),
        ("integer_offsets_no_mask", dict(B=1, C=3, H=4, W=4, C_out=2, kernel=(2, 2), padding=1,
                                         integer_offsets=True, use_mask=False)),
        ("kernel_1x1", dict(B=2, C=3, H=4, W=5, C_out=2, kernel=(1, 1), offset_scale=2.0)),
    ]
    cases = [make_case(g, name, **spec) for name, spec in specs]
    errors = []
    for name, kwargs in error_cases():
        try:
            deform_conv2d(**kwargs)
        except Exception as error:  # noqa: BLE001 -- we record which type it is
            errors.append({"name": name, "type": type(error).__name__,
                           "args": {k: v for k, v in kwargs.items()}})
        else:
            raise SystemExit(f"torchvision accepted the malformed call {name}")
    versions = {
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "script": "tests/reference/make_deform_conv_refs.py",
    }
    torch.save({"versions": versions, "cases": cases, "errors": errors}, OUT)
    print(f"wrote {len(cases)} cases, {len(errors)} error cases to {os.path.normpath(OUT)} "
          f"({os.path.getsize(OUT)} bytes)")
    for e in errors:
        print(f"  {e['name']}: {e['type']}")


if __name__ == "__main__":
    main()
