"""Compiling generated CUDA source with NVRTC.

`load_kernels` is what layers use: cupy.RawModule for the current device, memoised in
process by (spec, device), with CuPy's own on-disk cache (keyed by source, options, arch
and NVRTC version) serving later processes; `load_sized_kernel` the batch-sliced kernels
compiled for the rows of a batch's groups, alike. `compile_for_arch` compiles the sm_90 rendering
with the same NVRTC and our same options (CuPy may add flags of its own) for a named
architecture without touching a GPU, which is how the CPU tier proves every generated
kernel compiles.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from lstmgen.codegen import PORTABLE_CLUSTER_BLOCKS, LSTMSpec, Plan, Target, plan_layer, render_kernel, render_layer, sized_plan
from lstmgen.errors import KernelCompileError, LaunchError
from lstmgen.runtime.device import current_target, max_active_clusters, require_gpu


@functools.cache
def compile_options() -> tuple[str, ...]:
    """NVRTC options: C++17, include paths for cooperative_groups.h and its headers, and
    automatic precompiled headers: parsing those headers is most of a compile, and a process
    that compiles several layers reuses the parse (12 kernels: 14.2 s -> 8.5 s on the CPU)."""
    import cupy

    include_dirs = [_cuda_include_dir(), Path(cupy.__file__).parent / "_core/include/cupy/_cccl/libcudacxx"]
    return ("--std=c++17", "--pch", *(f"-I{folder}" for folder in include_dirs))


def _cuda_include_dir() -> Path:
    """CUDA headers: those of the pip CUDA runtime wheel, else the toolkit CuPy found."""
    try:
        import nvidia.cu13

        folder = Path(next(iter(nvidia.cu13.__path__))) / "include"
        if (folder / "cooperative_groups.h").exists():
            return folder
    except ImportError:
        pass
    import cupy

    cuda_path = cupy.cuda.get_cuda_path()
    if cuda_path and (Path(cuda_path) / "include" / "cooperative_groups.h").exists():
        return Path(cuda_path) / "include"
    raise KernelCompileError(
        "CUDA headers (cooperative_groups.h) were not found: NVRTC needs them to compile the "
        "kernels; install them with pip install 'lstmgen[cuda13]' or set CUDA_PATH to a CUDA toolkit"
    )


def numbered(text: str) -> str:
    """Source with line numbers, so an NVRTC log's line references can be followed."""
    return "\n".join(f"{number:5d}  {line}" for number, line in enumerate(text.splitlines(), 1))


def _compile_error(spec: LSTMSpec, direction: str, log: str, text: str) -> KernelCompileError:
    return KernelCompileError(
        f"NVRTC could not compile the {direction} kernel for layer [{spec.describe()}]"
        f"{' (' + spec.where + ')' if spec.where else ''}.\n"
        f"cause: the generated source is not valid for this compiler; this is a bug in a template "
        f"or the planner, not in your spec.\nfix: report it with this message; meanwhile try "
        f"another hidden_size or dtype.\n--- NVRTC log ---\n{log.strip()}\n--- source ---\n{numbered(text)}"
    )


# What cupy.RawModule adds to compile_options() (cupy/cuda/compiler.py): unannotated
# functions, such as the FMA kernels' generic lambdas, are device code, and denormals flush
# to zero. Some NVRTC versions (the H200 image's) reject those lambdas without the first.
RAW_MODULE_OPTIONS = ("--device-as-default-execution-space", "-ftz=true")


def compile_for_arch(spec: LSTMSpec, direction: str, text: str, arch: str) -> bytes:
    """Compile `text` to a cubin for `arch` (e.g. "sm_90") without a GPU, with the options the
    runtime's compiles get; raise on failure."""
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(text, f"{direction}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, [*compile_options(), *RAW_MODULE_OPTIONS, f"-arch={arch}"])
        except nvrtc.NVRTCError:
            raise _compile_error(spec, direction, nvrtc.getProgramLog(program), text) from None
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


# cuda.h's CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, which CuPy does not name.
_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14


@dataclass(frozen=True)
class LayerKernels:
    """A layer's compiled recurrence kernels and the plan they were built with."""

    forward: object   # cupy.RawKernel
    backward: object  # cupy.RawKernel
    plan: Plan
    clusters: int | None = None  # batch-sliced clusters the GPU runs at once (None: as many as fit its SMs)


def portable_target(target: Target) -> Target:
    """`target` with its clusters limited to the portable size: what a layer plans for where
    the GPU holds none of its plan's larger clusters (load_kernels)."""
    return replace(target, max_cluster_blocks=PORTABLE_CLUSTER_BLOCKS)


@functools.cache
def _load(spec: LSTMSpec, device_id: int) -> LayerKernels:
    target = current_target()
    try:
        return _compile(spec, target)
    except LaunchError:
        if not plan_layer(spec, target).non_portable_cluster:
            raise
        # A GPU's GPCs may hold no cluster past the portable size at one block an SM with
        # this much shared memory: plan with clusters of at most 8 blocks instead.
        return _compile(spec, portable_target(target))


def _compile(spec: LSTMSpec, target: Target) -> LayerKernels:
    sources = render_layer(spec, target)
    kernels = {direction: _recurrence_kernel(spec, sources[direction]) for direction in ("forward", "backward")}
    plan = sources["forward"].plan
    clusters = None
    if plan.cluster_blocks > 1:
        counts = [max_active_clusters(kernel, plan.num_blocks, plan.threads, plan.smem_bytes) for kernel in kernels.values()]
        if plan.non_portable_cluster:
            # Past the portable size, a driver that cannot count such clusters is not trusted to run them.
            counts = [0 if count is None else count for count in counts]
        clusters = running_clusters(spec, plan, counts)
    return LayerKernels(forward=kernels["forward"], backward=kernels["backward"], plan=plan, clusters=clusters)


def _recurrence_kernel(spec: LSTMSpec, source):
    """A recurrence kernel (forward or backward, for any plan of the layer's), compiled and set up to launch."""
    import cupy

    # Cooperative launches where the kernels cross a grid-wide barrier every step, or wait
    # for other blocks' tagged words of h (both need every block resident at once);
    # batch-sliced ones meet only within a block or cluster, which any launch keeps together.
    (kernel,) = _module_functions(spec, source, cooperative=not source.plan.batch_sliced)
    # The staged rows (and a W_hh slice in shared memory) take more than the default 48 KiB.
    kernel.max_dynamic_shared_size_bytes = source.plan.smem_bytes
    if source.plan.non_portable_cluster:
        # Clusters past 8 blocks launch only where the kernel says it allows them.
        cupy.cuda.driver.funcSetAttribute(kernel.kernel.ptr, _NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
    return kernel


@functools.cache
def _load_sized(spec: LSTMSpec, device_id: int, direction: str, rows: int) -> tuple[object, Plan]:
    layer = _load(spec, device_id)
    plan = sized_plan(spec, layer.plan, direction, rows)  # layer.plan: _load may have narrowed the clusters
    step = f"{direction}_step"
    if getattr(plan, step) == getattr(layer.plan, step):
        # The layer's kernel is this one: their sources differ only in the plan's summary in
        # the header. It reads only its step's shared memory, which the sized plan reserves.
        return getattr(layer, direction), plan
    kernel = _recurrence_kernel(spec, render_kernel(spec, plan, direction))
    if layer.clusters is not None:
        count = max_active_clusters(kernel, plan.num_blocks, plan.threads, plan.smem_bytes)
        if (count or 0) < layer.clusters:
            # Every launch is sized by the layer's count of clusters, which too few of these
            # would fit at once (on some GPU): its kernel for the most rows runs instead.
            return getattr(layer, direction), layer.plan
    return kernel, plan


_SIZED_LOCK = threading.Lock()


def load_sized_kernel(spec: LSTMSpec, direction: str, rows: int) -> tuple[object, Plan]:
    """`direction`'s kernel of batch-sliced `spec` compiled for `rows` staged rows, which hold
    a batch's groups (Plan.staged_rows, sized_plan), and its plan, for the current device: compiled when a
    batch first needs it, once per process (CuPy's disk cache serves later processes). Where
    fewer of its clusters than of the layer's fit the GPU at once, the layer's own kernel."""
    with _SIZED_LOCK:  # one compile, so one kernel, which graphs may have captured
        return _load_sized(spec, require_gpu(), direction, rows)


def _module_functions(spec: LSTMSpec, source, cooperative: bool = False) -> list:
    """The kernels of one emitted file, compiled (NVRTC errors come with the source)."""
    import cupy

    module = cupy.RawModule(code=source.text, options=compile_options(), enable_cooperative_groups=cooperative)
    try:
        return [module.get_function(entry) for entry in source.entries]
    except cupy.cuda.compiler.CompileException as error:
        raise _compile_error(spec, source.direction, str(error), source.text) from None


@dataclass(frozen=True)
class CellKernels:
    """A layer's kernels for the stepwise recurrence (templates/cell.cu.j2)."""

    forward: object   # cupy.RawKernel
    backward: object  # cupy.RawKernel
    plan: Plan        # the plan they were rendered for
    forward_dmma_step: object | None = None  # float64's one-kernel step, where the plan has it


@functools.cache
def _load_cells(spec: LSTMSpec, device_id: int) -> CellKernels:
    source = render_layer(spec, current_target())["cell"]
    forward, backward, *forward_dmma_step = _module_functions(spec, source)
    return CellKernels(forward=forward, backward=backward, plan=source.plan,
                       forward_dmma_step=forward_dmma_step[0] if forward_dmma_step else None)


def load_cell_kernels(spec: LSTMSpec) -> CellKernels:
    """Compiled cell kernels of `spec` for the current device, compiled when a layer first
    considers the stepwise recurrence (at its planned batch, or forced), at most once per
    process."""
    return _load_cells(spec, require_gpu())


def running_clusters(spec: LSTMSpec, plan: Plan, counts: list[int | None]) -> int | None:
    """Clusters of `plan` the GPU runs at once: the fewest the driver counts for any of its
    forward and backward kernels (None where it cannot say), or a LaunchError where a
    kernel's fit none. (load_sized_kernel checks its kernels' counts against it.)"""
    known = [count for count in counts if count is not None]
    if 0 in known:
        raise LaunchError(
            f"this GPU cannot run the kernels of layer [{spec.describe()}]"
            f"{' (' + spec.where + ')' if spec.where else ''}: they need clusters of "
            f"{plan.cluster_blocks} blocks of {plan.threads} threads and {plan.smem_bytes} B of shared memory "
            f"each, and the driver reports that none fits; use hidden_size above 256, whose kernels need no "
            f"clusters, or a GPU with clusters of {plan.cluster_blocks} SMs (sm_90 or later)"
        )
    return min(known, default=None)


def load_kernels(spec: LSTMSpec) -> LayerKernels:
    """Compiled kernels of `spec` for the current device, compiled at most once per process."""
    return _load(spec, require_gpu())
