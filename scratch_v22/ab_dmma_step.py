"""A/B (delete before merging): float64's stepwise forward step as one DMMA kernel
(templates/cell.cu.j2 lstm_forward_step) against a cuBLAS GEMM and the cell kernel, and the
persistent kernels, in one process, interleaved rounds. Differences of y, dx, dW_hh between
the DMMA step and cuBLAS's, relative to the largest value.

    python scratch_v22/ab_dmma_step.py > $OUT/ab-v22-2-dmma-step.log
"""
import numpy as np
import cupy
from lstmgen.codegen import LSTMSpec
from lstmgen.runtime import Layer, replay, stepwise
from lstmgen.bench.measure import timing_ms, cupy_ms

CASES = [(128, [256]), (256, [16, 32, 64, 256]), (512, [8, 16, 32, 64, 256]), (1024, [8, 16, 32, 64, 256])]
STEPS, ROUNDS = 512, 3
state = {"dmma": True}
runs_dmma = stepwise._runs_dmma_step
stepwise._runs_dmma_step = lambda spec, batch: state["dmma"] and runs_dmma(spec, batch)

for hidden, batches in CASES:
    spec = LSTMSpec(hidden, hidden, "float64", "double", return_sequences=True)
    stepped = Layer(spec, seed=5, recurrence="stepwise")
    persistent = Layer(spec, seed=5, recurrence="persistent")
    for batch in batches:
        rng = np.random.default_rng(1)
        x = cupy.asarray(rng.uniform(-1, 1, (STEPS, batch, hidden)))
        dy = cupy.asarray(rng.uniform(-1, 1, (STEPS, batch, hidden)))
        variants = {"cuBLAS": (stepped, False), "DMMA": (stepped, True), "persistent": (persistent, True)}
        results, times = {}, {(name, mode): [] for name in variants for mode in ("fwd", "train")}
        for round_ in range(ROUNDS):
            for name, (layer, dmma) in variants.items():
                state["dmma"] = dmma
                def forward():
                    return layer.forward(x)
                def train():
                    y, _ = layer.forward(x, training=True)
                    return y, layer.backward(dy)
                times[(name, "fwd")].append(timing_ms(cupy_ms, forward, 10, 3).median * 1000 / STEPS)
                times[(name, "train")].append(timing_ms(cupy_ms, train, 10, 3).median * 1000 / STEPS)
                if round_ == 0:
                    y, grads = train()
                    results[name] = {"y": y.get(), "dx": grads["dx"].get(), "dW_hh": grads["dW_hh"].get()}
        line = f"float64 H={hidden} B={batch}:"
        for mode in ("fwd", "train"):
            base = np.median(times[("cuBLAS", mode)])
            line += f" | {mode} cuBLAS {base:.2f}us"
            for name in ("DMMA", "persistent"):
                line += f" {name} {np.median(times[(name, mode)]) / base:.3f} ({np.median(times[(name, mode)]):.2f})"
        diffs = " ".join(f"{k} {np.abs(results['DMMA'][k] - v).max() / np.abs(v).max():.1e}"
                         for k, v in results["cuBLAS"].items())
        print(line + " | DMMA vs cuBLAS " + diffs, flush=True)
        replay._graphs.clear()
        cupy.get_default_memory_pool().free_all_blocks()
