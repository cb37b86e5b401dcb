"""Measuring one grid point: lstmgen and torch.nn.LSTM (cuDNN) on the same weights and inputs.

Correctness is checked before anything is timed. Timing uses CUDA events after a warm-up and
takes the median of `repeats` runs. Peak memory is what each side allocates beyond the
weights and inputs while running once: torch's max_memory_allocated, and for lstmgen the
bytes a fresh CuPy pool holds after serving that run alone (an upper bound of its peak).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lstmgen.bench.report import Cell
from lstmgen.codegen import DTYPES, LSTMSpec
from lstmgen.compare import mismatches, tolerance_key
from lstmgen.dtypes import numpy_dtype


def cupy_ms(run) -> float:
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    run()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop)


def torch_ms(run) -> float:
    import torch

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


@dataclass(frozen=True)
class Timing:
    """Milliseconds a run took: the median of the timed runs, and the fastest and slowest."""

    median: float
    low: float
    high: float

    def per_step_us(self, steps: int) -> tuple[float, tuple[float, float]]:
        """The median and (fastest, slowest) in microseconds per step."""
        return 1000 * self.median / steps, (1000 * self.low / steps, 1000 * self.high / steps)


def timing_ms(timer, run, repeats: int, warmup: int) -> Timing:
    for _ in range(warmup):
        run()
    times = [timer(run) for _ in range(repeats)]
    return Timing(statistics.median(times), min(times), max(times))


def _ours_peak_bytes(run) -> int:
    import cupy

    # A pool of its own for one run: it caches and reuses what the run frees, so what it
    # holds afterwards bounds the run's high-water mark from above (512-byte bins, and a freed
    # block too small for a later request stays counted), and nothing allocated before
    # (weights, inputs, blocks cached by earlier cells) is counted.
    pool = cupy.cuda.MemoryPool()
    cupy.cuda.Device().synchronize()
    with cupy.cuda.using_allocator(pool.malloc):
        result = run()
        cupy.cuda.Device().synchronize()
    peak = pool.total_bytes()
    del result
    pool.free_all_blocks()
    return peak


def _cudnn_peak_bytes(run) -> int:
    import torch

    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - baseline


def measure(dtype: str, hidden: int, batch: int, steps: int, repeats: int, warmup: int,
            recurrence: str = "auto") -> list[Cell]:
    """Forward and training cells of one (dtype, H, B), I = H, bias as torch (double); our
    layer runs its recurrence as `recurrence` says (runtime/layer.py RECURRENCES).

    dtype "tf32" is float32 with TF32 allowed on both sides: cuDNN's allow_tf32 and the
    layer's allow_tf32 (its recurrence, persistent or stepwise, and its input-projection,
    dx and weight-gradient GEMMs in TF32, up to the H = 1056 of its TF32 plans).
    """
    import cupy
    import torch

    from lstmgen.runtime import Layer

    allow_tf32 = dtype == "tf32"
    storage = "float32" if allow_tf32 else dtype
    # Strict float32 unless the cell is TF32's: users compare against strict fp32.
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch_dtype = getattr(torch, storage)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(hidden, hidden).to("cuda", torch_dtype)
    lstm.flatten_parameters()
    x_torch = (torch.rand(steps, batch, hidden, device="cuda", dtype=torch_dtype) * 2 - 1)

    def cudnn_forward():
        with torch.no_grad():
            return lstm(x_torch)[0]

    x_grad = x_torch.clone().requires_grad_(True)

    def cudnn_training():
        lstm.zero_grad(set_to_none=True)
        x_grad.grad = None
        lstm(x_grad)[0].sum().backward()

    notes, cudnn_runs = [], True
    try:
        expected_y = cudnn_forward()
        cudnn_training()
        expected_dw = lstm.weight_hh_l0.grad.double().cpu().numpy()
    except RuntimeError as error:  # e.g. no cuDNN RNN kernel for this dtype
        notes.append(f"cuDNN: no kernel ({str(error).splitlines()[0][:60]})")
        cudnn_runs = False

    layer = None
    if storage not in DTYPES:
        notes.append(f"lstmgen: no {dtype} kernels yet")
    else:
        layer = Layer(LSTMSpec(hidden, hidden, storage, "double", return_sequences=True, allow_tf32=allow_tf32),
                      recurrence=recurrence)
        layer.load_torch_state_dict(lstm.state_dict())
        x = cupy.from_dlpack(x_torch.detach())
        dy = cupy.ones((steps, batch, hidden), dtype=numpy_dtype(storage))

        def ours_forward():
            return layer.forward(x, training=False)[0]

        def ours_training():
            layer.forward(x, training=True)
            return layer.backward(dy)

        if cudnn_runs:
            # Same weights, same inputs: both must agree before either is timed. cuDNN is
            # itself approximate, so the agreement is held to the looser side's tolerance:
            # with TF32 allowed cuDNN runs TF32 even where our layer is too wide for it.
            precision = "tf32" if allow_tf32 else tolerance_key(storage, layer.kernels.plan.mma_type)
            report = mismatches("y vs cuDNN", ours_forward().get(), expected_y.double().cpu().numpy(), precision)
            report += mismatches("dW_hh vs cuDNN", ours_training()["dW_hh"].get(), expected_dw, precision)
            if report:
                raise AssertionError(f"{dtype} H={hidden} B={batch}: lstmgen and cuDNN disagree\n" + "\n".join(report))

    # cuDNN's runs first, then ours, each side's in a row (README: taking turns slowed both).
    cudnn = {} if not cudnn_runs else {
        "forward": (timing_ms(torch_ms, cudnn_forward, repeats, warmup), _cudnn_peak_bytes(cudnn_forward)),
        "training": (timing_ms(torch_ms, cudnn_training, repeats, warmup), _cudnn_peak_bytes(cudnn_training)),
    }
    ours = {} if layer is None else {
        "forward": (timing_ms(cupy_ms, ours_forward, repeats, warmup), _ours_peak_bytes(ours_forward)),
        "training": (timing_ms(cupy_ms, ours_training, repeats, warmup), _ours_peak_bytes(ours_training)),
    }

    cells = []
    for mode in ("forward", "training"):
        ours_time, ours_peak = ours.get(mode, (None, None))
        cudnn_time, cudnn_peak = cudnn.get(mode, (None, None))
        ours_us, ours_range = ours_time.per_step_us(steps) if ours_time else (None, None)
        cudnn_us, cudnn_range = cudnn_time.per_step_us(steps) if cudnn_time else (None, None)
        cells.append(Cell(
            dtype=dtype, hidden=hidden, batch=batch, steps=steps, mode=mode, ours_us=ours_us, cudnn_us=cudnn_us,
            ours_peak_bytes=ours_peak, cudnn_peak_bytes=cudnn_peak, note="; ".join(notes),
            ours_range_us=ours_range, cudnn_range_us=cudnn_range,
        ))
    return cells
