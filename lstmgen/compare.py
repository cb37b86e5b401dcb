"""Comparing kernel outputs with the float64 reference.

An element passes when |actual - expected| <= tolerance * scale, where scale is the largest
|expected| of that output: errors of a dot product are relative to the size of its terms,
not of its (possibly cancelled) result, so the output's scale is the honest yardstick.

For a gradient that sums products with the gate gradients, the caller may also pass the
root-sum-square of each element's terms (lstmgen.reference.gradient_term_sizes); then the
larger of the two scales, each a maximum over the whole output, counts, in every dtype.
With rounded terms (float16 keeps the gates, the cell states and dG in 16 bits) the error
of a sum grows like u times that size, and a small output (one dx, say, at B = T = I = 1)
can cancel far below it: the GPU tier drew dx = 0.0070 from terms of root-sum-square 0.083
in float16, and got it 1.9e-4 off.

Why these tolerances (u = unit roundoff): the longest sums are the recurrence's dot products
over H <= 1024 terms and the weight-gradient GEMMs over T*B rows; their worst-case error is
about n*u relative to the terms' scale, and with random signs about sqrt(n)*u.
  float32: u = 6e-8, 1024*u = 6e-5 -> 1e-4. A wrong gate, sign or step moves outputs by O(1).
  float64: u = 1.1e-16, even 1e5*u = 1e-11 -> 1e-9 leaves two orders of margin.
  float16: u = 4.9e-4, and unlike the others every step stores h, the gates, the cell
    cache and dG in 16 bits, so each step adds a few u on top of the float32 sums:
    2e-2 is ten such roundings of margin; a wrong kernel is still off by O(1).
  bfloat16: u = 3.9e-3 (8x float16's), rounded at the same points, so errors of a few u:
    on the H200 the worst of 43 random examples was 2.6u (dW_hh). 1e-1 (26u) keeps 10x
    margin; float16's 41u (1.6e-1) would miss some wrong gates: swapping i and f, both
    near sigmoid(0) = 0.5, moves y by as little as 6e-2 of its scale.
  tf32 (float32 layers whose recurrence runs on tensor cores in TF32): float32 storage, but
    the recurrence's products round both inputs to a 10-bit mantissa (u = 4.9e-4): each
    step's sums are off by about 2u of their terms' root-sum-square, and the steps compound
    a few of those; 1e-2 is ten such errors of margin, still far below a wrong gate's O(1).

Below that sits an absolute floor, tiny/eps of the dtype (1e-31 for float32): gradients
that vanish over a long sequence pass through the subnormal range, where float32 keeps
less than its 24 bits and finally flushes to 0 what float64 still resolves (the GPU tier
drew dh0 ~ 1e-58 at T = 262). Differences that small are underflow, not a wrong kernel.
float16's tiny/eps (0.06) would swallow real errors, so its floor is tiny itself (6e-5), the
edge of its normal range, below which it keeps fewer bits. bfloat16 has float32's exponent,
so it underflows where float32 does and takes float32's kind of floor (its tiny/eps, 1.5e-36).
It needs no floor near its eps: every value above 1e-38 keeps its 8 bits, so its rounding is
relative and the tolerance covers it, and an absolute floor of 1e-3 or so would pass a
completely wrong gradient whose whole scale is that small.
"""

from __future__ import annotations

import numpy as np

from lstmgen.dtypes import finfo

TOLERANCES = {"float64": 1e-9, "float32": 1e-4, "tf32": 1e-2, "float16": 2e-2, "bfloat16": 1e-1}
# Tolerance keys that are not storage dtypes: the dtype whose range they have.
_STORAGE = {"tf32": "float32"}
_SHOWN = 5


def mismatches(name: str, actual, expected, precision: str, term_sizes=None) -> list[str]:
    """Lines describing the first few elements of `actual` outside tolerance (none: it passed)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return [f"{name}: shape {actual.shape}, expected {expected.shape}"]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if term_sizes is not None and expected.size:
        scale = max(scale, float(np.max(term_sizes)))
    floor = underflow_floor(precision)
    bound = max(TOLERANCES[precision] * scale, floor)
    error = np.abs(actual - expected)
    bad = ~(error <= bound)  # NaN (an unwritten, poisoned element) fails too
    if not bad.any():
        return []
    lines = [f"{name}: {int(bad.sum())} of {bad.size} elements off by more than {bound:.3g} "
             f"({precision} tolerance {TOLERANCES[precision]:g} x scale {scale:.3g}, floor {floor:.3g})"]
    for index in np.argwhere(bad)[:_SHOWN]:
        index = tuple(int(i) for i in index)
        lines.append(f"  at {index}: expected {expected[index]:.10g}, got {actual[index]:.10g}")
    return lines


def tolerance_key(dtype: str, mma_type: str) -> str:
    """The TOLERANCES key of a layer's kernels (its plan's mma_type): its dtype, or "tf32"
    where its float32 products run in TF32. A layer that allows TF32 but is too wide for its
    fragments runs strict float32 and is held to float32's tolerance, as is strict float32
    that runs as three TF32 products ("tf32x3")."""
    return "tf32" if mma_type == "tf32" else dtype


def underflow_floor(precision: str) -> float:
    """The absolute difference that is underflow, not a wrong kernel (see the module docstring)."""
    info = finfo(_STORAGE.get(precision, precision))
    # float16's 5-bit exponent puts tiny/eps (0.06) among real outputs; with float32's 8 bits
    # or more (bfloat16 has them) tiny/eps lies far below any output that matters.
    return float(info.tiny if info.nexp < 8 else info.tiny / info.eps)
