"""The stepwise recurrence, which large batches run (Plan.stepwise_from_batch, and for
the backward Plan.stepwise_backward_from_batch): a step's
product is one cuBLAS GEMM over the whole batch, and a generated cell kernel
(templates/cell.cu.j2) applies the cell to it.

At large batches the persistent kernels' step is bound by every block reading all of h_{t-1}
from L2 and by products tiled for few rows; cuBLAS tiles [B, H] x [H, 4H] for the whole GPU
(float64 on DMMA). Its price is two launches a step, whose CPU time (about 17 us a step on
the H200) would be longer than the step itself: a loop called again on the same buffers is
replayed as a CUDA graph (runtime/replay.py), and a layer left to choose ("auto") runs the
stepwise recurrence only then. The GEMMs' products are in the accumulation
type, as the persistent kernels' are; TF32 where the layer's plan runs TF32 (runtime/gemm.py),
and as three TF32 products for strict float32 (below).

Strict float32 on a GPU with TF32 (Plan.tf32x3_gemms) runs a forward step's GEMM as three
TF32 products (runtime/tf32_split.py), h_hi W_hi, h_lo W_hi and h_hi W_lo: one batched GEMM
over W_hh split once a call, [hi | hi | lo] [4H, 3H], and h_{t-1} split by the previous
step's cell kernel, [hi | lo | hi] [B, 3H]; the cell kernel sums the three in float32. On the
H200 the forward took 0.78-0.97 of its time on FFMA from B = 64 to 256 at H = 512 and 1024,
with errors at FFMA's (bench/NOTES.md v20). Its backward (inner dimension 4H), and older
GPUs, keep FFMA: the backward as three TF32 products took 1.06-1.26 of FFMA's time at B = 32
to 128, H = 512 and 1024 (bench/NOTES.md v22).

float64's forward up to Plan.dmma_step_until_batch rows (batch x H^2 = 4M) runs a step as
one generated kernel instead (templates/cell.cu.j2 lstm_forward_step): the product on the
FP64 tensor cores and the cell on it, which saves the cell kernel's launch and the products'
trip through L2: 0.86-0.92 of the GEMM and cell kernel's time forward at 4M on the H200,
0.73-0.85 at 1-2M (bench/NOTES.md v22). Its blocks read W_hh from L2 for 16 rows each, so
past that cuBLAS's larger tiles win.

A backward step's GEMM (inner dimension 4H) runs in parts of 4H, summed by the next step's
cell kernel likewise, where that was faster on the H200 (_backward_k_parts).

cuBLAS is column-major: a row-major [rows, cols] matrix is its column-major transpose, so
the row-major R = h W_hh^T ([B, 4H]) is the column-major R^T = W_hh h^T, with W_hh read
as stored ([4H, H] row-major, op T of the column-major [H, 4H]).
"""

from __future__ import annotations

import ctypes

from lstmgen.codegen import DTYPES, LSTMSpec
from lstmgen.runtime import replay, tf32_split
from lstmgen.runtime.buffers import new_buffer
from lstmgen.runtime.compile import load_cell_kernels
from lstmgen.runtime.gemm import Gemms

_CELL_THREADS = 256
# A 3xTF32 step's products, which the cell kernel sums (the module's docstring).
_SPLIT_PARTS = 3


def _splits_step(spec: LSTMSpec) -> bool:
    """Whether a forward step's GEMM runs as three TF32 products (runtime/tf32_split.py), as
    the plan its cell kernel was rendered for says: that kernel then splits h_t."""
    return load_cell_kernels(spec).plan.tf32x3_gemms


def _backward_k_parts(spec: LSTMSpec, gemm: Gemms) -> int:
    """Parts of 4H in which a backward step's GEMM, dG_t W_hh, runs: one batched GEMM of
    shorter products, which the next step's cell kernel sums. Its output is only H x B
    against an inner dimension of 4H, so that whole it leaves most of the GPU idle. On the
    H200 (bench/NOTES.md v21) a training step took 0.87-0.99 of its time in 4 parts (float64,
    16 bits) and 0.91-0.97 in 8 (TF32; in 4, up to 1.02), at H = 256 to 1024 and B = 32 to
    256; strict float32's cuBLAS FFMA kernels took 1.01-1.43 of it in 2 and 4 parts and
    0.96-1.00 in 8, and run it whole. Measured on the H200 only, at H a multiple of 256."""
    if spec.dtype == "float32" and not gemm.runs_tf32:
        return 1
    parts = 8 if gemm.runs_tf32 else 4
    return parts if 4 * spec.hidden_size % parts == 0 else 4


class _StepLaunches:
    """One step's kernel, launched at every step with the same arguments but the step's: they
    are packed once (ctypes), so that a launch is one driver call, where a CuPy RawKernel
    call converts every argument again (bench/NOTES.md v8)."""

    def __init__(self, kernel, arguments: list, grid: tuple[int, int], threads: int):
        self._function = kernel.kernel.ptr
        self._grid = grid
        self._threads = threads
        self._arguments = arguments  # alive as long as the addresses of their values are launched
        self._addresses = (ctypes.c_void_p * len(arguments))(*map(ctypes.addressof, arguments))
        self.values = tuple(argument.value for argument in arguments)

    def __call__(self, stream) -> None:
        from cupy.cuda import driver

        driver.launchKernel(self._function, *self._grid, 1, self._threads, 1, 1, 0, stream.ptr,
                            ctypes.addressof(self._addresses), 0)


def _cell_launch(batch: int, hidden: int) -> dict:
    """A cell kernel's launch: a thread per (row, unit)."""
    return dict(grid=(-(-batch * hidden // _CELL_THREADS), 1), threads=_CELL_THREADS)


def _address(array) -> int | None:
    return None if array is None else array.data.ptr


def _pointer(array) -> ctypes.c_uint64:
    """A device address as a kernel argument (0 for an absent optional tensor)."""
    return ctypes.c_uint64(_address(array) or 0)


def _runs_dmma_step(spec: LSTMSpec, batch: int) -> bool:
    """Whether the forward of `batch` rows runs float64's one-kernel step (Plan.dmma_step_until_batch)."""
    return batch <= load_cell_kernels(spec).plan.dmma_step_until_batch


def forward(spec: LSTMSpec, gemm: Gemms, w_hh, gx, bias, h0, c0, h_buf, h_last, c_last, cell, training: bool, c_cache,
            advice: str, replays_only: bool = False) -> bool:
    """Every step of the forward recurrence, into the buffers the persistent kernel fills,
    with the layer's GEMMs; with `replays_only`, only where the loop is replayed
    (runtime/replay.py). Returns whether it ran."""
    steps, batch = gx.shape[:2]
    hidden = spec.hidden_size
    if _runs_dmma_step(spec, batch):
        return _forward_dmma(spec, w_hh, gx, bias, h0, c0, h_buf, h_last, c_last, cell, training, c_cache,
                             replays_only)
    split = _splits_step(spec)
    parts = _SPLIT_PARTS if split else 1
    recurrent = new_buffer((parts, batch, 4 * hidden), DTYPES[spec.dtype]["accumulate_dtype"],
                           "one step's recurrent products h W_hh^T", advice)
    # 3xTF32: W_hh and h_{t-1} as TF32 halves, [4H, 3H] and [B, 3H]; the cell kernel writes h_t's.
    w_tripled = new_buffer((4 * hidden, 3 * hidden), "float32", "W_hh as TF32 halves", advice) if split else None
    h_tripled = new_buffer((batch, 3 * hidden), "float32", "h_t as TF32 halves", advice) if split else None
    step, products = ctypes.c_int32(0), ctypes.c_uint64(0)
    cell_step = _StepLaunches(load_cell_kernels(spec).forward, [
        _pointer(gx), _pointer(bias), products, ctypes.c_int32(parts), _pointer(c0), _pointer(h_buf),
        ctypes.c_int32(h_buf.shape[0]), _pointer(h_tripled), _pointer(h_last), _pointer(c_last), _pointer(cell),
        ctypes.c_int32(training), _pointer(c_cache), step, ctypes.c_int32(steps), ctypes.c_int32(batch)],
        **_cell_launch(batch, hidden))
    slot_bytes = batch * hidden * h_buf.itemsize

    if split:
        tf32_split.prepare()

    def issue(stream) -> None:
        if split:
            with stream:
                tf32_split.split_rows(w_hh, w_tripled, "hhl")
                if h0 is not None:
                    tf32_split.split_rows(h0, h_tripled, "hlh")
        for t in range(steps):
            if t > 0:
                h_prev = h_buf.data.ptr + (t - 1) % h_buf.shape[0] * slot_bytes
            else:
                h_prev = _address(h0)
            if h_prev is not None and split:
                gemm(True, 4 * hidden, batch, 3 * hidden, w_tripled.data.ptr, 3 * hidden, h_tripled.data.ptr,
                     3 * hidden, recurrent.data.ptr, 4 * hidden, gemm.accumulate_type, k_parts=parts, tf32=True)
            elif h_prev is not None:
                gemm(True, 4 * hidden, batch, hidden, w_hh.data.ptr, hidden, h_prev, hidden,
                     recurrent.data.ptr, 4 * hidden, gemm.accumulate_type)
            products.value = 0 if h_prev is None else recurrent.data.ptr
            step.value = t
            cell_step(stream)

    key = ("stepwise forward", spec, *cell_step.values, w_hh.data.ptr, _address(h0), recurrent.data.ptr,
           _address(w_tripled))
    return replay.run(key, gemm.bind, issue, replays_only)


def _forward_dmma(spec: LSTMSpec, w_hh, gx, bias, h0, c0, h_buf, h_last, c_last, cell, training: bool, c_cache,
                  replays_only: bool) -> bool:
    """forward() with float64's one-kernel step: a block a tile of rows x units (Plan.dmma_step)."""
    steps, batch = gx.shape[:2]
    hidden = spec.hidden_size
    kernels = load_cell_kernels(spec)
    block = kernels.plan.dmma_step
    step, h_prev = ctypes.c_int32(0), ctypes.c_uint64(0)
    step_launch = _StepLaunches(kernels.forward_dmma_step, [
        _pointer(gx), _pointer(bias), _pointer(w_hh), h_prev, _pointer(c0), _pointer(h_buf),
        ctypes.c_int32(h_buf.shape[0]), _pointer(h_last), _pointer(c_last), _pointer(cell), ctypes.c_int32(training),
        _pointer(c_cache), step, ctypes.c_int32(steps), ctypes.c_int32(batch)],
        grid=(hidden // block.units, -(-batch // block.rows)), threads=block.threads)
    slot_bytes = batch * hidden * h_buf.itemsize

    def issue(stream) -> None:
        for t in range(steps):
            h_prev.value = h_buf.data.ptr + (t - 1) % h_buf.shape[0] * slot_bytes if t > 0 else _address(h0) or 0
            step.value = t
            step_launch(stream)

    # The packed values hold W_hh's address; h0's is h_prev's only at t = 0, after packing.
    key = ("stepwise forward", spec, "DMMA", *step_launch.values, _address(h0))
    return replay.run(key, lambda stream: None, issue, replays_only)


def backward(spec: LSTMSpec, gemm: Gemms, w_hh, gates, c_seq, c0, dy, dh_T, dc_T, dh0, dc0, d_cell, advice: str,
             replays_only: bool = False) -> bool:
    """Every step of the backward recurrence: dG over the gates, dh0, dc0; `replays_only`
    and the result as forward's."""
    steps, batch = gates.shape[:2]
    hidden = spec.hidden_size
    parts = _backward_k_parts(spec, gemm)
    recurrent = new_buffer((parts, batch, hidden), DTYPES[spec.dtype]["accumulate_dtype"],
                           "one step's recurrent gradients dG W_hh", advice)
    step, products = ctypes.c_int32(0), ctypes.c_uint64(0)
    cell_step = _StepLaunches(load_cell_kernels(spec).backward, [
        _pointer(gates), _pointer(c_seq), _pointer(c0), _pointer(dy), _pointer(dh_T), _pointer(dc_T), products,
        ctypes.c_int32(parts), _pointer(dc0), _pointer(d_cell), step, ctypes.c_int32(steps), ctypes.c_int32(batch)],
        **_cell_launch(batch, hidden))
    gate_bytes = batch * 4 * hidden * gates.itemsize

    def issue(stream) -> None:
        for t in range(steps - 1, -1, -1):
            products.value = 0 if t + 1 == steps else recurrent.data.ptr
            step.value = t
            cell_step(stream)
            # dL/dh_{t-1} = dG[t] W_hh: column-major [H, B] = W_hh^T (as stored) dG[t]^T; at t = 0 it is
            # dh0, whole, which no cell kernel sums.
            out, out_type, k_parts = (recurrent, gemm.accumulate_type, parts) if t > 0 else (dh0, gemm.storage_type, 1)
            gemm(False, hidden, batch, 4 * hidden, w_hh.data.ptr, hidden, gates.data.ptr + t * gate_bytes,
                 4 * hidden, out.data.ptr, hidden, out_type, k_parts=k_parts)

    key = ("stepwise backward", spec, *cell_step.values, w_hh.data.ptr, recurrent.data.ptr, dh0.data.ptr)
    return replay.run(key, gemm.bind, issue, replays_only)
