"""The stepwise recurrence, which large batches run (Plan.stepwise_from_batch): a step's
product is one cuBLAS GEMM over the whole batch, and a generated cell kernel
(templates/cell.cu.j2) applies the cell to it.

At large batches the persistent kernels' step is bound by every block reading all of h_{t-1}
from L2 and by products tiled for few rows; cuBLAS tiles [B, H] x [H, 4H] for the whole GPU
(float64 on DMMA). Its price is two launches a step, whose CPU time (about 17 us a step on
the H200) would be longer than the step itself: a loop called again on the same buffers is
replayed as a CUDA graph (runtime/replay.py), and a layer left to choose ("auto") runs the
stepwise recurrence only then. The GEMMs' products are in the accumulation
type, as the persistent kernels' are; TF32 only where the spec allows it.

cuBLAS is column-major: a row-major [rows, cols] matrix is its column-major transpose, so
the row-major R = h W_hh^T ([B, 4H]) is the column-major R^T = W_hh h^T, with W_hh read
as stored ([4H, H] row-major, op T of the column-major [H, 4H]).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from lstmgen.codegen import DTYPES, LSTMSpec
from lstmgen.runtime import replay
from lstmgen.runtime.buffers import new_buffer
from lstmgen.runtime.compile import load_cell_kernels, load_kernels

# cudaDataType_t (library_types.h) and cublasComputeType_t (cublas_api.h).
_CUDA_TYPES = {"float16": 2, "bfloat16": 14, "float32": 0, "float64": 1}
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70
_CELL_THREADS = 256


@functools.cache
def _gemm_ex():
    """cublasGemmEx itself, through ctypes: CuPy's wrapper binds the handle to CuPy's current
    stream on every call and refuses a capturing one, so it cannot be captured on a stream of
    our own. cuBLAS supports capture (with host pointer mode, alpha and beta are captured)."""
    from cuda.pathfinder import load_nvidia_dynamic_lib

    loaded = load_nvidia_dynamic_lib("cublas")  # the library CuPy uses, already loaded
    function = ctypes.CDLL(loaded.abs_path).cublasGemmEx
    pointer, value = ctypes.c_void_p, ctypes.c_int
    function.argtypes = [pointer, value, value, value, value, value, pointer, pointer, value, value, pointer, value,
                         value, pointer, pointer, value, value, value, value]
    function.restype = value
    return function


class _Gemms:
    """C = A B with the layer's types: storage inputs, outputs in the accumulation type
    (or storage), on CuPy's cuBLAS handle."""

    def __init__(self, spec: LSTMSpec):
        import cupy
        from cupy_backends.cuda.libs import cublas

        self._cublas = cublas
        self._gemm_ex = _gemm_ex()
        self.handle = cupy.cuda.device.get_cublas_handle()
        accumulate = DTYPES[spec.dtype]["accumulate_dtype"]
        self.storage_type = _CUDA_TYPES[spec.dtype]
        self.accumulate_type = _CUDA_TYPES[accumulate]
        # TF32 where the layer's persistent kernels use it too (allow_tf32, up to the width
        # whose fragments fit): the layer's tolerances follow its plan.
        tf32 = load_kernels(spec).plan.mma_type == "tf32"
        if accumulate == "float64":
            self.compute = _COMPUTE_64F
        else:
            self.compute = _COMPUTE_32F_FAST_TF32 if tf32 else _COMPUTE_32F
        # alpha = 1 and beta = 0 in the compute type, read from host memory during each call.
        self._scalars = np.array([1, 0], accumulate)
        self._alpha = self._scalars.ctypes.data
        self._beta = self._alpha + self._scalars.itemsize

    def bind(self, stream) -> None:
        """Issue the following GEMMs on `stream`."""
        self._cublas.setStream(self.handle, stream.ptr)
        self._cublas.setPointerMode(self.handle, self._cublas.CUBLAS_POINTER_MODE_HOST)

    def __call__(self, transpose_a: bool, m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int,
                 c: int, ldc: int, c_type: int) -> None:
        """Column-major C[m, n] = op(A) B, op(A) = A^T where transpose_a; device pointers."""
        cublas = self._cublas
        status = self._gemm_ex(self.handle, cublas.CUBLAS_OP_T if transpose_a else cublas.CUBLAS_OP_N,
                               cublas.CUBLAS_OP_N, m, n, k, self._alpha, a, self.storage_type, lda, b,
                               self.storage_type, ldb, self._beta, c, c_type, ldc, self.compute,
                               cublas.CUBLAS_GEMM_DEFAULT)
        cublas.check_status(status)


class _CellLaunches:
    """One cell kernel, launched at every step with the same arguments but the step's: they
    are packed once (ctypes), so that a launch is one driver call, where a CuPy RawKernel
    call converts every argument again (bench/NOTES.md v8)."""

    def __init__(self, kernel, batch: int, hidden: int, arguments: list):
        self._function = kernel.kernel.ptr
        self._grid = -(-batch * hidden // _CELL_THREADS)
        self._arguments = arguments  # alive as long as the addresses of their values are launched
        self._addresses = (ctypes.c_void_p * len(arguments))(*map(ctypes.addressof, arguments))
        self.values = tuple(argument.value for argument in arguments)

    def __call__(self, stream) -> None:
        from cupy.cuda import driver

        driver.launchKernel(self._function, self._grid, 1, 1, _CELL_THREADS, 1, 1, 0, stream.ptr,
                            ctypes.addressof(self._addresses), 0)


def _address(array) -> int | None:
    return None if array is None else array.data.ptr


def _pointer(array) -> ctypes.c_uint64:
    """A device address as a kernel argument (0 for an absent optional tensor)."""
    return ctypes.c_uint64(_address(array) or 0)


def _run(key: tuple, gemm: _Gemms, issue, replays_only: bool) -> bool:
    """replay.run, with CuPy's cuBLAS handle back on the current stream afterwards: a capture
    binds it to the capturing stream, which is gone once the capture ends."""
    import cupy

    try:
        return replay.run(key, gemm.bind, issue, replays_only)
    finally:
        gemm.bind(cupy.cuda.get_current_stream())


def forward(spec: LSTMSpec, w_hh, gx, h0, c0, h_buf, h_last, c_last, cell, training: bool, c_cache,
            advice: str, replays_only: bool = False) -> bool:
    """Every step of the forward recurrence, into the buffers the persistent kernel fills;
    with `replays_only`, only where the loop is replayed (runtime/replay.py). Returns
    whether it ran."""
    steps, batch = gx.shape[:2]
    hidden = spec.hidden_size
    gemm = _Gemms(spec)
    recurrent = new_buffer((batch, 4 * hidden), DTYPES[spec.dtype]["accumulate_dtype"],
                           "one step's recurrent products h W_hh^T", advice)
    step, products = ctypes.c_int32(0), ctypes.c_uint64(0)
    cell_step = _CellLaunches(load_cell_kernels(spec).forward, batch, hidden, [
        _pointer(gx), products, _pointer(c0), _pointer(h_buf), ctypes.c_int32(h_buf.shape[0]), _pointer(h_last),
        _pointer(c_last), _pointer(cell), ctypes.c_int32(training), _pointer(c_cache), step, ctypes.c_int32(steps),
        ctypes.c_int32(batch)])
    slot_bytes = batch * hidden * h_buf.itemsize

    def issue(stream) -> None:
        for t in range(steps):
            if t > 0:
                h_prev = h_buf.data.ptr + (t - 1) % h_buf.shape[0] * slot_bytes
            else:
                h_prev = _address(h0)
            if h_prev is not None:
                gemm(True, 4 * hidden, batch, hidden, w_hh.data.ptr, hidden, h_prev, hidden,
                     recurrent.data.ptr, 4 * hidden, gemm.accumulate_type)
            products.value = 0 if h_prev is None else recurrent.data.ptr
            step.value = t
            cell_step(stream)

    key = ("forward", spec, *cell_step.values, w_hh.data.ptr, _address(h0), recurrent.data.ptr)
    return _run(key, gemm, issue, replays_only)


def backward(spec: LSTMSpec, w_hh, gates, c_seq, c0, dy, dh_T, dc_T, dh0, dc0, d_cell, advice: str,
             replays_only: bool = False) -> bool:
    """Every step of the backward recurrence: dG over the gates, dh0, dc0; `replays_only`
    and the result as forward's."""
    steps, batch = gates.shape[:2]
    hidden = spec.hidden_size
    gemm = _Gemms(spec)
    recurrent = new_buffer((batch, hidden), DTYPES[spec.dtype]["accumulate_dtype"],
                           "one step's recurrent gradients dG W_hh", advice)
    step, products = ctypes.c_int32(0), ctypes.c_uint64(0)
    cell_step = _CellLaunches(load_cell_kernels(spec).backward, batch, hidden, [
        _pointer(gates), _pointer(c_seq), _pointer(c0), _pointer(dy), _pointer(dh_T), _pointer(dc_T), products,
        _pointer(dc0), _pointer(d_cell), step, ctypes.c_int32(steps), ctypes.c_int32(batch)])
    gate_bytes = batch * 4 * hidden * gates.itemsize

    def issue(stream) -> None:
        for t in range(steps - 1, -1, -1):
            products.value = 0 if t + 1 == steps else recurrent.data.ptr
            step.value = t
            cell_step(stream)
            # dL/dh_{t-1} = dG[t] W_hh: column-major [H, B] = W_hh^T (as stored) dG[t]^T; at t = 0 it is dh0.
            out, out_type = (recurrent, gemm.accumulate_type) if t > 0 else (dh0, gemm.storage_type)
            gemm(False, hidden, batch, 4 * hidden, w_hh.data.ptr, hidden, gates.data.ptr + t * gate_bytes,
                 4 * hidden, out.data.ptr, hidden, out_type)

    key = ("backward", spec, *cell_step.values, w_hh.data.ptr, recurrent.data.ptr, dh0.data.ptr)
    return _run(key, gemm, issue, replays_only)
