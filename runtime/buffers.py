"""Device buffers for layer outputs and caches.

Every buffer a layer writes comes from `new_buffer`, so that an out-of-memory turns into an
error that says how much was needed and what to lower, and so that tests can poison new
buffers with NaN: a kernel that leaves an element unwritten then fails the comparison.
"""

from __future__ import annotations

import contextlib

from lstmgen.errors import GPUOutOfMemoryError

_poison = False


@contextlib.contextmanager
def poisoned_buffers():
    """Within this block every new floating-point buffer is filled with NaN before the kernels run."""
    global _poison
    previous, _poison = _poison, True
    try:
        yield
    finally:
        _poison = previous


def new_buffer(shape, dtype, what: str, advice: str):
    """An uninitialised device array; `what` and `advice` go into an out-of-memory error."""
    import cupy

    try:
        array = cupy.empty(shape, dtype=dtype)
    except cupy.cuda.memory.OutOfMemoryError:
        itemsize = cupy.dtype(dtype).itemsize
        needed = itemsize
        for size in shape:
            needed *= size
        free, total = cupy.cuda.runtime.memGetInfo()
        pool = cupy.get_default_memory_pool()
        raise GPUOutOfMemoryError(
            f"out of GPU memory allocating {what}: it needs {needed / 2**20:.1f} MiB "
            f"(shape {tuple(shape)}, {cupy.dtype(dtype).name}); the device has {free / 2**20:.1f} of "
            f"{total / 2**20:.1f} MiB free and CuPy's pool holds {pool.total_bytes() / 2**20:.1f} MiB "
            f"(limit {pool.get_limit() / 2**20:.1f} MiB, 0 = none): {advice}"
        ) from None
    if _poison and array.dtype.kind in "fc":  # NaN is a poison only floats hold
        array.fill(float("nan"))
    return array
