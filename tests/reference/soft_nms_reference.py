"""A line-by-line Python port of the Soft-NMS reference, used as a test oracle.

Source: ``cpu_soft_nms`` in ``lib/nms/cpu_nms.pyx`` of bharatsingh430/soft-nms
(Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code",
ICCV 2017, MIT licence). The Cython original works in place on an (N, 5) float32
array ``[x1, y1, x2, y2, score]``: step ``i`` swaps the current maximum into row
``i``, then rescales (or drops, by swapping with the last live row) every later
row. It returns the row numbers ``0..N'-1`` of that *permuted* array; this port
carries each row's original index along the swaps and returns those instead,
together with the rescored scores.

Faithfully kept, because our op is tested against them:

* arithmetic in float32 (``cdef float``), thresholds and sigma rounded to float32
  (they are ``float`` parameters), ``exp`` evaluated by ``np.exp`` in double and
  rounded back to float32 when stored in ``cdef float weight``;
* overlap only when ``iw > 0`` and ``ih > 0``; ``ov > Nt`` strict; a box is dropped
  when ``score < threshold`` (kept when equal);
* the maximum is found with a strict ``maxscore < score``, so among equal scores
  the first row in the current (permuted) order wins;
* the first pick of each step is never tested against ``threshold`` (its score
  was tested when it was rescored, except for the very first pick);
* ``for i in range(N)`` evaluates ``N`` once, as Cython does; steps past the
  shrunken ``N`` do nothing.

One option is added: ``legacy_pixel`` (default False) switches on the
reference's ``+ 1`` in widths and heights. The package uses continuous
coordinates (no ``+ 1``), so the tests compare against ``legacy_pixel=False``.

Pure Python and NumPy (no torch), so it is obviously independent of the package.
"""

import numpy as np

METHODS = {"hard": 0, "linear": 1, "gaussian": 2}  # the reference's method numbers


def _max(a, b):  # the reference's inline max / min
    return a if a >= b else b


def _min(a, b):
    return a if a <= b else b


def cpu_soft_nms(boxes, scores, sigma=0.5, Nt=0.3, threshold=0.001, method="linear",
                 legacy_pixel=False, dtype=np.float32):
    """Run the reference Soft-NMS.

    Args:
        boxes: (N, 4) array-like, xyxy.
        scores: (N,) array-like.
        sigma, Nt, threshold: as in the reference (Gaussian sigma, IoU threshold,
            score threshold).
        method: "linear" (1), "gaussian" (2) or "hard" (0, original NMS).
        legacy_pixel: measure widths as ``x2 - x1 + 1`` like the reference.
        dtype: the float type of the arithmetic; np.float32 is the reference's.

    Returns:
        ``(keep, rescored)``: original indices in the order picked, and their
        scores after decay.
    """
    method = METHODS[method]
    f = dtype
    one = f(1) if legacy_pixel else f(0)
    rows = [[f(v) for v in box] + [f(s)] for box, s in zip(np.asarray(boxes), np.asarray(scores))]
    index = list(range(len(rows)))
    sigma, Nt, threshold = f(sigma), f(Nt), f(threshold)
    N = len(rows)

    def swap(a, b):
        rows[a], rows[b] = rows[b], rows[a]
        index[a], index[b] = index[b], index[a]

    for i in range(N):  # N is read once here; it shrinks below
        maxscore = rows[i][4]
        maxpos = i
        pos = i + 1
        while pos < N:  # get max box
            if maxscore < rows[pos][4]:
                maxscore = rows[pos][4]
                maxpos = pos
            pos = pos + 1
        swap(i, maxpos)  # add max box as a detection (a no-op once i >= N)
        tx1, ty1, tx2, ty2, _ = rows[i]
        pos = i + 1
        while pos < N:  # NMS iterations; N shrinks as boxes fall below threshold
            x1, y1, x2, y2, _ = rows[pos]
            area = (x2 - x1 + one) * (y2 - y1 + one)
            iw = _min(tx2, x2) - _max(tx1, x1) + one
            if iw > 0:
                ih = _min(ty2, y2) - _max(ty1, y1) + one
                if ih > 0:
                    ua = f((tx2 - tx1 + one) * (ty2 - ty1 + one) + area - iw * ih)
                    ov = iw * ih / ua  # IoU between max box and detection box
                    if method == 1:  # linear
                        weight = f(1) - ov if ov > Nt else f(1)
                    elif method == 2:  # gaussian
                        weight = f(np.exp(float(-(ov * ov) / sigma)))
                    else:  # original NMS
                        weight = f(0) if ov > Nt else f(1)
                    rows[pos][4] = weight * rows[pos][4]
            if rows[pos][4] < threshold:  # discard by swapping with the last box
                rows[pos] = list(rows[N - 1])
                index[pos] = index[N - 1]
                N = N - 1
                pos = pos - 1
            pos = pos + 1

    keep = [index[k] for k in range(N)]
    rescored = [float(rows[k][4]) for k in range(N)]
    return keep, rescored
