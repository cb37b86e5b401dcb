"""The GPU the runtime runs on: presence check and its properties as a render target."""

from __future__ import annotations

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
    return Target(
        arch=f"sm_{device.compute_capability}",
        sm_count=attributes["MultiProcessorCount"],
        max_smem_per_block=attributes["MaxSharedMemoryPerBlockOptin"],
        max_threads_per_block=attributes["MaxThreadsPerBlock"],
    )
