"""python -m lstmgen.bench.crossover: where the stepwise recurrence overtakes the persistent
kernels, which is what places Plan.stepwise_from_batch (codegen/planner.py _stepwise_from_batch).

For each dtype, H and B it times our layer both ways on the same weights and inputs (and
checks that they agree), forward-only and training step, and prints us per step, the
ratio persistent / stepwise (above 1: stepwise is faster) and the batch the planner now
chooses. No cuDNN: this compares our two recurrences only.
"""

from __future__ import annotations

import argparse
import sys

from lstmgen.bench.measure import cupy_ms, timing_ms


def _times(dtype: str, hidden: int, batch: int, steps: int, repeats: int, warmup: int) -> dict:
    import cupy
    import numpy as np

    from lstmgen.codegen import LSTMSpec
    from lstmgen.compare import mismatches, tolerance_key
    from lstmgen.dtypes import numpy_dtype
    from lstmgen.runtime import Layer

    storage = "float32" if dtype == "tf32" else dtype
    spec = LSTMSpec(hidden, hidden, storage, "double", return_sequences=True, allow_tf32=dtype == "tf32")
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.uniform(-1, 1, (steps, batch, hidden)).astype(numpy_dtype(storage)))
    dy = cupy.asarray(rng.uniform(-1, 1, (steps, batch, hidden)).astype(numpy_dtype(storage)))
    times, outputs = {}, {}
    for recurrence in ("persistent", "stepwise"):
        layer = Layer(spec, seed=0, recurrence=recurrence)

        def forward():
            return layer.forward(x, training=False)[0]

        def training():
            layer.forward(x, training=True)
            return layer.backward(dy)

        times[recurrence] = [timing_ms(cupy_ms, run, repeats, warmup).per_step_us(steps)[0]
                             for run in (forward, training)]
        # After the timed runs: stepwise, these replay the captured loops (runtime/replay.py).
        outputs[recurrence] = (forward().get(), training()["dW_hh"].get())
        precision = tolerance_key(storage, layer.kernels.plan.mma_type)
        from_batch = layer.kernels.plan.stepwise_from_batch
    report = []
    for name, persistent, stepwise in zip(("y", "dW_hh"), outputs["persistent"], outputs["stepwise"]):
        report += mismatches(f"{name} stepwise vs persistent", stepwise, persistent, precision)
    if report:
        raise AssertionError(f"{dtype} H={hidden} B={batch}: the recurrences disagree\n" + "\n".join(report))
    return {"times": times, "planned": from_batch}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstmgen.bench.crossover", description=__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16", "float64", "tf32"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512, 1024])
    parser.add_argument("--batch", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    print("dtype     H     B  | persistent fwd / train | stepwise fwd / train | ratio fwd / train | planned from B")
    for dtype in args.dtypes:
        for hidden in args.hidden:
            for batch in args.batch:
                result = _times(dtype, hidden, batch, args.steps, args.repeats, args.warmup)
                (pf, pt), (sf, st) = result["times"]["persistent"], result["times"]["stepwise"]
                print(f"{dtype:8s} {hidden:5d} {batch:4d} | {pf:9.2f} / {pt:9.2f} us | {sf:8.2f} / {st:8.2f} us | "
                      f"{pf / sf:6.2f}x / {pt / st:6.2f}x | {result['planned']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
