"""Runs every kernel direction once on a grid of specs: the workload for compute-sanitizer.

    compute-sanitizer --tool memcheck python .ci/sanitize.py
    compute-sanitizer --tool racecheck python .ci/sanitize.py   (shared-memory hazards only)
    compute-sanitizer --tool synccheck python .ci/sanitize.py   (barrier misuse)

Covers both dtypes, every bias mode, both return_sequences, weights in shared memory and
streamed from L2, batches split over launches, odd sizes. Exits non-zero on any mismatch.
"""

import sys

from lstmgen.codegen import LSTMSpec
from lstmgen.runtime import Layer
from lstmgen.runtime.compile import load_kernels
from lstmgen.strategies import Problem
from lstmgen.verify import check_layer

GRID = [
    (LSTMSpec(3, 1, "float32", "double", True), Problem(4, 3, True, True, 1)),
    (LSTMSpec(5, 37, "float64", "single", False), Problem(3, 2, False, True, 2)),
    (LSTMSpec(17, 133, "float32", "none", True), Problem(3, 5, True, False, 3)),
    (LSTMSpec(8, 1024, "float64", "double", False), Problem(2, 2, True, True, 4)),  # W_hh streamed
    (LSTMSpec(8, 1400, "float32", "single", True), Problem(2, 3, True, True, 6)),  # W_hh streamed
    (LSTMSpec(4, 300, "float32", "single", True), None),  # batch split over launches
]

failures = 0
for spec, problem in GRID:
    if problem is None:
        problem = Problem(2, load_kernels(spec).plan.batch_tile + 1, True, True, 5)
    report = check_layer(Layer(spec, seed=0), problem)
    print(f"{spec.describe()} {problem}: {'ok' if not report else 'MISMATCH'}")
    for line in report:
        print("  " + line)
    failures += bool(report)
sys.exit(1 if failures else 0)
