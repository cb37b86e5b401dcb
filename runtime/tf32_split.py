"""Operands of strict float32 GEMMs run as three TF32 products ("3xTF32") on cuBLAS's tensor
cores, where the layer's plan says so (Plan.tf32x3_gemms): the stepwise forward's step
(runtime/stepwise.py).

A float32 x splits into x_hi, x rounded to TF32 (cvt.rna, 11 significant bits, as the
recurrence kernels' fragments do: templates/_mma.j2), and x_lo = x - x_hi, which float32
holds exactly. Then a b = a_hi b_hi + a_lo b_hi + a_hi b_lo + a_lo b_lo, and the last term,
about 2^-22 of a b, is dropped. Each of the three others is a product of its own, summed in
float32 by the cell kernel: summed in one GEMM over an inner dimension three times as long,
the small terms went into the tensor cores' accumulator of the large ones, and y came 2.2 to
2.6 times further off float64 (bench/NOTES.md v20).

x_lo is stored in float32 and cuBLAS converts it to TF32 as it multiplies: x_lo has at most 13
significant bits, of which TF32 keeps 11, so what that drops is within 2^-22 of x too.

The input projection keeps FFMA: as three GEMMs summed by cuBLAS's epilogue (beta = 1) it was
no faster below H = 1024, and its larger sums left y twice FFMA's error (v20).
"""

from __future__ import annotations

import functools


def prepare() -> None:
    """Compile and load the split kernel on the current GPU by one launch: a first launch
    inside a CUDA graph capture (the stepwise loop's, runtime/replay.py) would do it there."""
    import cupy

    _prepare_on(cupy.cuda.runtime.getDevice())


@functools.cache
def _prepare_on(device_id: int) -> None:
    import cupy

    split_rows(cupy.zeros((1, 1), dtype=cupy.float32), cupy.empty((1, 3), dtype=cupy.float32), "hlh")


@functools.cache
def _split_kernel():
    """out [rows, parts * K] from source [rows, K]: part j of a row is source's row rounded to
    TF32, or where bit j of low_parts is set, what that rounding left of it."""
    import cupy

    return cupy.ElementwiseKernel(
        "raw float32 source, int32 inner, int32 parts, int32 low_parts", "float32 out",
        """
        const long long row = i / ((long long)parts * inner), column = i % ((long long)parts * inner);
        const float value = source[row * inner + column % inner];
        unsigned high;
        asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(high) : "f"(value));
        out = ((low_parts >> (column / inner)) & 1) ? value - __uint_as_float(high) : __uint_as_float(high);
        """,
        "lstmgen_tf32_split")


def split_rows(source, out, pattern: str) -> None:
    """out [rows, len(pattern) * K] = source [rows, K] (both C-contiguous float32) split along
    each row into TF32 halves in the order of `pattern`, "h" for hi and "l" for lo: "hlh" for
    the left operand of a step's three products and "hhl" for the right, so that part j of
    one times part j of the other is h_hi W_hi, h_lo W_hi and h_hi W_lo. On the current stream."""
    import numpy as np

    rows, inner = source.shape
    assert out.shape == (rows, len(pattern) * inner) and source.dtype == out.dtype == np.float32, "halves of each row"
    assert source.flags.c_contiguous and out.flags.c_contiguous, "rows read and written whole"
    low_parts = sum(1 << part for part, half in enumerate(pattern) if half == "l")
    _split_kernel()(source, np.int32(inner), np.int32(len(pattern)), np.int32(low_parts), out)
