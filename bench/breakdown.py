"""python -m lstmgen.bench.breakdown DTYPE H B: where a step's GPU time goes, ours and cuDNN's.

Our layer and torch.nn.LSTM run the same problem as in the bench (T steps, I = H, bias as
torch), warmed up (so that loops which replay are captured, runtime/replay.py); then each
mode runs `--runs` times under torch's profiler, whose CUPTI tracing sees every kernel of
the process, CuPy's and cuBLAS's included. For each side and mode it prints the kernels by
GPU time, in us per time step, and their sum; then the median of `--runs` runs timed as the
bench times them, outside the profiler: the difference is the time between kernels (launches,
and the host's work before them). The rows say which GEMM or recurrence to work on.
"""

from __future__ import annotations

import argparse


def _kernel_rows(profile, runs: int, steps: int) -> list[tuple[float, int, str]]:
    """(us a step, launches a run, name) per kernel, longest first."""
    from torch.autograd import DeviceType

    rows = [(event.self_device_time_total / runs / steps, event.count // runs, event.key)
            for event in profile.key_averages() if event.device_type == DeviceType.CUDA]
    return sorted(rows, reverse=True)


def _profiled(run, runs: int):
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as recorded:
        for _ in range(runs):
            run()
        torch.cuda.synchronize()
    return recorded


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lstmgen.bench.breakdown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dtype", help="float32, float16, bfloat16, float64 or tf32")
    parser.add_argument("hidden", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recurrence", default="auto", help="as Layer's: auto, persistent or stepwise")
    parser.add_argument("--top", type=int, default=8, help="kernels listed per side and mode")
    args = parser.parse_args(argv)

    import cupy
    import torch

    from lstmgen.bench.measure import cupy_ms, timing_ms, torch_ms
    from lstmgen.codegen import LSTMSpec
    from lstmgen.runtime import Layer

    allow_tf32 = args.dtype == "tf32"
    storage = "float32" if allow_tf32 else args.dtype
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch_dtype = getattr(torch, storage)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(args.hidden, args.hidden).to("cuda", torch_dtype)
    lstm.flatten_parameters()
    x_torch = torch.rand(args.steps, args.batch, args.hidden, device="cuda", dtype=torch_dtype) * 2 - 1
    x_grad = x_torch.clone().requires_grad_(True)
    layer = Layer(LSTMSpec(args.hidden, args.hidden, storage, "double", return_sequences=True, allow_tf32=allow_tf32),
                  recurrence=args.recurrence)
    layer.load_torch_state_dict(lstm.state_dict())
    x = cupy.from_dlpack(x_torch.detach())
    dy = cupy.from_dlpack(torch.rand_like(x_torch))  # from_dlpack keeps bfloat16 (cupy.asarray would not)

    def cudnn_forward():
        with torch.no_grad():
            lstm(x_torch)

    def cudnn_training():
        lstm.zero_grad(set_to_none=True)
        x_grad.grad = None
        lstm(x_grad)[0].sum().backward()

    def ours_training():
        layer.forward(x, training=True)
        layer.backward(dy)

    runs = {("ours", "forward"): lambda: layer.forward(x, training=False), ("ours", "training"): ours_training,
            ("cuDNN", "forward"): cudnn_forward, ("cuDNN", "training"): cudnn_training}
    print(f"{args.dtype} H={args.hidden} B={args.batch} T={args.steps}, recurrence {args.recurrence}: "
          f"{layer.kernels.plan.summary()}")
    for (side, mode), run in runs.items():
        for _ in range(3):
            run()
        rows = _kernel_rows(_profiled(run, args.runs), args.runs, args.steps)
        kernels = sum(row[0] for row in rows)
        timer = cupy_ms if side == "ours" else torch_ms
        wall = timing_ms(timer, run, args.runs, warmup=1).per_step_us(args.steps)[0]
        print(f"\n{side} {mode}: {kernels:.2f} us of kernels a step, {wall:.2f} us a step in all "
              f"(median of {args.runs} runs): {wall - kernels:.2f} between kernels")
        for us, launches, name in rows[:args.top]:
            print(f"  {us:8.2f} us  {launches:6d}x  {name[:110]}")


if __name__ == "__main__":
    main()
