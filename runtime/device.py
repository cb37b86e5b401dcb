"""The GPU the runtime runs on: presence check and its properties as a render target."""

from __future__ import annotations

import ctypes

from lstmgen.codegen.planner import Target
from lstmgen.errors import NoGPUError


def require_gpu() -> int:
    """Id of the current CUDA device, or a NoGPUError that says why there is none."""
    try:
        import cupy
    except ImportError as error:
        raise NoGPUError(
            f"the lstmgen runtime needs CuPy, which is not installed ({error}): "
            f"install it with pip install 'lstmgen[cuda13]'"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        count, cause = 0, str(error)
    else:
        cause = "CUDA reports 0 devices"
    if count == 0:
        raise NoGPUError(
            f"no CUDA GPU is usable ({cause}): lstmgen runs its kernels on an NVIDIA GPU; run on a "
            f"machine with one and a working driver, or use `lstmgen generate`, which needs no GPU"
        )
    return cupy.cuda.Device().id


def current_target() -> Target:
    """Render target describing the current device."""
    import cupy

    device = cupy.cuda.Device()
    attributes = device.attributes
    major = int(device.compute_capability) // 10
    return Target(
        arch=f"sm_{device.compute_capability}",
        sm_count=attributes["MultiProcessorCount"],
        max_smem_per_block=attributes["MaxSharedMemoryPerBlockOptin"],
        max_threads_per_block=attributes["MaxThreadsPerBlock"],
        # Clusters came with sm_90; Hopper and data-centre Blackwell take 16 blocks where a
        # kernel allows the non-portable size, every other GPU with clusters 8.
        max_cluster_blocks=16 if major in (9, 10) else 8 if major > 10 else 1,
    )


class _LaunchConfig(ctypes.Structure):
    """The driver's CUlaunchConfig (cuda.h), for the one call CuPy has no binding for."""

    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_bytes", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attributes", ctypes.c_void_p), ("attribute_count", ctypes.c_uint)]


def max_active_clusters(kernel, blocks: int, threads: int, shared_bytes: int) -> int | None:
    """How many clusters of `kernel` (a cupy.RawKernel compiled with __cluster_dims__) the
    current GPU runs at once (0: none fits), or None where the driver cannot say. A GPC holds only whole
    clusters, so this can be fewer than the SMs over the cluster size; a grid of more runs
    in waves. From cuOccupancyMaxActiveClusters, through ctypes: CuPy does not wrap it."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    config = _LaunchConfig((blocks, 1, 1), (threads, 1, 1), shared_bytes, None, None, 0)
    count = ctypes.c_int(0)
    status = driver.cuOccupancyMaxActiveClusters(ctypes.byref(count), ctypes.c_void_p(kernel.kernel.ptr),
                                                 ctypes.byref(config))
    return count.value if status == 0 else None
