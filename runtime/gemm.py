"""A layer's GEMMs on cuBLAS, in the layer's math: storage-type inputs, products in the
accumulation type (or storage), and TF32 where the layer's plan runs TF32 or where the caller
passes operands already split into TF32 halves (strict float32's stepwise step, runtime/tf32_split.py).

TF32 covers the input projection, dx and the weight gradients (all but dW_hh's h0 term, B
rows in CuPy; db, bound by memory, sums in strict float32), as torch's cudnn.allow_tf32 does for cuDNN's LSTM: they are the bulk of the
arithmetic at large batches, and strict float32 runs them at a fraction of the tensor cores'
rate. A layer too wide for TF32 fragments (past H = 1056 on the H200) plans strict float32,
and its GEMMs follow, so that its tolerances are strict float32's. CuPy's matmul has no per-call TF32 switch (only the
process-wide CUPY_TF32), so cublasGemmEx (and cublasGemmStridedBatchedEx, for the stepwise
forward's three TF32 products) is called through ctypes, which the stepwise
recurrence needs anyway: CuPy's wrapper binds its handle to CuPy's current stream on every
call and refuses a capturing one, so it cannot be captured on a stream of our own.

cuBLAS is column-major: a row-major [rows, cols] matrix is its column-major transpose.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from lstmgen.codegen import DTYPES, LSTMSpec
from lstmgen.runtime.compile import load_kernels

# cudaDataType_t (library_types.h) and cublasComputeType_t (cublas_api.h).
_CUDA_TYPES = {"float16": 2, "bfloat16": 14, "float32": 0, "float64": 1}
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70


@functools.cache
def _cublas_functions():
    """cublasGemmEx and cublasGemmStridedBatchedEx of the library CuPy loaded. cuBLAS supports
    stream capture (with host pointer mode, alpha and beta are captured by value)."""
    from cuda.pathfinder import load_nvidia_dynamic_lib

    library = ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)  # the library CuPy uses, already loaded
    pointer, value, stride = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    gemm, strided = library.cublasGemmEx, library.cublasGemmStridedBatchedEx
    gemm.argtypes = [pointer, value, value, value, value, value, pointer, pointer, value, value, pointer, value,
                     value, pointer, pointer, value, value, value, value]
    strided.argtypes = [pointer, value, value, value, value, value, pointer, pointer, value, value, stride, pointer,
                        value, value, stride, pointer, pointer, value, value, stride, value, value, value]
    gemm.restype = strided.restype = value
    return gemm, strided


class Gemms:
    """C = A B with the layer's types on the calling thread's cuBLAS handle (CuPy keeps one a
    thread), by device pointers (__call__, on the stream last bound) or on row-major CuPy
    arrays (matmul, on the current stream, or with bind=False on the stream last bound)."""

    def __init__(self, spec: LSTMSpec, tf32_allowed: bool = True):
        from cupy_backends.cuda.libs import cublas

        self._cublas = cublas
        self._gemm_ex, self._strided_gemm_ex = _cublas_functions()
        accumulate = DTYPES[spec.dtype]["accumulate_dtype"]
        self.storage_type = _CUDA_TYPES[spec.dtype]
        self.accumulate_type = _CUDA_TYPES[accumulate]
        # TF32 where the layer's persistent kernels use it too (allow_tf32, up to the width
        # whose fragments fit): the layer's tolerances follow its plan. A caller whose GEMM
        # is bound by memory, not arithmetic, gains nothing from TF32 and may keep it exact.
        tf32 = tf32_allowed and load_kernels(spec).plan.mma_type == "tf32"
        if accumulate == "float64":
            self.compute = _COMPUTE_64F
        else:
            self.compute = _COMPUTE_32F_FAST_TF32 if tf32 else _COMPUTE_32F
        # alpha = 1 and beta = 0 in the compute type, read from host memory during each call.
        self._scalars = np.array([1, 0], accumulate)
        self._alpha = self._scalars.ctypes.data
        self._beta = self._alpha + self._scalars.itemsize

    @property
    def runs_tf32(self) -> bool:
        """Whether the layer's GEMMs run TF32 (not those of operands split into TF32 halves)."""
        return self.compute == _COMPUTE_32F_FAST_TF32

    def bind(self, stream) -> None:
        """Issue this thread's following GEMMs on `stream`."""
        import cupy

        handle = cupy.cuda.device.get_cublas_handle()
        self._cublas.setStream(handle, stream.ptr)
        self._cublas.setPointerMode(handle, self._cublas.CUBLAS_POINTER_MODE_HOST)

    def __call__(self, transpose_a: bool, m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int,
                 c: int, ldc: int, c_type: int, transpose_b: bool = False, k_parts: int = 1,
                 tf32: bool = False) -> None:
        """Column-major C[m, n] = op(A) op(B), op(X) = X^T where transpose_x; device pointers.
        With k_parts > 1, C holds k_parts products [m, n], ldc * n elements apart, of equal
        consecutive parts of k (which k_parts divides), for the caller to sum: one batched
        GEMM of more, shorter tiles. With tf32, in TF32 whatever the layer's math: for float32
        operands already split into TF32 halves (runtime/tf32_split.py)."""
        import cupy

        cublas, handle = self._cublas, cupy.cuda.device.get_cublas_handle()
        compute = _COMPUTE_32F_FAST_TF32 if tf32 else self.compute
        operations = (cublas.CUBLAS_OP_T if transpose_a else cublas.CUBLAS_OP_N,
                      cublas.CUBLAS_OP_T if transpose_b else cublas.CUBLAS_OP_N)
        if k_parts == 1:
            status = self._gemm_ex(handle, *operations, m, n, k, self._alpha, a, self.storage_type, lda, b,
                                   self.storage_type, ldb, self._beta, c, c_type, ldc, compute,
                                   cublas.CUBLAS_GEMM_DEFAULT)
        else:
            assert k % k_parts == 0, "the parts of k are equal"
            part = k // k_parts
            # A part of k is a run of columns of A [m, k] read as stored and a run of rows of
            # B [k, n] read as stored (column-major); op T swaps them. Strides are in elements.
            stride_a = part if transpose_a else part * lda
            stride_b = part * ldb if transpose_b else part
            status = self._strided_gemm_ex(handle, *operations, m, n, part, self._alpha, a, self.storage_type, lda,
                                           stride_a, b, self.storage_type, ldb, stride_b, self._beta, c, c_type,
                                           ldc, ldc * n, k_parts, compute, cublas.CUBLAS_GEMM_DEFAULT)
        cublas.check_status(status)

    def matmul(self, a, b, out, bind: bool = True) -> None:
        """out = a @ b for 2-D arrays in the storage type, each C-contiguous or the transpose
        (.T) of a C-contiguous array; out C-contiguous, in the storage or accumulation type.
        On the current stream, or with bind=False on the stream last bound (a capturing one)."""
        import cupy

        rows, inner = a.shape
        cols = b.shape[1]
        assert b.shape[0] == inner and out.shape == (rows, cols) and out.flags.c_contiguous
        # Row-major out = a b is column-major out^T = b^T a^T: cuBLAS's A is b, its B is a. A
        # C-contiguous row-major X is the column-major X^T (no op, ld = its row length); the
        # transpose of a C-contiguous array is that array read with op T.
        b_transposed, ldb = _layout(b)
        a_transposed, lda = _layout(a)
        if bind:
            self.bind(cupy.cuda.get_current_stream())
        self(b_transposed, cols, rows, inner, b.data.ptr, ldb, a.data.ptr, lda, out.data.ptr, cols,
             _CUDA_TYPES[out.dtype.name], transpose_b=a_transposed)


def _layout(array) -> tuple[bool, int]:
    """(read with op T, leading dimension) of a row-major 2-D operand."""
    if array.flags.c_contiguous:
        return False, max(array.shape[1], 1)
    assert array.flags.f_contiguous, "a GEMM operand is C-contiguous or a transposed C-contiguous array"
    return True, max(array.shape[0], 1)
