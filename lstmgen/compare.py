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

Below that sits an absolute floor, tiny/eps of the dtype (1e-31 for float32): gradients
that vanish over a long sequence pass through the subnormal range, where float32 keeps
less than its 24 bits and finally flushes to 0 what float64 still resolves (the GPU tier
drew dh0 ~ 1e-58 at T = 262). Differences that small are underflow, not a wrong kernel.
float16's tiny/eps (0.06) would swallow real errors, so its floor is tiny itself (6e-5), the
edge of its normal range, below which it keeps fewer bits.
"""

from __future__ import annotations

import numpy as np

TOLERANCES = {"float64": 1e-9, "float32": 1e-4, "float16": 2e-2}
_SHOWN = 5


def mismatches(name: str, actual, expected, dtype: str, term_sizes=None) -> list[str]:
    """Lines describing the first few elements of `actual` outside tolerance (none: it passed)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return [f"{name}: shape {actual.shape}, expected {expected.shape}"]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if term_sizes is not None and expected.size:
        scale = max(scale, float(np.max(term_sizes)))
    finfo = np.finfo(dtype)
    floor = float(finfo.tiny if finfo.bits == 16 else finfo.tiny / finfo.eps)
    bound = max(TOLERANCES[dtype] * scale, floor)
    error = np.abs(actual - expected)
    bad = ~(error <= bound)  # NaN (an unwritten, poisoned element) fails too
    if not bad.any():
        return []
    lines = [f"{name}: {int(bad.sum())} of {bad.size} elements off by more than {bound:.3g} "
             f"({dtype} tolerance {TOLERANCES[dtype]:g} x scale {scale:.3g}, floor {floor:.3g})"]
    for index in np.argwhere(bad)[:_SHOWN]:
        index = tuple(int(i) for i in index)
        lines.append(f"  at {index}: expected {expected[index]:.10g}, got {actual[index]:.10g}")
    return lines
