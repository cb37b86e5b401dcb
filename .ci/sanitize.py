"""Runs every kernel direction on a grid of specs: the workload for compute-sanitizer.

    compute-sanitizer --tool memcheck python .ci/sanitize.py
    compute-sanitizer --tool racecheck python .ci/sanitize.py   (shared-memory hazards only)
    compute-sanitizer --tool synccheck python .ci/sanitize.py   (barrier misuse)

Covers every dtype, every bias mode, both return_sequences, weights in registers, in shared
memory and split between them and L2 (with the backward's inputs copied into shared memory),
batches of several staged chunks, row passes of 8, 4, 2 and 1,
rows not aligned for 16-byte copies and odd sizes, tensor cores (16-bit storage and TF32),
batch-sliced tensor-core blocks and clusters (strict float32's as three TF32 products),
float64 FMA clusters, the 16-bit
FMA fallback, the stepwise recurrence's cell kernels and float64's one-kernel DMMA step, batch-sliced kernels compiled for groups
of one pass of rows (8 on tensor cores; on FMA up to 8, or 5, rows as they are), of more and of the wide forward's, groups
of fewer rows than their kernels', and replays of captured forwards. Exits
non-zero on any mismatch.
"""

import os
import re
import sys

import cupy

from lstmgen.codegen import LSTMSpec, plan_layer
from lstmgen.runtime import Layer, replay
from lstmgen.runtime.compile import load_kernels, portable_target
from lstmgen.runtime.device import current_target
from lstmgen.strategies import Problem
from lstmgen.verify import check_layer

GRID = [
    (LSTMSpec(3, 1, "float32", "double", True), Problem(4, 3, True, True, 1)),
    (LSTMSpec(5, 37, "float64", "single", False), Problem(3, 2, False, True, 2)),   # float64 FMA clusters of 4
    (LSTMSpec(5, 300, "float64", "single", False), Problem(2, 2, False, True, 28)),  # float64 warp per unit, W_hh in registers
    (LSTMSpec(17, 261, "float32", "none", True), Problem(3, 15, True, False, 3)),  # H*4 B rows: unaligned
    (LSTMSpec(8, 384, "float64", "double", True), Problem(2, 5, True, True, 4)),     # W_hh in shared memory
    (LSTMSpec(8, 1100, "float32", "single", False), Problem(2, 3, True, True, 5)),   # W_hh in shared memory
    (LSTMSpec(8, 1024, "float64", "double", False), Problem(2, 11, True, True, 6)),  # W_hh in registers, smem and L2; 2 and 3 chunks
    (LSTMSpec(8, 1024, "float64", "single", True), Problem(5, 3, False, True, 47)),  # the same, h by tagged words in its last bit, both tags
    (LSTMSpec(8, 1400, "float32", "single", True), Problem(2, 3, True, True, 7)),    # W_hh in smem and L2
    (LSTMSpec(4, 1024, "float32", "double", True), Problem(2, 70, True, True, 8)),   # several chunks each way
    (LSTMSpec(6, 1024, "float16", "double", True), Problem(3, 9, True, True, 9)),    # tensor cores, 2 m tiles
    (LSTMSpec(6, 1024, "float16", "single", True), Problem(3, 8, False, True, 33)),  # the same, h by tagged words
    (LSTMSpec(6, 1024, "float16", "single", True), Problem(3, 1, True, True, 49)),   # the same, one row: a warp copies its own k tiles
    (LSTMSpec(9, 516, "float32", "double", True), Problem(3, 1, False, True, 50)),   # FMA, 129 vectors: one a thread, some none
    (LSTMSpec(4, 8, "float32", "double", True), Problem(3, 100, True, True, 34)),    # 3xTF32 single blocks, a row a block
    (LSTMSpec(9, 514, "float32", "double", True), Problem(2, 7, True, True, 41)),    # FMA tagged words, rows of 257 vectors
    (LSTMSpec(9, 512, "float32", "single", True), Problem(2, 6, True, True, 45)),    # FMA runs of 4 k a lane, tagged words
    (LSTMSpec(5, 320, "float32", "double", True), Problem(2, 5, True, True, 46)),    # runs of 4 k a lane in the backward only
    (LSTMSpec(7, 1056, "bfloat16", "single", True), Problem(2, 70, True, True, 11)), # tensor cores, 2 chunks forward, 3 backward
    (LSTMSpec(3, 555, "bfloat16", "none", False), Problem(3, 5, True, True, 12)),    # odd H: unaligned staging
    (LSTMSpec(4, 100, "float32", "double", True, allow_tf32=True), Problem(3, 3, True, True, 13)),  # TF32 clusters of 8, padded k tile
    (LSTMSpec(5, 1056, "float32", "single", True, allow_tf32=True), Problem(2, 40, True, True, 14)),  # TF32 limit: fragments in smem too
    (LSTMSpec(5, 1000, "float32", "double", True, allow_tf32=True), Problem(2, 9, True, True, 48)),  # the same, both m tiles a warp
    (LSTMSpec(5, 1000, "float32", "none", True, allow_tf32=True), Problem(3, 1, False, True, 52)),  # one row: TF32 keeps the block's staging
    (LSTMSpec(7, 604, "bfloat16", "double", True), Problem(3, 1, True, True, 53)),  # one row, a warp its own k tiles, lanes past k = 604
    (LSTMSpec(3, 300, "float32", "single", True, allow_tf32=True), Problem(2, 3, True, True, 51)),  # tagged words, a vector a thread over padded rows
    (LSTMSpec(5, 1400, "float16", "single", False), Problem(2, 3, True, True, 10)),  # 16-bit FMA, shared memory
    (LSTMSpec(5, 2001, "float16", "single", True), Problem(2, 3, True, True, 35)),   # 16-bit FMA, W_hh in L2
    (LSTMSpec(6, 64, "float16", "double", True), Problem(3, 37, True, True, 15)),     # batch-sliced, a row a block (kernels for 8)
    (LSTMSpec(3, 5, "bfloat16", "none", False), Problem(3, 70, False, True, 16)),     # batch-sliced, a row a block
    (LSTMSpec(4, 32, "float32", "single", True, allow_tf32=True), Problem(2, 9, True, False, 17)),  # sliced TF32
    (LSTMSpec(5, 128, "float16", "double", False), Problem(2, 19, True, True, 18)),  # clusters of 8 blocks of 16 units, groups of 2 rows
    (LSTMSpec(6, 256, "float16", "double", True), Problem(3, 20, True, True, 19)),   # clusters of 8, 10 groups of 2 rows
    (LSTMSpec(6, 512, "bfloat16", "single", True), Problem(2, 20, True, True, 22)),  # clusters of 16, 7 groups of 3 rows, the last of 2
    (LSTMSpec(5, 200, "bfloat16", "double", False), Problem(3, 20, False, True, 23)),  # clusters of 25 units: no st.async
    (LSTMSpec(4, 250, "float32", "none", True, allow_tf32=True), Problem(2, 9, False, True, 21)),  # TF32 clusters of 8, fragments in smem
    (LSTMSpec(3, 300, "float32", "single", True, allow_tf32=True), Problem(2, 5, True, True, 20)),  # cooperative TF32, padded k tile
    (LSTMSpec(5, 128, "float32", "double", True), Problem(2, 19, True, True, 24)),   # strict float32 (3xTF32): clusters of 8
    (LSTMSpec(4, 200, "float32", "none", False), Problem(2, 9, False, True, 25)),    # 3xTF32 clusters of 16, the last block 5 units
    (LSTMSpec(6, 100, "float64", "single", True), Problem(2, 19, True, True, 26)),   # float64 FMA clusters of 8, st.async.b64
    (LSTMSpec(4, 256, "float64", "double", False), Problem(2, 33, True, True, 27)),  # float64 FMA clusters of 16, 7 groups of 5 rows (one pass), the last of 3
    (LSTMSpec(4, 128, "float64", "double", True), Problem(2, 245, True, True, 36)),  # FMA, 15 groups of 17 rows (kernels for 20), the last of 7
    (LSTMSpec(4, 128, "float16", "single", True), Problem(2, 250, True, True, 38)),  # groups of 17 rows in kernels for 24, of the plan's 64
]
# Batches past what the backward's groups take in one turn of the H200's clusters (15 of 8
# blocks, 7 of 16): their forward runs in groups of more rows (Plan.wide_forward_step), or fails.
WIDE_GRID = [
    (LSTMSpec(4, 128, "float64", "double", True), Problem(2, 330, True, True, 44)),  # FMA: 20 rows x 15 clusters < 330
    (LSTMSpec(5, 512, "float16", "single", False), Problem(2, 117, True, True, 37)), # tensor cores, clusters of 16
]
# The stepwise recurrence (a cuBLAS GEMM and a cell kernel a step), forced on small shapes.
STEPWISE_GRID = [
    (LSTMSpec(5, 37, "float32", "double", True), Problem(3, 9, True, True, 29)),     # odd H
    (LSTMSpec(4, 200, "float16", "single", False), Problem(2, 19, False, True, 30)),  # no h0: no GEMM at t = 0
    (LSTMSpec(6, 64, "float64", "none", True), Problem(3, 5, True, False, 31)),      # float64: one DMMA kernel a step
    (LSTMSpec(5, 40, "float64", "double", True), Problem(3, 19, True, True, 42)),   # the same, rows past the batch
    (LSTMSpec(5, 36, "float64", "single", True), Problem(3, 9, True, True, 43)),   # float64 H not a multiple of 8: cuBLAS
    (LSTMSpec(3, 130, "bfloat16", "double", True), Problem(2, 33, True, True, 32)),
    (LSTMSpec(5, 96, "float32", "double", True), Problem(3, 21, True, True, 39)),    # strict float32: 3xTF32 step
]

# Called on one layer until its forward replays the graph captured from an earlier call
# (runtime/replay.py): a grid barrier a step, h by tagged words, clusters.
REPLAYED_GRID = [
    (LSTMSpec(17, 261, "float32", "none", True), Problem(3, 15, True, False, 3)),
    (LSTMSpec(6, 1024, "float16", "single", True), Problem(3, 8, False, True, 33)),
    (LSTMSpec(6, 256, "float16", "double", True), Problem(3, 20, True, True, 19)),
]
_CALLS_TO_REPLAY = 6
# Under compute-sanitizer CuPy's pool hands each call new buffers (bench/NOTES.md v15: every
# address of the replay key changed, call after call), so a forward never replays there; its
# kernels and arguments are those of the direct launches it checks. `.ci/gpu sanitize` runs
# the workload without a sanitizer first, where the replays must happen, and the tools with
# SANITIZE_EXPECT_REPLAYS=0.
expect_replays = os.environ.get("SANITIZE_EXPECT_REPLAYS", "1") == "1"

replayed = []  # whether each persistent forward replayed a graph
_run = replay.run


def _run_and_record(key, *args):
    if key[0] == "persistent forward":
        replayed.append(key in replay._graphs)
    return _run(key, *args)


replay.run = _run_and_record

# SANITIZE_MATCH, if set, keeps the entries whose plan summary (the forced stepwise entries:
# "stepwise recurrence"; ", wide forward" appended where the batch runs it) it matches, a
# regular expression searched anywhere in it (e.g. "clusters of", or the cooperative
# tensor-core kernels: "blocks x 256 threads, \d+ units/block, W_hh slice in registers( and shared memory)? as mma"),
# so that a kernel change can be checked within one device call.
match = re.compile(os.environ.get("SANITIZE_MATCH", ""))


def could_match(spec: LSTMSpec, recurrence: str) -> bool:
    """Whether an entry's kind can match SANITIZE_MATCH, judged without compiling (compiling
    every entry to read its plan's summary took longer than a stage's limit, bench/NOTES.md
    v25): from plan_layer's plan for this GPU and, where it has clusters past the portable
    size, the plan load_kernels may fall back to, each with ", wide forward" where it has a
    wide forward step."""
    if recurrence != "persistent":
        return bool(match.search("stepwise recurrence"))
    target = current_target()
    plans = [plan_layer(spec, target)]
    if plans[0].non_portable_cluster:
        plans.append(plan_layer(spec, portable_target(target)))
    return any(match.search(plan.summary() + (", wide forward" if plan.wide_forward_step else "")) for plan in plans)


failures = matched = 0
runs = [(spec, problem, "persistent", False) for spec, problem in GRID + WIDE_GRID]
runs += [(*entry, "persistent", True) for entry in REPLAYED_GRID]
runs += [(*entry, "stepwise", False) for entry in STEPWISE_GRID]
for spec, problem, recurrence, until_replayed in runs:
    if not could_match(spec, recurrence):
        continue
    kernels = load_kernels(spec)
    kind = kernels.plan.summary() if recurrence == "persistent" else "stepwise recurrence"
    plan = kernels.plan
    wide = (recurrence == "persistent" and plan.batch_sliced
            and plan.staged_rows("forward", problem.batch, kernels.clusters) > plan.forward_chunk_rows)
    kind += ", wide forward" if wide else ""
    if not match.search(kind):
        continue
    matched += 1
    if (spec, problem) in WIDE_GRID and not wide:
        print(f"{spec.describe()} {problem}: meant for the wide forward, which this GPU's {kernels.clusters} "
              f"clusters do not take")
        failures += 1
    if until_replayed:
        # Replays need each call to get the earlier call's buffers back from CuPy's pool: start
        # from an empty one, whatever the entries before left in it. (v14 blamed failed replays
        # on WIDE_GRID's batches splitting the pool; v15 found them failing only under
        # compute-sanitizer, which no pool state changes: bench/NOTES.md v15.)
        cupy.get_default_memory_pool().free_all_blocks()
    layer = Layer(spec, seed=0, recurrence=recurrence)
    replayed.clear()
    for call in range(_CALLS_TO_REPLAY if until_replayed else 1):
        report = check_layer(layer, problem)
        print(f"{spec.describe()} {problem}{f' call {call + 1}' if until_replayed else ''} [{kind}]: "
              f"{'ok' if not report else 'MISMATCH'}{' (replayed)' if replayed[-1:] == [True] else ''}")
        for line in report:
            print("  " + line)
        failures += bool(report)
        if replayed[-1:] == [True]:
            break
    if until_replayed and replayed[-1:] != [True]:
        print(f"  no replay in {_CALLS_TO_REPLAY} calls")
        failures += expect_replays
if not matched:
    print(f"no entry's plan summary matches SANITIZE_MATCH={match.pattern!r}")
sys.exit(1 if failures or not matched else 0)
