"""Strict float32 GEMMs as three TF32 products ("3xTF32") on cuBLAS's tensor cores, where the
layer's plan says so (Plan.tf32x3_gemms): the input projection here, and the stepwise
forward's step GEMM (runtime/stepwise.py).

A float32 x splits into x_hi, x rounded to TF32 (cvt.rna, 11 significant bits, as the
recurrence kernels' fragments do: templates/_mma.j2), and x_lo = x - x_hi, which float32
holds exactly. Then a b = a_hi b_hi + a_lo b_hi + a_hi b_lo + a_lo b_lo, and the last term,
about 2^-22 of a b, is dropped. Each of the three others is a TF32 GEMM of its own: summed
in one GEMM over an inner dimension three times as long, the small terms went into the
tensor cores' accumulator of the large ones, and y came 1e-5 of its scale off float64 at
H = 1024, ten times FFMA's error; as separate products summed in float32 (by cuBLAS's
epilogue, beta = 1, or by the cell kernel), they stayed at FFMA's (bench/NOTES.md v20).

The operands are split along their rows into halves, [hi | lo] or tripled as the step's
batched GEMM reads them ([hi | lo | hi] for h, [hi | hi | lo] for W_hh): `split_rows`.
The projection splits x a chunk of rows at a time, so that its scratch stays small whatever
T*B, and a chunk's Gx, which its three GEMMs write in turn, stays in L2.
"""

from __future__ import annotations

import functools

from lstmgen.runtime.buffers import new_buffer

# Elements of one chunk of Gx rows (4H a row): 8 MiB, which the chunk's three GEMMs write and
# read back in turn from the H200's 50 MB of L2, and thousands of rows, whose tiles fill the GPU.
_CHUNK_GATE_ELEMENTS = 2 * 2**20
# Rows of x from which the projection runs 3xTF32 (bench/NOTES.md v20).
_SPLIT_FROM_ROWS = 1


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
        out = (low_parts >> (column / inner)) & 1 ? value - __uint_as_float(high) : __uint_as_float(high);
        """,
        "lstmgen_tf32_split")


def split_rows(source, out, pattern: str) -> None:
    """out [rows, len(pattern) * K] = source [rows, K] (both C-contiguous float32) split along
    each row into TF32 halves in the order of `pattern`, "h" for hi and "l" for lo (e.g.
    "hlh"), on the current stream."""
    import numpy as np

    low_parts = sum(1 << part for part, half in enumerate(pattern) if half == "l")
    _split_kernel()(source, np.int32(source.shape[1]), np.int32(len(pattern)), np.int32(low_parts), out)


def splits_projection(rows: int) -> bool:
    """Whether a projection of `rows` rows of x runs 3xTF32 (where the plan allows it)."""
    return rows >= _SPLIT_FROM_ROWS


class Projection:
    """Gx = x W_ih^T as 3xTF32, with its scratch: W_ih [4H, 2I] and a chunk of x's rows
    [rows, 2I] as halves [hi | lo]. Allocated outside any capture, whose graph keeps their
    addresses (`addresses`)."""

    def __init__(self, rows: int, inputs: int, gates: int, advice: str):
        self._chunk_rows = max(1, min(rows, _CHUNK_GATE_ELEMENTS // gates))
        self._weights = new_buffer((gates, 2 * inputs), "float32", "W_ih as TF32 halves (3xTF32)", advice)
        self._rows = new_buffer((self._chunk_rows, 2 * inputs), "float32", "x rows as TF32 halves (3xTF32)", advice)
        self.addresses = (self._weights.data.ptr, self._rows.data.ptr)

    def __call__(self, gemms, x_rows, w_ih, gx_rows) -> None:
        """gx_rows [rows, 4H] = x_rows [rows, I] w_ih^T (all C-contiguous), on the current
        stream, to which the GEMMs' handle is bound."""
        gates, inputs = w_ih.shape
        split_rows(w_ih, self._weights, "hl")
        element = self._rows.itemsize
        for start in range(0, x_rows.shape[0], self._chunk_rows):
            rows = min(self._chunk_rows, x_rows.shape[0] - start)
            split_rows(x_rows[start:start + rows], self._rows[:rows], "hl")
            gx = gx_rows[start:start + rows]
            # Column-major gx^T [4H, rows] = W_ih (op T of [I, 4H] columns of 2I) x^T ([I, rows]
            # columns of 2I): a_hi b_hi, then a_lo b_hi and a_hi b_lo added to it.
            for x_half, w_half in ((0, 0), (1, 0), (0, 1)):
                gemms(True, gates, rows, inputs, self._weights.data.ptr + w_half * inputs * element, 2 * inputs,
                      self._rows.data.ptr + x_half * inputs * element, 2 * inputs, gx.data.ptr, gates,
                      gemms.accumulate_type, tf32=True, accumulate=(x_half, w_half) != (0, 0))
