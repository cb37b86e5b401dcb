"""GPU tier: runtime behaviour beyond the property run — sequence lengths served by one
module, batch splitting, inference mode, determinism, stacks, weight import, errors."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from lstmgen import reference  # noqa: E402
from lstmgen.codegen import LSTMSpec, ModelSpec, sized_plan  # noqa: E402
from lstmgen.compare import mismatches, tolerance_key  # noqa: E402
from lstmgen.dtypes import numpy_dtype  # noqa: E402
from lstmgen.errors import GPUOutOfMemoryError, InputError  # noqa: E402
from lstmgen.runtime import Layer, Model, load  # noqa: E402
from lstmgen.runtime.compile import load_kernels  # noqa: E402
from lstmgen.strategies import Problem  # noqa: E402
from lstmgen.verify import check_layer  # noqa: E402

pytestmark = pytest.mark.gpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def uniform(rng, *shape, dtype="float32"):
    return cupy.asarray(rng.uniform(-1, 1, shape).astype(numpy_dtype(dtype)))


@pytest.mark.parametrize("steps", [1, 7, 5000])
def test_one_module_serves_every_sequence_length(steps):
    spec = LSTMSpec(input_size=3, hidden_size=9, dtype="float64", return_sequences=True)
    report = check_layer(Layer(spec, seed=1), Problem(steps, 3, True, True, seed=steps))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("dtype, hidden, place, batch", [
    ("float32", 1100, "shared", 3), ("float64", 384, "shared", 3),
    ("float32", 1100, "shared", 20),   # several staged chunks each way (16 and 4 rows)
    ("float32", 1400, "split", 3),     # shared memory, the rest of each row from L2
    ("float32", 2000, "split", 13),    # chunks of 8 and 4 rows: passes of 4 and 1
    ("float32", 4300, "split", 3),     # 33 units per block: warps take several units
    ("float64", 960, "split", 5),      # forward in registers and shared memory, none from L2
    ("float64", 913, "split", 3),      # the same with rows of 561 in shared memory, ending mid-warp
    ("float64", 1024, "split", 8),     # registers, shared memory and L2, as the bench's cells
    ("float64", 1024, "split", 11),    # forward chunks of 8 and 3 rows, backward of 4 and 3
    ("float32", 1400, "split", 8),     # the backward's inputs copied into shared memory, passes of 8 rows
    ("float16", 2001, "global", 3),    # 16 bits, all of W_hh in L2 (inputs in registers: no cp.async of 2 bytes)
])
def test_weights_outside_registers(dtype, hidden, place, batch):
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, bias="single")
    assert load_kernels(spec).plan.weights_in == place
    report = check_layer(Layer(spec, seed=1), Problem(4, batch, True, True, seed=2))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("dtype, hidden, batch, math", [
    ("float16", 1056, 70, "mma"),    # the register limit; 3 staged chunks each way, the last partial
    ("bfloat16", 1024, 8, "mma"),    # two m tiles forward, one n tile
    ("bfloat16", 555, 41, "mma"),    # odd H: rows not aligned for 16-byte staging, zero-padded k tiles
    ("float16", 513, 1, "mma"),      # 4 units per block, the last block's 3 of them padding
    ("bfloat16", 1057, 5, "fma"),    # past the register limit: the FMA kernels in 16 bits
    ("tf32", 576, 70, "mma"),        # float32 with TF32 allowed, at its register limit
    ("tf32", 1056, 19, "mma"),       # TF32 fragments partly in shared memory, at their limit
    ("tf32", 1000, 9, "mma"),        # the same, each warp both m tiles (the second's fragments in shared memory too)
    ("tf32", 1064, 3, "fma"),        # past it: strict float32 on the FMA kernels
    ("tf32", 300, 3, "mma"),         # K = 300: a zero-padded k tile of 8
])
def test_layers_on_tensor_cores_and_past_them(dtype, hidden, batch, math):
    # Cooperative kernels: a grid barrier a step, or at a few rows tagged words of h
    # (Plan.tagged_exchange_batch: bfloat16 1024 at B = 8, TF32 300 and the FMA TF32 1064
    # at B = 3 here; more in the next test); smaller H is batch-sliced (below).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    bias="double", allow_tf32=dtype == "tf32")
    plan = load_kernels(spec).plan
    assert plan.math == math and not plan.batch_sliced
    report = check_layer(Layer(spec, seed=3), Problem(5, batch, True, True, seed=4))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("dtype, hidden, batch", [
    ("float16", 1024, 8),    # tensor cores, 4-byte words
    ("float16", 1024, 1),    # one row: each warp copies its own k tiles, a vector a lane (stage_own_k_tiles)
    ("bfloat16", 604, 1),    # the same, 20 of a warp's lanes: 5 k tiles a warp, the last past k = 604
    ("tf32", 1000, 1),       # TF32 keeps the block's staging at one row: 250 vectors, one a thread
    ("float16", 1056, 1),    # 9 k tiles a warp, 36 vectors: the block's threads copy the row (stage_tagged)
    ("float32", 516, 1),     # FMA, 129 vectors
    ("float64", 512, 1),     # FMA, 256 vectors of 2 words: one a thread
    ("float64", 514, 1),     # 257 vectors: one past the threads, so rounds of IN_FLIGHT
    ("tf32", 300, 3),        # 225 vectors over 3 padded staged rows: one a thread
    ("bfloat16", 604, 3),    # rows of 151 vectors of 4 words
    ("tf32", 300, 27),       # the tag in h's last bit, the most rows that send words at H = 300
    ("tf32", 512, 1),
    ("float32", 1024, 8),    # the warp-per-unit FMA kernel
    ("float32", 516, 7),     # FMA, rows of 129 vectors of 4 words
    ("float64", 514, 7),     # 8-byte words, rows of 257 vectors of 2
    ("float64", 1024, 4),    # W_hh split between registers, shared memory and L2
    ("bfloat16", 1060, 5),   # 16-bit FMA past the tensor cores' limit, W_hh in shared memory
])
def test_tagged_exchange_of_h_over_lengths_and_calls(dtype, hidden, batch):
    # The cooperative forward kernels wait on h_t's words tagged with t, not on a grid
    # barrier, up to Plan.tagged_exchange_batch rows (past them, most cases of the test
    # before).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    allow_tf32=dtype == "tf32")
    _check_tagged_exchange(Layer(spec, seed=7, recurrence="persistent"), batch)


def test_tagged_exchange_of_two_staged_chunks_on_gpus_before_ampere(monkeypatch):
    # Without TF32 tensor cores (before sm_80) strict float32 H = 8 runs on 8 cooperative FMA
    # blocks, and B = 100 takes two staged chunks, each waiting for its own rows' words. Such
    # a GPU's plan runs here (from sm_80 on, H = 8 is batch-sliced).
    from dataclasses import replace

    from lstmgen.runtime import compile as compile_module

    target = replace(compile_module.current_target(), arch="sm_75", max_cluster_blocks=1)
    monkeypatch.setattr(compile_module, "current_target", lambda: target)
    spec = LSTMSpec(input_size=17, hidden_size=8, dtype="float32")  # input_size 17: no other test's kernels
    layer = Layer(spec, seed=7, recurrence="persistent")
    assert layer.kernels.plan.math == "fma" and not layer.kernels.plan.batch_sliced
    _check_tagged_exchange(layer, 100)


def test_tagged_exchange_of_two_staged_chunks_on_tensor_cores(monkeypatch):
    # On an sm_80 GPU (no clusters) TF32 H = 68 runs on cooperative tensor-core blocks that send
    # tagged words up to 120 rows, past their 64 staged rows: B = 100 takes two chunks, the
    # second partial, each loading its Gx and cells at the end of the chunk before. Such a
    # GPU's plan runs here (the H200's are batch-sliced at this H).
    from dataclasses import replace

    from lstmgen.runtime import compile as compile_module

    target = replace(compile_module.current_target(), arch="sm_80", max_cluster_blocks=1)
    monkeypatch.setattr(compile_module, "current_target", lambda: target)
    spec = LSTMSpec(input_size=19, hidden_size=68, dtype="float32", allow_tf32=True)  # input_size 19: no other test's kernels
    layer = Layer(spec, seed=7, recurrence="persistent")
    plan = layer.kernels.plan
    assert plan.math == "mma" and not plan.batch_sliced and plan.forward_chunk_rows < 100 <= plan.tagged_exchange_batch
    _check_tagged_exchange(layer, 100)


def _check_tagged_exchange(layer: Layer, batch: int) -> None:
    """Successive calls of one layer run on the same pooled buffers: a call's first steps must
    wait for their own words, not take an earlier call's, with and without h0, from one step
    to many."""
    assert batch <= layer.kernels.plan.tagged_exchange_batch
    exchanges = []
    exchange = layer._exchange
    layer._exchange = lambda rows: exchanges.append(exchange(rows)) or exchanges[-1]
    for steps, initial_state in [(3, False), (2, True), (1, False), (40, True)]:
        report = check_layer(layer, Problem(steps, batch, initial_state, initial_state, seed=steps))
        assert not report, f"{steps} steps:\n" + "\n".join(report)
    # Every forward (one a problem) sent its h through a buffer of words.
    assert len(exchanges) == 4 and all(buffer is not None for (buffer,) in exchanges)


@pytest.mark.parametrize("dtype, hidden, batch, initial_state", [
    # One block holds all of W_hh, its kernels multiply n tiles of 8 rows; groups spread the
    # batch over the 132 blocks that run at once (clusters: 15 of 8 blocks, 7 of 16).
    ("float16", 64, 9, True),        # 2 m tiles a warp; a row a block
    ("bfloat16", 64, 37, False),     # zero initial state (no product at t = 0)
    ("float16", 8, 401, True),       # groups of 4 rows, the last of 1
    ("tf32", 32, 5, True),           # TF32: 8 forward m tiles, K split 4 ways backward
    ("bfloat16", 3, 2, False),       # fragments mostly padding, rows shorter than a vector
    ("bfloat16", 11, 17, True),      # 3 forward m tiles padded to 4
    # Clusters: each block a slice of the units, the staged rows in every block's shared memory,
    # sent by st.async where each block's slice is whole 4-byte words, else by plain stores.
    ("float16", 72, 20, True),       # 8 blocks of 9 units (plain stores); groups of 2 rows
    ("bfloat16", 112, 11, True),     # 8 blocks of 14 units (forward: st.async, pairs of units)
    ("float16", 128, 9, True),       # 8 blocks of 16 units, the bench's smallest H
    ("tf32", 37, 3, True),           # 8 blocks of 5 units, the last 2 (st.async); K = 37: a zero-padded k tile of 8
    ("float16", 256, 8, True),       # 8 blocks of 32 units, a row a cluster
    ("bfloat16", 200, 37, False),    # 8 blocks of 25 units (padded m tiles); groups of 3 rows, the last of 1
    ("float16", 130, 21, True),      # 8 blocks of 17 units, the last 11
    ("tf32", 70, 3, True),           # 8 blocks of 9 units, the last 7
    ("tf32", 128, 9, False),         # 8 blocks of 16 units
    ("tf32", 250, 20, True),         # 8 blocks of 32, the last 26; fragments partly in shared memory
    # Clusters of 16 blocks (non-portable), 16 bits from H = 257: fragments partly in shared memory.
    ("float16", 512, 8, True),       # 16 blocks of 32 units, groups of 2 rows
    ("float16", 500, 37, True),      # 16 blocks of 32 units, the last 20 (st.async: fewer bytes to expect)
    ("float16", 250, 37, False),     # 8 blocks of 32 units, the last 26 (st.async); groups of 3 rows, the last of 1
    ("bfloat16", 300, 37, False),    # 16 blocks of 19 units, the last 15; groups of 6 rows, the last of 1
    # Strict float32 as 3xTF32 (two fragments a tile), the staged rows sent by st.async.
    ("float32", 128, 37, True),      # 8 blocks of 16 units: K split 2 ways forward, 8 backward
    ("float32", 100, 9, False),      # 8 blocks of 13 units, the last 9; a wide forward of 56 rows
    ("float32", 40, 20, True),       # 8 blocks of 5 units: 2 forward m tiles, K split 4 ways
    ("float32", 256, 37, True),      # 16 blocks of 16 units, 4 of 16 backward k tiles a warp in shared memory
    ("float32", 200, 3, False),      # 16 blocks of 13 units, the last 5
    ("float64", 128, 37, True),      # float64 (st.async.b64): 8 blocks of 16 units, 32 weights a thread
    # FMA groups of up to 8 rows (5 where a thread keeps over 256 bytes of weights) take one pass of their own.
    ("float64", 256, 20, True),      # 16 blocks of 16 units, 64 weights a thread; 7 groups of 3 rows, the last of 2
    ("float64", 256, 8, False),      # 4 clusters, a group of 2 rows each
    ("float64", 256, 33, True),      # 7 clusters, groups of 5 rows in one pass, the last of 3
    ("float64", 256, 40, False),     # 7 groups of 6 rows, the last of 4, in kernels of 8 rows in passes of 4 (6 would spill)
    ("float64", 128, 7, True),       # 7 clusters of one row each
    ("float64", 128, 120, False),    # 15 clusters, groups of 8 rows in one pass
    ("float64", 100, 9, False),      # 8 blocks of 13 units, the last 9
    ("float64", 40, 20, True),       # 4 blocks of 10 units, parts of K padded to whole 16 bytes
])
def test_batch_sliced_layers(dtype, hidden, batch, initial_state):
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    bias="double", allow_tf32=dtype == "tf32")
    assert load_kernels(spec).plan.batch_sliced
    report = check_layer(Layer(spec, seed=7), Problem(6, batch, initial_state, initial_state, seed=8))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("dtype, hidden, batch, arch", [
    ("float16", 72, 20, "sm_80"),     # 18 forward m tiles padded to 24, 3 a warp
    ("bfloat16", 112, 11, "sm_80"),   # fragments past 4 (forward) and 18 (backward) k tiles a warp in shared memory
    ("float16", 128, 9, "sm_80"),     # the 16-bit limit of one block
    ("float32", 64, 20, "sm_80"),     # strict float32 (3xTF32)
    ("float32", 64, 20, "sm_75"),     # strict float32 without TF32 tensor cores: FMA
    ("float64", 64, 9, "sm_80"),      # float64 (FMA)
])
def test_batch_sliced_single_blocks_of_gpus_without_clusters(monkeypatch, dtype, hidden, batch, arch):
    # Before sm_90 there are no clusters, so one block holds W_hh up to H = 128 in 16 bits,
    # with fragments in shared memory past the register budget, and to H = 64 in strict
    # float32 and float64; those kernels run here.
    from dataclasses import replace

    from lstmgen.runtime import compile as compile_module

    target = replace(compile_module.current_target(), arch=arch, max_cluster_blocks=1)
    monkeypatch.setattr(compile_module, "current_target", lambda: target)
    # input_size 13 (14 for sm_75): no other test's kernels, which load_kernels caches by spec
    spec = LSTMSpec(input_size=13 + (arch == "sm_75"), hidden_size=hidden, dtype=dtype)
    plan = load_kernels(spec).plan
    assert plan.batch_sliced and plan.cluster_blocks == 1
    assert plan.math == ("fma" if dtype == "float64" or arch == "sm_75" else "mma")
    report = check_layer(Layer(spec, seed=11), Problem(4, batch, True, True, seed=12))
    assert not report, "\n".join(report)


def test_the_driver_says_how_many_clusters_run_at_once():
    # cuOccupancyMaxActiveClusters, through ctypes: a wrong structure or handle would fail
    # (None) or answer nonsense, and the launch sizes its groups of rows by the answer.
    kernels = load_kernels(LSTMSpec(input_size=5, hidden_size=256, dtype="float16"))
    plan = kernels.plan
    assert plan.cluster_blocks == 8
    assert kernels.clusters is not None and 1 <= kernels.clusters <= plan.num_blocks // plan.cluster_blocks


def test_layers_plan_portable_clusters_where_no_gpc_holds_16_blocks(monkeypatch):
    # Whether a GPC holds a cluster of 16 blocks at one block an SM is the driver's to say;
    # where it says none, the layer is planned again with clusters of at most 8 blocks.
    from lstmgen.runtime import compile as compile_module

    counted = compile_module.running_clusters

    def none_past_8(spec, plan, counts):
        return counted(spec, plan, [0] * len(counts) if plan.cluster_blocks > 8 else counts)

    monkeypatch.setattr(compile_module, "running_clusters", none_past_8)
    spec = LSTMSpec(input_size=17, hidden_size=300, dtype="float16")  # input_size 17: no other test's kernels
    assert load_kernels(spec).plan.cluster_blocks <= 8
    report = check_layer(Layer(spec, seed=13), Problem(3, 9, True, True, seed=14))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("dtype, hidden, batch, steps, initial_state, return_sequences", [
    ("float32", 37, 9, 4, True, True),        # odd H: (row, unit) threads straddle rows
    ("float32", 300, 70, 3, False, True),     # zero initial state: no GEMM at t = 0
    ("float32", 64, 70, 3, True, True),       # strict float32: the forward GEMM as three TF32 products
    ("float32", 64, 5, 1, True, False),       # one step of them, from h0 alone
    ("tf32", 128, 33, 3, True, False),        # TF32 GEMMs; y = h_T
    ("float64", 256, 5, 1, True, True),       # one step: backward's first step is its last (forward: one DMMA kernel)
    ("float64", 1, 3, 5, False, False),
    ("float16", 200, 19, 3, True, True),      # float16 products, float32 sums and cell
    ("bfloat16", 77, 8, 4, False, False),
    ("bfloat16", 1024, 40, 2, True, True),
])
def test_stepwise_recurrence_matches_reference(dtype, hidden, batch, steps, initial_state, return_sequences):
    # The stepwise recurrence (a cuBLAS GEMM and a cell kernel a step; float64's forward at
    # small batch x H^2 one DMMA kernel) runs large batches (Plan.stepwise_from_batch); here it
    # is forced on small shapes of every kind.
    spec = LSTMSpec(input_size=6, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype, bias="double",
                    return_sequences=return_sequences, allow_tf32=dtype == "tf32")
    report = check_layer(Layer(spec, seed=21, recurrence="stepwise"),
                         Problem(steps, batch, initial_state, initial_state, seed=22))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("hidden, batch, initial_state, one_kernel", [
    (40, 19, True, True),     # rows past the batch in both m tiles of the last block
    (96, 37, False, True),    # zero initial state: no product at t = 0
    (264, 8, True, True),     # 8 units a block: H a multiple of 8, not of 16 or 32
    (512, 16, True, True),    # the most rows at H = 512 (Plan.dmma_step_until_batch)
    (512, 17, True, False),   # past them: a cuBLAS GEMM and the cell kernel
    (100, 9, True, False),    # H not a multiple of 8
])
def test_float64_stepwise_forward_step_is_one_dmma_kernel(monkeypatch, hidden, batch, initial_state, one_kernel):
    # float64's stepwise forward step is one kernel, the product on the FP64 tensor cores and
    # the cell on it, up to Plan.dmma_step_until_batch rows: no cuBLAS GEMM over W_hh runs
    # forward there; past it, one a step.
    from lstmgen.runtime import stepwise
    from lstmgen.runtime.gemm import Gemms

    step_gemms, dmma_forwards = [], []
    call, forward_dmma = Gemms.__call__, stepwise._forward_dmma

    def record(self, transpose_a, m, n, k, *args, **kwargs):
        if transpose_a and m == 4 * hidden and k == hidden:
            step_gemms.append(k)
        return call(self, transpose_a, m, n, k, *args, **kwargs)

    def record_dmma(*args, **kwargs):
        dmma_forwards.append(True)
        return forward_dmma(*args, **kwargs)

    monkeypatch.setattr(Gemms, "__call__", record)
    monkeypatch.setattr(stepwise, "_forward_dmma", record_dmma)
    spec = LSTMSpec(input_size=6, hidden_size=hidden, dtype="float64", bias="double", return_sequences=True)
    report = check_layer(Layer(spec, seed=27, recurrence="stepwise"),
                         Problem(4, batch, initial_state, initial_state, seed=28))
    assert not report, "\n".join(report)
    assert bool(dmma_forwards) == one_kernel and bool(step_gemms) == (not one_kernel)


@pytest.mark.parametrize("return_sequences", [True, False])  # False: h_t in two slots, h_T returned
def test_float64_dmma_step_inference_replays_bitwise(monkeypatch, return_sequences):
    # Inference on float64's one-kernel DMMA step, called on the same shapes until its loop
    # replays as a CUDA graph: the first call agrees with the reference, and every call,
    # direct, captured or replayed, is bitwise the first.
    replayed = _record_replays(monkeypatch, "stepwise forward")
    spec = LSTMSpec(input_size=6, hidden_size=64, dtype="float64", bias="double", return_sequences=return_sequences)
    layer = Layer(spec, seed=29, recurrence="stepwise")
    rng = np.random.default_rng(30)
    x, h0, c0 = rng.uniform(-1, 1, (5, 20, 6)), rng.uniform(-1, 1, (20, 64)), rng.uniform(-1, 1, (20, 64))
    inputs = [cupy.asarray(value) for value in (x, h0, c0)]

    def outputs():  # on the host: the call's device arrays go back to the pool before the next
        # (training=False: a training call's cache would hold its buffers through the next call)
        y, (h_T, c_T) = layer.forward(*inputs, training=False)
        return [y.get(), h_T.get(), c_T.get()]

    calls = [outputs()]
    while replayed[-1:] != [True] and len(calls) < 6:
        calls.append(outputs())
    assert replayed[-1:] == [True], f"no replay in {len(calls)} calls"
    expected = reference.forward({name: value.get() for name, value in layer.params.items()}, x, h0, c0,
                                 return_sequences=return_sequences)
    for name, actual, wanted in zip(("y", "h_T", "c_T"), calls[0], (expected.y, expected.h_T, expected.c_T)):
        report = mismatches(name, actual, wanted, tolerance_key("float64", layer.kernels.plan.mma_type))
        assert not report, "\n".join(report)
    for call in calls[1:]:
        for first, again in zip(calls[0], call):
            np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("dtype, hidden, parts", [
    ("float64", 96, 4), ("float16", 48, 4), ("bfloat16", 40, 4), ("tf32", 40, 8),
    ("float32", 64, 1),  # strict float32: cuBLAS's FFMA kernels, whole
])
def test_the_stepwise_backward_gemm_runs_in_parts_of_4h(monkeypatch, dtype, hidden, parts):
    # A backward step's GEMM dG_t W_hh runs as one batched GEMM over parts of its inner
    # dimension 4H, whose products the next step's cell kernel sums; the last, dh0, whole.
    from lstmgen.runtime.gemm import Gemms

    asked = []
    call = Gemms.__call__

    def record(self, transpose_a, m, n, k, *args, k_parts=1, **kwargs):
        if k == 4 * hidden and m == hidden:  # not dx, whose m is the input size
            asked.append(k_parts)
        return call(self, transpose_a, m, n, k, *args, k_parts=k_parts, **kwargs)

    monkeypatch.setattr(Gemms, "__call__", record)
    spec = LSTMSpec(input_size=6, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype, bias="double",
                    return_sequences=True, allow_tf32=dtype == "tf32")
    report = check_layer(Layer(spec, seed=23, recurrence="stepwise"), Problem(5, 11, True, True, seed=24))
    assert not report, "\n".join(report)
    assert asked == [parts] * 4 + [1]  # steps 4 to 1, then dh0


@pytest.mark.parametrize("hidden, mma_type, recurrence", [
    (64, "tf32x3", "auto"), (256, "tf32x3", "auto"),  # batch-sliced: 3xTF32, clusters of 8 and 16 blocks
    (512, "", "auto"),                                 # cooperative FMA
    (512, "", "stepwise"),                             # a 3xTF32 GEMM and a cell kernel a step
])
def test_strict_float32_keeps_its_accuracy(hidden, mma_type, recurrence):
    # Strict float32 runs batch-sliced products as three TF32 products (3xTF32), and its
    # activations from __expf and __fdividef; its stepwise forward step is a 3xTF32 GEMM of
    # three products apart. Over 256 steps each output stays within 3e-6 of its scale from the
    # float64 kernels' (bench/NOTES.md v19 and v20 at T = 512: 5e-7 to 1.4e-6, as cuDNN's
    # float32; with TF32's hardware tanh in the 3xTF32 kernels, 1.0e-5 to 1.6e-5, and with
    # the projection as one 3xTF32 GEMM, 5.7e-6 at H = 512), forward and backward.
    from dataclasses import replace

    spec = LSTMSpec(input_size=hidden, hidden_size=hidden, dtype="float32", return_sequences=True)
    layer = Layer(spec, seed=5, recurrence=recurrence)
    assert layer.kernels.plan.mma_type == mma_type and layer.kernels.plan.tf32x3_gemms
    exact = Layer(replace(spec, dtype="float64"), seed=5)
    exact.set_parameters({name: value.astype(np.float64) for name, value in layer.params.items()})
    rng = np.random.default_rng(6)
    x, dy = uniform(rng, 256, 8, hidden), uniform(rng, 256, 8, hidden)
    outputs = {}
    for name, run in (("float32", layer), ("float64", exact)):
        y, (h_T, c_T) = run.forward(x.astype(run.spec.dtype))
        gradients = run.backward(dy.astype(run.spec.dtype))
        outputs[name] = {"y": y, "c_T": c_T, **{key: gradients[key] for key in ("dx", "dW_hh", "dW_ih", "dh0")}}
    errors = {}
    for key, expected in outputs["float64"].items():
        expected = expected.get()
        errors[key] = float(np.abs(outputs["float32"][key].get() - expected).max() / np.abs(expected).max())
    assert max(errors.values()) < 3e-6, errors


@pytest.mark.parametrize("hidden, batch, recurrence", [
    (64, 3, "persistent"),   # batch-sliced FMA kernels, in clusters
    (512, 2, "persistent"),  # cooperative FMA kernels
    (64, 9, "stepwise"),     # forward: one DMMA kernel a step; backward: the cell kernel
    (36, 9, "stepwise"),     # H not a multiple of 8: cuBLAS's GEMM and the cell kernel both ways
])
def test_float64_activations_keep_float64_accuracy(hidden, batch, recurrence):
    # With gates driven over about +-100 and, in one row, past where e^-x overflows (+-710),
    # every output and gradient of each float64 path stays within 1e-12 of its scale from the
    # NumPy reference (the tier's 1e-9 would let a wrong activation near saturation through:
    # bench/NOTES.md v23 measured 3e-16 to 3e-14); a NaN in x stays NaN in its row, as in
    # torch, and leaves the other rows alone.
    spec = LSTMSpec(input_size=6, hidden_size=hidden, dtype="float64", return_sequences=True)
    layer = Layer(spec, seed=31, recurrence=recurrence)
    rng = np.random.default_rng(32)
    params = {name: value.get() for name, value in layer.params.items()}
    params["W_ih"] = params["W_ih"] * 200 / np.abs(params["W_ih"]).max()
    layer.set_parameters(params)
    x = rng.uniform(-1, 1, (40, batch, 6))
    x[:, 0] *= 10  # row 0's gates past +-700
    dy = rng.uniform(-1, 1, (40, batch, hidden))
    expected = reference.forward(params, x)
    wanted = {"y": expected.y, "c_T": expected.c_T, **reference.backward(params, expected.cache, dy)}
    y, (_, c_T) = layer.forward(cupy.asarray(x))
    actual = {"y": y, "c_T": c_T, **layer.backward(cupy.asarray(dy))}
    errors = {name: float(np.abs(actual[name].get() - value).max() / np.abs(value).max())
              for name, value in wanted.items()}
    assert max(errors.values()) < 1e-12, errors

    x[7, 1, 2] = np.nan
    y = layer.forward(cupy.asarray(x), training=False)[0].get()
    assert np.isnan(y[7:, 1]).all() and not np.isnan(y[:7]).any()
    assert not np.isnan(np.delete(y, 1, axis=1)).any()


def test_tf32_halves_sum_to_their_float32_in_the_order_asked():
    from lstmgen.runtime.tf32_split import split_rows

    rng = np.random.default_rng(8)
    x = uniform(rng, 5, 37) * cupy.asarray(10.0 ** rng.uniform(-20, 20, (5, 37)), dtype=np.float32)
    for pattern in ("hlh", "hhl"):
        out = cupy.full((5, len(pattern) * 37), np.nan, dtype=np.float32)
        split_rows(x, out, pattern)
        parts = [out[:, 37 * part:37 * (part + 1)] for part in range(len(pattern))]
        high, low = parts[pattern.index("h")], parts[pattern.index("l")]
        assert all(bool((parts[part] == (high if half == "h" else low)).all()) for part, half in enumerate(pattern))
        assert not (high.view(np.uint32) & 0x1FFF).any()  # a TF32 value: 10 mantissa bits of float32's 23
        assert bool((high + low == x).all())
        assert bool((cupy.abs(low) <= cupy.abs(x) * 2.0 ** -11).all())  # rounded to nearest


@pytest.mark.parametrize("rows", [300, 1])  # 1: db's row of ones
@pytest.mark.parametrize("a_transposed, b_transposed", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype, largest_error", [
    ("float64", 1e-13), ("float32", 1e-5), ("tf32", 1e-2), ("float16", 1e-2), ("bfloat16", 1e-1)])
def test_layer_gemms_multiply_every_operand_layout_in_the_layers_math(dtype, largest_error, a_transposed,
                                                                     b_transposed, rows):
    from lstmgen.runtime.gemm import Gemms

    storage = "float32" if dtype == "tf32" else dtype
    spec = LSTMSpec(input_size=8, hidden_size=64, dtype=storage, allow_tf32=dtype == "tf32")
    rng = np.random.default_rng(3)
    inner, cols = 257, 70
    # An operand "transposed" is the .T view of a C-contiguous array, as the layer passes dG^T.
    a = uniform(rng, inner, rows, dtype=storage).T if a_transposed else uniform(rng, rows, inner, dtype=storage)
    b = uniform(rng, cols, inner, dtype=storage).T if b_transposed else uniform(rng, inner, cols, dtype=storage)
    exact = a.get().astype(np.float64) @ b.get().astype(np.float64)
    errors = {}
    # Outputs in storage and in the accumulation type (the stepwise products), with the
    # layer's math and kept exact (db's GEMM).
    for tf32_allowed in (True, False):
        for out_dtype in {numpy_dtype(storage), np.dtype("float64" if storage == "float64" else "float32")}:
            out = cupy.full((rows, cols), np.nan, dtype=out_dtype)
            Gemms(spec, tf32_allowed=tf32_allowed).matmul(a, b, out)
            error = np.abs(out.get().astype(np.float64) - exact).max() / np.abs(exact).max()
            assert error < largest_error, (tf32_allowed, out_dtype)
            errors[tf32_allowed, out_dtype.name] = error
    if dtype == "tf32":
        # Strict float32 would be near 1e-7: this error says the tensor cores ran TF32 where
        # allowed (cuBLAS may, not must: a single row may take a GEMV without them).
        assert errors[False, "float32"] < 1e-5
        assert rows == 1 or errors[True, "float32"] > 1e-5


@pytest.mark.parametrize("dtype, splits", [("float32", True), ("tf32", False), ("float16", False)])
def test_the_stepwise_forward_splits_strict_float32_into_tf32_halves(monkeypatch, dtype, splits):
    # On this GPU (sm_80 on) strict float32's step GEMMs take their operands as TF32 halves:
    # W_hh as [hi | hi | lo] and h0 as [hi | lo | hi] (the cell kernel splits each later h_t);
    # TF32 and 16-bit layers multiply them as stored.
    from lstmgen.runtime import tf32_split

    patterns = []
    split_rows = tf32_split.split_rows
    monkeypatch.setattr(tf32_split, "split_rows", lambda source, out, pattern: (
        patterns.append(pattern), split_rows(source, out, pattern)))
    spec = LSTMSpec(input_size=8, hidden_size=32, dtype="float32" if dtype == "tf32" else dtype,
                    allow_tf32=dtype == "tf32", return_sequences=True)
    report = check_layer(Layer(spec, seed=3, recurrence="stepwise"), Problem(4, 5, True, True, seed=4))
    assert not report, "\n".join(report)
    assert set(patterns) == ({"hhl", "hlh"} if splits else set())


@pytest.mark.parametrize("k_parts", [2, 4])
@pytest.mark.parametrize("a_transposed, b_transposed", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype, largest_error", [("float64", 1e-13), ("float32", 1e-5), ("float16", 1e-2)])
def test_a_gemm_in_parts_of_k_sums_to_the_product(dtype, largest_error, a_transposed, b_transposed, k_parts):
    # Column-major C[m, n] = op(A) op(B) as k_parts products of consecutive parts of k, each
    # operand stored as cuBLAS reads it (op T: the stored matrix is op(X)^T).
    from lstmgen.runtime.gemm import Gemms

    spec = LSTMSpec(input_size=8, hidden_size=64, dtype=dtype)
    gemms = Gemms(spec)
    rng = np.random.default_rng(5)
    m, n, k = 48, 20, 64
    # Column-major [rows, cols] is the row-major [cols, rows] array.
    a = uniform(rng, m, k, dtype=dtype) if a_transposed else uniform(rng, k, m, dtype=dtype)
    b = uniform(rng, k, n, dtype=dtype) if b_transposed else uniform(rng, n, k, dtype=dtype)
    op_a = a.get().astype(np.float64) if a_transposed else a.get().astype(np.float64).T
    op_b = b.get().astype(np.float64) if b_transposed else b.get().astype(np.float64).T
    exact = op_a @ op_b  # [m, n]
    accumulate = "float64" if dtype == "float64" else "float32"
    parts = cupy.full((k_parts, n, m), np.nan, dtype=accumulate)
    gemms.bind(cupy.cuda.get_current_stream())
    gemms(a_transposed, m, n, k, a.data.ptr, a.shape[1], b.data.ptr, b.shape[1], parts.data.ptr, m,
          gemms.accumulate_type, transpose_b=b_transposed, k_parts=k_parts)
    products = parts.get().astype(np.float64).transpose(0, 2, 1)  # [part, m, n]
    step = k // k_parts
    for part, product in enumerate(products):
        expected = op_a[:, part * step:(part + 1) * step] @ op_b[part * step:(part + 1) * step]
        assert np.abs(product - expected).max() / np.abs(expected).max() < largest_error, part
    assert np.abs(products.sum(0) - exact).max() / np.abs(exact).max() < largest_error


@pytest.mark.parametrize("forward_by, backward_by", [("persistent", "stepwise"), ("stepwise", "persistent")])
def test_either_recurrence_backpropagates_the_others_forward(forward_by, backward_by):
    # Both kinds read and write the training cache in the same layout, so either backward
    # consumes either forward: what lets each pass choose its kind on its own.
    spec = LSTMSpec(input_size=5, hidden_size=96, dtype="float32", bias="single")
    rng = np.random.default_rng(23)
    x, h0, c0, dy = uniform(rng, 6, 11, 5), uniform(rng, 11, 96), uniform(rng, 11, 96), uniform(rng, 6, 11, 96)
    mixed, plain = Layer(spec, seed=24, recurrence=forward_by), Layer(spec, seed=24, recurrence=backward_by)
    mixed.forward(x, h0, c0)
    mixed.recurrence = backward_by
    plain.forward(x, h0, c0)
    expected = plain.backward(dy)
    for name, value in mixed.backward(dy).items():
        report = mismatches(name, value.get(), expected[name].get(), "float32")
        assert not report, "\n".join(report)


def _fresh_replay_caches(monkeypatch):
    """runtime/replay.py with nothing seen, captured or refused yet."""
    from collections import OrderedDict

    from lstmgen.runtime import replay

    for name in ("_seen", "_graphs", "_uncapturable"):
        monkeypatch.setattr(replay, name, OrderedDict())
    return replay


def _record_replays(monkeypatch, kind: str) -> list:
    """Whether each call of replay.run from now on whose key starts with `kind` ("stepwise",
    "persistent forward") replays a captured graph, with fresh caches."""
    replay = _fresh_replay_caches(monkeypatch)
    replayed = []
    run = replay.run

    def run_and_record(key, *args):
        if key[0].startswith(kind):
            replayed.append(key in replay._graphs)
        return run(key, *args)

    monkeypatch.setattr(replay, "run", run_and_record)
    return replayed


@pytest.mark.parametrize("dtype", ["float64", "float32"])  # float32: the 3xTF32 step (runtime/tf32_split.py)
def test_auto_recurrence_goes_stepwise_at_the_planned_batch_when_the_loop_replays(monkeypatch, dtype):
    # "auto" runs the stepwise recurrence from Plan.stepwise_from_batch, and there only for
    # calls that replay a captured loop: a call on new buffers runs the persistent kernels.
    # The first stepwise call is a capture, whose graph must split W_hh and h0 again on every
    # replay: W_hh changes in place between calls here.
    replay = _fresh_replay_caches(monkeypatch)
    ran = []
    run = replay.run

    def run_and_record(key, *args, **kwargs):
        result = run(key, *args, **kwargs)
        if key[0].startswith("stepwise"):
            ran.append(result)
        return result

    monkeypatch.setattr(replay, "run", run_and_record)
    spec = LSTMSpec(input_size=8, hidden_size=512, dtype=dtype)
    plan = load_kernels(spec).plan
    from_batch = plan.stepwise_from_batch
    layer = Layer(spec, seed=25)
    # Below both directions' batches (float32's backward goes stepwise at fewer rows).
    below = min(from_batch, plan.stepwise_backward_from_batch) - 1
    report = check_layer(layer, Problem(3, below, True, True, seed=26))
    assert not report and ran == [], "\n".join(report)
    # New data each call (a replay on an earlier call's inputs would fail), the same shapes.
    for seed in range(5):
        layer.params["W_hh"] *= 0.9
        report = check_layer(layer, Problem(3, from_batch, True, True, seed=seed))
        assert not report, "\n".join(report)
    # Forward and backward each, per set of buffers CuPy's pool hands out (measured: the
    # same every call, or every other call, and not always as many sets each way):
    # persistent on new buffers, then captured and replayed.
    stepwise_graphs = [key[0] for key in replay._graphs if key[0].startswith("stepwise")]
    assert ran[:2] == [False, False] and ran[-2:] == [True, True]
    assert sorted(set(stepwise_graphs)) == ["stepwise backward", "stepwise forward"] and len(stepwise_graphs) <= 4


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_auto_recurrence_places_each_direction_at_its_own_batch(monkeypatch, dtype):
    # float32's backward goes stepwise at fewer rows than its forward, float16's clusters
    # (H = 512) keep their forward persistent: past the backward's batch only backward asks
    # for a replay, and it backpropagates the persistent forward.
    replay = _fresh_replay_caches(monkeypatch)
    directions = []
    run = replay.run
    monkeypatch.setattr(replay, "run", lambda key, *args: directions.append(key[0]) or run(key, *args))
    spec = LSTMSpec(input_size=8, hidden_size=512, dtype=dtype)
    plan = load_kernels(spec).plan
    assert plan.stepwise_backward_from_batch < (plan.stepwise_from_batch or float("inf"))
    layer = Layer(spec, seed=27)
    for seed in range(5):
        report = check_layer(layer, Problem(3, plan.stepwise_backward_from_batch, True, True, seed=seed))
        assert not report, "\n".join(report)
    assert set(directions) == {"persistent forward", "stepwise backward"}
    assert any(key[0] == "stepwise backward" for key in replay._graphs)


@pytest.mark.parametrize("dtype, hidden, steps, initial_state", [
    ("float16", 64, 3, True), ("float16", 64, 3, False), ("float16", 64, 1, True),
    ("float16", 256, 3, True), ("float16", 256, 1, False),  # clusters of 8 blocks
    ("float16", 512, 2, True),                              # clusters of 16
    ("float16", 512, 5, True),                              # both staged buffers of each group, by st.async
    ("float32", 128, 3, True),                              # strict float32: clusters of 8 (3xTF32)
    ("float64", 128, 2, False),                             # float64: clusters of 8 FMA blocks
])
def test_batch_sliced_blocks_take_several_groups_in_turn(monkeypatch, dtype, hidden, steps, initial_state):
    # More groups of rows than the GPU runs blocks (clusters) at once, both ways, the forward
    # in groups of its wide step's rows where the plan has one: each runs its groups one after
    # another, each from its given or a zero state; at T = 1 backward's first step is also its last.
    spec = LSTMSpec(input_size=5, hidden_size=hidden, dtype=dtype)
    kernels = load_kernels(spec)
    plan = kernels.plan
    running = kernels.clusters or plan.num_blocks // plan.cluster_blocks
    forward_rows = (plan.wide_forward_step or plan.forward_step).chunk_rows
    batch = running * forward_rows + 5
    expected = [sized_plan(spec, plan, "forward", forward_rows), sized_plan(spec, plan, "backward", plan.backward_chunk_rows)]
    for kernel_plan in expected:
        assert kernel_plan.blocks(batch, running) == running * plan.cluster_blocks
    launched = _record_launched_plans(monkeypatch)
    report = check_layer(Layer(spec, seed=9, recurrence="persistent"),
                         Problem(steps, batch, initial_state, initial_state, seed=10))
    assert not report, "\n".join(report)
    assert launched == expected  # forward, then backward


def _record_launched_plans(monkeypatch) -> list:
    """The plan of every recurrence kernel that layers launch from now on, in order."""
    launched, launch = [], Layer._launch

    def recorded(layer, kernel, plan, args, batch):
        launched.append(plan)
        return launch(layer, kernel, plan, args, batch)

    monkeypatch.setattr(Layer, "_launch", recorded)
    return launched


@pytest.mark.parametrize("dtype, hidden, allow_tf32", [
    ("float64", 128, False),  # FMA clusters of 8: 20 rows a group, 48 in the wide forward
    ("float32", 256, False),  # strict float32 (3xTF32), clusters of 16
    ("float32", 256, True),   # TF32 tensor cores, clusters of 8
    ("float16", 512, False),  # 16-bit tensor cores, clusters of 16
])
def test_wide_forward_takes_in_one_turn_what_the_backward_takes_in_two(monkeypatch, dtype, hidden, allow_tf32):
    spec = LSTMSpec(input_size=7, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    kernels = load_kernels(spec)
    plan = kernels.plan
    running = kernels.clusters or plan.num_blocks // plan.cluster_blocks
    chunk = plan.backward_chunk_rows
    batch = running * chunk + 3
    more = chunk + plan.rows_per_pass  # a pass of rows more: an n tile of 8 on tensor cores, 4 rows on FMA
    assert plan.staged_rows("forward", batch, running) == more <= plan.wide_forward_step.chunk_rows
    launched = _record_launched_plans(monkeypatch)
    layer = Layer(spec, seed=11, recurrence="persistent")
    report = check_layer(layer, Problem(4, batch, True, False, seed=12))
    assert not report, "\n".join(report)
    # The forward in one turn of groups of a pass more, the backward in two of chunk rows.
    assert launched == [sized_plan(spec, plan, "forward", more), sized_plan(spec, plan, "backward", chunk)]
    assert launched[1].backward_step == plan.backward_step
    # The same layer at a batch both directions take in one turn, after the wide forward ran.
    report = check_layer(layer, Problem(3, batch - 3, False, True, seed=13))
    assert not report, "\n".join(report)
    assert launched[2:] == [sized_plan(spec, plan, direction, chunk) for direction in ("forward", "backward")]


@pytest.mark.parametrize("dtype, hidden, allow_tf32", [
    ("float16", 256, False),   # clusters of 8 that stage 32 rows at most
    ("bfloat16", 128, False),  # 64 rows at most
    ("float16", 512, False),   # clusters of 16
    ("float32", 128, True),    # TF32
    ("float32", 128, False),   # strict float32 (3xTF32 tensor cores); FMA groups: test_batch_sliced_layers
])
def test_batch_sliced_kernels_are_compiled_for_the_rows_of_their_groups(monkeypatch, dtype, hidden, allow_tf32):
    # A small batch runs kernels that stage one n tile of 8 rows, not the plan's most (a
    # thread then finishes one (unit, row) item where the plan's kernels carry up to 4); a
    # batch that spreads 9-16 rows over each running cluster, kernels of 16. One layer takes
    # them in turn, each against the reference.
    spec = LSTMSpec(input_size=6, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    layer = Layer(spec, seed=14, recurrence="persistent")
    plan = layer.kernels.plan
    running = layer.kernels.clusters or plan.num_blocks // plan.cluster_blocks
    assert plan.backward_chunk_rows > 8
    launched = _record_launched_plans(monkeypatch)
    for seed, (batch, rows) in enumerate([(1, 8), (8, 8), (8 * running + 1, 16), (3, 8)]):
        report = check_layer(layer, Problem(3, batch, True, True, seed=seed))
        assert not report, "\n".join(report)
        assert launched[-2:] == [sized_plan(spec, plan, direction, rows) for direction in ("forward", "backward")]
        assert launched[-1].backward_step.items_per_thread == -(-plan.units_per_block * rows // plan.threads)
    assert len(layer._sized) == 4  # compiled once per direction and size


def test_fma_groups_of_few_rows_take_one_pass_of_their_own(monkeypatch):
    # float64 H = 256 keeps 64 weights a thread (128 registers): its groups of up to 5 rows go
    # through the product in one pass of their own rows (no rows multiplied only to be
    # dropped), those of 6 or more in kernels of passes of 4 (ptxas spills at 6 rows a pass;
    # codegen/planner.py).
    spec = LSTMSpec(input_size=10, hidden_size=256, dtype="float64")  # a spec no other test compiles
    layer = Layer(spec, seed=17, recurrence="persistent")
    plan = layer.kernels.plan
    running = layer.kernels.clusters or plan.num_blocks // plan.cluster_blocks
    assert plan.one_pass_rows == 5
    launched = _record_launched_plans(monkeypatch)
    # (batch, rows a group, rows its kernels are compiled for, rows a pass)
    for seed, (batch, group, rows, pass_rows) in enumerate([(1, 1, 1, 1), (5 * running - 2, 5, 5, 5),
                                                             (6 * running, 6, 8, 4)]):
        report = check_layer(layer, Problem(3, batch, True, False, seed=20 + seed))
        assert not report, "\n".join(report)
        for kernel_plan, step in zip(launched[-2:], ("forward_step", "backward_step")):
            assert (getattr(kernel_plan, step).chunk_rows, kernel_plan.rows_per_pass) == (rows, pass_rows)
            assert kernel_plan.group_rows(batch, running) == group
            assert kernel_plan.blocks(batch, running) == -(-batch // group) * plan.cluster_blocks


@pytest.mark.parametrize("dtype, hidden", [("float16", 256), ("float16", 512), ("float32", 128)])
def test_tensor_core_groups_take_fewer_rows_than_an_n_tile(monkeypatch, dtype, hidden):
    # A small batch spreads over the clusters a row at a time, though the kernels multiply
    # whole n tiles of 8 rows: each cluster finishes and sends only its group's rows (float16
    # H = 512 B = 8 took 0.69 of the time of one group of 8; bench/NOTES.md v24).
    spec = LSTMSpec(input_size=9, hidden_size=hidden, dtype=dtype)  # specs no other test compiles
    layer = Layer(spec, seed=19, recurrence="persistent")
    plan = layer.kernels.plan
    running = layer.kernels.clusters or plan.num_blocks // plan.cluster_blocks
    assert plan.math == "mma" and running >= 4
    launched = _record_launched_plans(monkeypatch)
    for seed, batch in enumerate([running - 1, 2 * running + 1]):
        group = -(-batch // running)
        report = check_layer(layer, Problem(3, batch, True, True, seed=30 + seed))
        assert not report, "\n".join(report)
        for kernel_plan, step in zip(launched[-2:], ("forward_step", "backward_step")):
            assert getattr(kernel_plan, step).chunk_rows == 8  # one n tile
            assert kernel_plan.group_rows(batch, running) == group < 8
            assert kernel_plan.blocks(batch, running) == -(-batch // group) * plan.cluster_blocks


def test_a_sized_kernel_of_which_fewer_clusters_fit_gives_way_to_the_layers_own(monkeypatch):
    # Every launch is sized by the count of clusters of the layer's own kernels; a kernel for
    # other rows of which the driver says fewer fit at once (another GPU, more shared memory)
    # is not used: the layer's own kernel takes the batch, with its own plan.
    from lstmgen.runtime import compile as compile_module

    spec = LSTMSpec(input_size=11, hidden_size=256, dtype="float16")  # a spec no other test compiles
    layer = Layer(spec, seed=15, recurrence="persistent")
    monkeypatch.setattr(compile_module, "max_active_clusters", lambda *args: 1)
    launched = _record_launched_plans(monkeypatch)
    report = check_layer(layer, Problem(3, 8, True, True, seed=16))
    assert not report, "\n".join(report)
    assert launched == [layer.kernels.plan, layer.kernels.plan]


@pytest.mark.parametrize("dtype, hidden, sm_count, forward_m_tiles, items_per_thread", [
    ("float16", 420, 28, 4, 4),    # 15 units per block: 4 forward m tiles, 4 (unit, row) pairs a thread
    ("bfloat16", 512, 16, 8, 8),   # 32 units: a warp per forward m tile, 2 backward m tiles
])
def test_tensor_core_shapes_of_gpus_with_fewer_sms(monkeypatch, dtype, hidden, sm_count, forward_m_tiles,
                                                   items_per_thread):
    # The H200's 132 SMs leave at most 8 units per block; smaller GPUs give the tensor-core
    # kernels more m tiles and more (unit, row) pairs per thread, which this runs here
    # (without clusters, which would batch-slice these layers).
    from dataclasses import replace

    from lstmgen.runtime import compile as compile_module

    target = replace(compile_module.current_target(), sm_count=sm_count, max_cluster_blocks=1)
    monkeypatch.setattr(compile_module, "current_target", lambda: target)
    spec = LSTMSpec(input_size=11, hidden_size=hidden, dtype=dtype)  # input_size 11: no other test's kernels
    plan = load_kernels(spec).plan
    assert plan.math == "mma" and plan.num_blocks <= sm_count
    assert (plan.forward_step.m_tiles, plan.forward_step.items_per_thread) == (forward_m_tiles, items_per_thread)
    report = check_layer(Layer(spec, seed=5), Problem(3, 37, True, True, seed=6))
    assert not report, "\n".join(report)


def test_batch_of_several_staged_chunks():
    spec = LSTMSpec(input_size=4, hidden_size=300, dtype="float32")  # not batch-sliced past H = 256
    chunk = load_kernels(spec).plan.forward_chunk_rows
    report = check_layer(Layer(spec, seed=2), Problem(5, 2 * chunk + 3, True, True, seed=3))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("recurrence", ["persistent", "stepwise"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_inference_mode_gives_the_training_outputs(return_sequences, recurrence):
    spec = LSTMSpec(input_size=6, hidden_size=33, dtype="float32", return_sequences=return_sequences)
    layer = Layer(spec, seed=4, recurrence=recurrence)
    rng = np.random.default_rng(5)
    x, h0, c0 = uniform(rng, 11, 4, 6), uniform(rng, 4, 33), uniform(rng, 4, 33)
    trained = layer.forward(x, h0, c0, training=True)
    inferred = layer.forward(x, h0, c0, training=False)
    for a, b in zip((trained[0], *trained[1]), (inferred[0], *inferred[1])):
        assert cupy.array_equal(a, b)
    with pytest.raises(InputError, match="without a cached forward pass"):
        layer.backward(cupy.ones_like(inferred[0]))


# Each dtype both ways at H = 300, and more of the H200's persistent plans: TF32 on tensor
# cores with h as tagged words, strict float32's three TF32 products in clusters (H = 128),
# float32's FMA in runs of 4 k a lane (H = 512), and float16 at one row, where each warp
# copies its own k tiles (H = 1024).
RUN_TO_RUN_CASES = [(dtype, False, 300, 9, recurrence) for recurrence in ("persistent", "stepwise")
                    for dtype in ("float32", "float64", "float16", "bfloat16")] + [
    ("float32", True, 300, 9, "persistent"),
    ("float32", False, 128, 8, "persistent"),
    ("float32", False, 512, 8, "persistent"),
    ("float16", False, 1024, 1, "persistent"),
]


@pytest.mark.parametrize(("dtype", "allow_tf32", "hidden", "batch", "recurrence"), RUN_TO_RUN_CASES)
def test_results_are_bitwise_identical_run_to_run(dtype, allow_tf32, hidden, batch, recurrence):
    spec = LSTMSpec(input_size=16, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    layer = Layer(spec, seed=6, recurrence=recurrence)
    rng = np.random.default_rng(7)
    x, dy = uniform(rng, 20, batch, 16, dtype=dtype), uniform(rng, 20, batch, hidden, dtype=dtype)
    runs = []
    for _ in range(3):
        y, (h, c) = layer.forward(x)
        grads = layer.backward(dy)
        runs.append([y.get(), h.get(), c.get(), *(g.get() for g in grads.values())])
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_batch_first_matches_time_major(return_sequences):
    spec = LSTMSpec(input_size=5, hidden_size=12, dtype="float64", return_sequences=return_sequences)
    layer = Layer(spec, seed=8)
    rng = np.random.default_rng(9)
    x = uniform(rng, 6, 3, 5, dtype="float64")
    dy = uniform(rng, *((6, 3, 12) if return_sequences else (3, 12)), dtype="float64")
    y, (h, c) = layer.forward(x)
    grads = layer.backward(dy)
    # A transposed view: batch_first input need not be contiguous, it is copied anyway.
    y_bf, (h_bf, c_bf) = layer.forward(x.transpose(1, 0, 2), batch_first=True)
    grads_bf = layer.backward(dy.transpose(1, 0, 2) if return_sequences else dy)
    assert cupy.array_equal(y_bf.transpose(1, 0, 2) if return_sequences else y_bf, y)
    assert cupy.array_equal(h_bf, h) and cupy.array_equal(c_bf, c)
    assert cupy.array_equal(grads_bf["dx"].transpose(1, 0, 2), grads["dx"])
    for name in grads.keys() - {"dx"}:
        assert cupy.array_equal(grads_bf[name], grads[name]), name


def test_bias_gradients_are_separate_arrays():
    layer = Layer(LSTMSpec(input_size=2, hidden_size=3, dtype="float64", bias="double"), seed=0)
    y, _ = layer.forward(uniform(np.random.default_rng(0), 4, 2, 2, dtype="float64"))
    grads = layer.backward(cupy.ones_like(y))
    assert grads["db_ih"] is not grads["db_hh"] and cupy.array_equal(grads["db_ih"], grads["db_hh"])
    grads["db_ih"] *= 0
    assert cupy.abs(grads["db_hh"]).max() > 0


def test_new_weights_drop_the_forward_cache():
    layer = Layer(LSTMSpec(input_size=2, hidden_size=3, dtype="float64"), seed=0)
    y, _ = layer.forward(uniform(np.random.default_rng(0), 4, 2, 2, dtype="float64"))
    layer.set_parameters({name: value * 2 for name, value in layer.params.items()})
    with pytest.raises(InputError, match="without a cached forward pass"):
        layer.backward(cupy.ones_like(y))


def test_seed_stack_matches_reference_stack():
    model = load(os.path.join(ROOT, "specs/seed.toml"), seed=10)
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, (30, 300, 1)).astype("float32")
    dy = rng.uniform(-1, 1, (300, 1)).astype("float32")
    params = [{k: v.get() for k, v in layer.params.items()} for layer in model.layers]
    expected = reference.stack_forward(params, [True, False], x)
    expected_grads = reference.stack_backward(params, expected, dy)
    y, states = model.forward(cupy.asarray(x))
    grads = model.backward(cupy.asarray(dy))
    report = mismatches("y", y.get(), expected[-1].y, "float32")
    for index in range(2):
        report += mismatches(f"layer {index + 1} h_T", states[index][0].get(), expected[index].h_T, "float32")
        for name, value in expected_grads[index].items():
            report += mismatches(f"layer {index + 1} {name}", grads[index][name].get(), value, "float32")
    assert not report, "\n".join(report)


@pytest.mark.parametrize("bias", ["double", "single"])
def test_torch_state_dict_import_reproduces_torch(bias):
    torch = pytest.importorskip("torch")
    torch_lstm = torch.nn.LSTM(7, 20, num_layers=2).double()
    model = Model(ModelSpec("torch2", (LSTMSpec(7, 20, "float64", bias), LSTMSpec(20, 20, "float64", bias))))
    model.load_torch_state_dict(torch_lstm.state_dict())
    x = torch.rand(13, 4, 7, dtype=torch.float64) * 2 - 1
    expected, (h_n, c_n) = torch_lstm(x)
    y, states = model.forward(cupy.asarray(x.numpy()), training=False)
    assert np.allclose(y.get(), expected.detach().numpy(), rtol=0, atol=1e-12)
    for index, (h, c) in enumerate(states):
        assert np.allclose(h.get(), h_n[index].detach().numpy(), rtol=0, atol=1e-12)
        assert np.allclose(c.get(), c_n[index].detach().numpy(), rtol=0, atol=1e-12)


def test_torch_bfloat16_state_dict_import_keeps_every_weight():
    # NumPy cannot hold torch.bfloat16: the import goes through float32, which must be exact.
    torch = pytest.importorskip("torch")
    state = torch.nn.LSTM(7, 20).to(torch.bfloat16).state_dict()
    layer = Layer(LSTMSpec(7, 20, "bfloat16", "double"))
    layer.load_torch_state_dict(state)
    names = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}
    for name, key in names.items():
        assert layer.params[name].dtype == "bfloat16", name
        assert np.array_equal(layer.params[name].get().astype(np.float32), state[key].float().numpy()), name


def test_torch_biases_into_a_layer_without_bias_are_refused():
    torch = pytest.importorskip("torch")
    layer = Layer(LSTMSpec(7, 20, "float64", bias="none"))
    with pytest.raises(InputError, match=r"state_dict has biases but this layer's bias mode is 'none'"):
        layer.load_torch_state_dict(torch.nn.LSTM(7, 20).state_dict())


def test_keras_weights_import():
    spec = LSTMSpec(input_size=3, hidden_size=4, dtype="float64", bias="single")
    layer = Layer(spec)
    rng = np.random.default_rng(12)
    kernel, recurrent, bias = rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), rng.normal(size=16)
    layer.load_keras_weights(kernel, recurrent, bias)
    x = rng.uniform(-1, 1, (5, 2, 3))
    expected = reference.forward({"W_ih": kernel.T, "W_hh": recurrent.T, "b": bias}, x)
    y, _ = layer.forward(cupy.asarray(x), training=False)
    assert np.allclose(y.get(), expected.y, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def small_layer():
    return Layer(LSTMSpec(input_size=32, hidden_size=8, dtype="float32"), seed=0)


def test_wrong_input_size_is_named(small_layer):
    with pytest.raises(InputError, match=r"x has shape \(12, 4, 30\) but this layer expects \[T, B, input_size\] = \('any', 'any', 32\)"):
        small_layer.forward(cupy.zeros((12, 4, 30), dtype="float32"))


def test_wrong_dtype_is_named(small_layer):
    with pytest.raises(InputError, match=r"x has dtype float64 but this layer was generated for float32: convert it"):
        small_layer.forward(cupy.zeros((2, 2, 32)))


def test_wrong_dtype_advice_converts_to_bfloat16():
    layer = Layer(LSTMSpec(input_size=3, hidden_size=4, dtype="bfloat16"), seed=0)
    x = cupy.zeros((2, 2, 3), dtype="float32")
    with pytest.raises(InputError, match=r"x has dtype float32 but this layer was generated for bfloat16: "
                                         r"convert it with x\.astype\(\"bfloat16\"\)"):
        layer.forward(x)
    y, _ = layer.forward(x.astype("bfloat16"))
    assert y.dtype == "bfloat16"


def test_torch_bfloat16_taken_as_bytes_is_named():
    torch = pytest.importorskip("torch")
    layer = Layer(LSTMSpec(input_size=3, hidden_size=4, dtype="bfloat16"), seed=0)
    tensor = torch.rand(2, 2, 3, device="cuda", dtype=torch.bfloat16)
    raw = cupy.asarray(tensor)  # __cuda_array_interface__ has no bfloat16: 2-byte void elements
    with pytest.raises(InputError, match=r"x has dtype \|V2 but this layer was generated for bfloat16: take the "
                                         r"tensor with cupy\.from_dlpack, which keeps bfloat16, not cupy\.asarray"):
        layer.forward(raw)
    y, _ = layer.forward(cupy.from_dlpack(tensor))
    assert y.dtype == "bfloat16"


def test_integer_input_is_not_offered_as_a_spec_dtype(small_layer):
    with pytest.raises(InputError, match=r"x has dtype int32 but this layer was generated for float32: "
                                         r"convert it with x\.astype\(\"float32\"\)$"):
        small_layer.forward(cupy.zeros((2, 2, 32), dtype="int32"))


def test_host_array_is_refused(small_layer):
    with pytest.raises(InputError, match=r"x is a numpy.ndarray, not a CuPy array: .* cupy.asarray\(x\)"):
        small_layer.forward(np.zeros((2, 2, 32), dtype="float32"))


def test_wrong_number_of_initial_states_is_named():
    model = Model(ModelSpec("two", (LSTMSpec(3, 4, "float32"), LSTMSpec(4, 2, "float32"))))
    with pytest.raises(InputError, match=r"initial_states has 1 entries but the model has 2 layers: pass one \(h0, c0\) or None per layer"):
        model.forward(cupy.zeros((2, 2, 3), dtype="float32"), initial_states=[None])


def test_non_contiguous_input_is_refused(small_layer):
    x = cupy.zeros((2, 4, 32), dtype="float32")[:, ::2]
    with pytest.raises(InputError, match=r"x is not C-contiguous .* cupy.ascontiguousarray\(x\)"):
        small_layer.forward(x)


def test_initial_state_batch_mismatch_is_named(small_layer):
    with pytest.raises(InputError, match=r"h0 has shape \(3, 8\) but this layer expects \[B, hidden_size\] = \(4, 8\)"):
        small_layer.forward(cupy.zeros((2, 4, 32), dtype="float32"), h0=cupy.zeros((3, 8), dtype="float32"))


def test_empty_sequence_is_refused(small_layer):
    with pytest.raises(InputError, match=r"holds no data: a sequence needs at least one step"):
        small_layer.forward(cupy.zeros((0, 4, 32), dtype="float32"))


def test_out_of_memory_says_what_to_lower():
    layer = Layer(LSTMSpec(input_size=64, hidden_size=256, dtype="float32"), seed=0)
    pool = cupy.get_default_memory_pool()
    x = cupy.zeros((2000, 64, 64), dtype="float32")
    pool.set_limit(size=pool.used_bytes() + 64 * 2**20)
    try:
        with pytest.raises(GPUOutOfMemoryError, match=r"out of GPU memory allocating .* lower the batch size or the sequence length"):
            layer.forward(x)
    finally:
        pool.set_limit(size=0)


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    # Each process records the sources NVRTC is handed. CuPy also compiles an empty file per
    # process to fingerprint the compiler, so the check looks for the kernels' own sources:
    # the layer's, and the one compiled for the call's groups of rows (Plan.staged_rows).
    script = textwrap.dedent("""
        import cupy
        from cupy.cuda import nvrtc
        compiled = []
        create_program = nvrtc.createProgram
        def recording_create_program(source, *args):
            compiled.append(source)
            return create_program(source, *args)
        nvrtc.createProgram = recording_create_program
        from lstmgen.codegen import LSTMSpec
        from lstmgen.runtime import Layer
        layer = Layer(LSTMSpec(input_size=3, hidden_size=77, dtype="float64"), seed=0)
        y, _ = layer.forward(cupy.ones((2, 2, 3)))
        forwards = [source for source in compiled if "lstm_forward_recurrence" in source]
        print(len(forwards), len(set(forwards)), float(y.sum()))
    """)
    env = dict(os.environ, CUPY_CACHE_DIR=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    compiles, distinct, value = first.stdout.split()
    assert compiles == distinct == "2", "the first process should compile each of its two forward kernels once"
    assert any(tmp_path.iterdir()), "the first process left nothing in the cache folder"
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["0", "0", value], "the second process recompiled a kernel"


def test_initialisation_is_torch_uniform_and_seeded():
    spec = LSTMSpec(input_size=50, hidden_size=64, dtype="float64", bias="double")
    layer, same, other = Layer(spec, seed=3), Layer(spec, seed=3), Layer(spec, seed=4)
    bound = 1 / np.sqrt(64)
    for name, value in layer.params.items():
        values = value.get()
        assert np.abs(values).max() <= bound, name
        # U(-k, k) has standard deviation k / sqrt(3); 256+ samples put it within 15%.
        assert abs(values.std() - bound / np.sqrt(3)) < 0.15 * bound / np.sqrt(3), name
        assert np.array_equal(values, same.params[name].get())
        assert not np.array_equal(values, other.params[name].get())


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_repeated_stepwise_calls_replay_one_captured_graph_each_way(monkeypatch, dtype):
    # The stepwise loops are captured as CUDA graphs on their second call with the same
    # buffers and replayed after (runtime/replay.py): the replays must match the reference.
    # check_layer lets go of every array before it returns, so a call gets the buffers of an
    # earlier one from CuPy's pool: measured, of the call before or the one before that, so
    # each direction sees one to three sets of buffers (not always as many as the other:
    # the layer keeps db's row of ones across calls). The pool's state before the test moves
    # that: once (v22's tier, after other tests in the worker) the eighth backward came on a
    # set of buffers seen once before, and was a capture.
    from lstmgen.runtime import replay

    replayed = _record_replays(monkeypatch, "stepwise")
    layer = Layer(LSTMSpec(input_size=7, hidden_size=130, dtype=dtype), seed=27, recurrence="stepwise")
    # New data each call (a replay on an earlier call's inputs would fail), the same shapes.
    for seed in range(8):
        report = check_layer(layer, Problem(9, 40, True, True, seed=seed))
        assert not report, "\n".join(report)
    # Forward and backward each, per set of buffers: launched, captured, then replayed, and
    # the replays keep coming.
    for direction in (replayed[0::2], replayed[1::2]):
        assert not direction[0] and any(direction[-4:]), replayed
    assert 2 <= len(replay._graphs) <= 8


@pytest.mark.parametrize("dtype, hidden, batch, bias, launch", [
    ("float32", 1024, 9, "double", "grid barrier"),  # a cooperative launch, past the tagged words' 8 rows
    ("float32", 1024, 2, "double", "tagged words"),  # h's buffer each call fills with ones first
    ("float16", 256, 5, "single", "clusters"),
    ("float64", 128, 330, "double", "wide clusters"),  # the wide forward: 20 rows x 15 clusters (16 at most) < 330
])
def test_repeated_persistent_forwards_replay_one_captured_graph(monkeypatch, dtype, hidden, batch, bias, launch):
    # A forward on the buffers of an earlier call replays its launches (projection, bias sum,
    # fill of the tagged words, recurrence) as a CUDA graph: the replays must match the
    # reference with new data each call, and after every parameter is changed in place,
    # which a graph must read anew. check_layer lets go of every array, so CuPy's pool hands
    # out an earlier call's buffers again (measured: every call, every other or every third).
    replayed = _record_replays(monkeypatch, "persistent forward")
    layer = Layer(LSTMSpec(input_size=7, hidden_size=hidden, dtype=dtype, bias=bias), seed=33, recurrence="persistent")
    plan = layer.kernels.plan
    wide = plan.batch_sliced and plan.staged_rows("forward", batch, layer.kernels.clusters) > plan.forward_chunk_rows
    assert launch == ("wide clusters" if wide else
                      "clusters" if plan.cluster_blocks > 1 else
                      "tagged words" if batch <= plan.tagged_exchange_batch else "grid barrier"), plan.summary()
    seed = 0
    for change_parameters in (False, True):
        if change_parameters:
            for name in layer.params:  # in place: the same addresses
                layer.params[name] *= 0.5
        replays_before = replayed.count(True)
        while replayed.count(True) == replays_before:
            assert seed < 16, f"no replay in 8 calls: {replayed}"
            report = check_layer(layer, Problem(5, batch, True, True, seed=seed))
            assert not report, "\n".join(report)
            seed += 1
    assert replayed[0] is False


def test_a_forward_replays_only_launches_of_its_own_kind(monkeypatch):
    # Calls that differ in what the launches do (training or inference, h0 and c0 given or
    # not, batch_first) must not replay each other's graphs: interleaved, every call is checked.
    replayed = _record_replays(monkeypatch, "persistent forward")
    spec = LSTMSpec(input_size=6, hidden_size=40, dtype="float32", return_sequences=True)
    layer = Layer(spec, seed=35, recurrence="persistent")
    params = {name: value.get() for name, value in layer.params.items()}
    rng = np.random.default_rng(36)

    def draw(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)

    for _ in range(6):
        for training, initial_state, batch_first in ((True, True, False), (False, False, False), (False, True, True)):
            x = draw(5, 3, 6)
            h0, c0 = (draw(3, 40), draw(3, 40)) if initial_state else (None, None)
            expected = reference.forward(params, x, h0, c0, return_sequences=True)
            given = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
            y, (h_T, c_T) = layer.forward(cupy.asarray(given), None if h0 is None else cupy.asarray(h0),
                                          None if c0 is None else cupy.asarray(c0), training=training,
                                          batch_first=batch_first)
            y = y.get().transpose(1, 0, 2) if batch_first else y.get()
            for name, got, wanted in (("y", y, expected.y), ("h_T", h_T.get(), expected.h_T),
                                      ("c_T", c_T.get(), expected.c_T)):
                report = mismatches(f"{name} (training={training}, h0={initial_state}, batch_first={batch_first})",
                                    got, wanted, "float32")
                assert not report, "\n".join(report)
            del y, h_T, c_T
    assert True in replayed, f"no call replayed: {replayed}"


def test_inference_replays_of_the_stepwise_loop_match_the_persistent_kernels(monkeypatch):
    # Inference with y = h_T: the h buffer is two slots, used in turn; replayed with new data.
    replayed = _record_replays(monkeypatch, "stepwise")
    spec = LSTMSpec(input_size=5, hidden_size=64, dtype="float32", return_sequences=False)
    stepwise_layer = Layer(spec, seed=29, recurrence="stepwise")
    inputs = [np.random.default_rng(seed).uniform(-1, 1, (7, 20, 5)).astype(np.float32) for seed in range(6)]
    results = []
    for host_x in inputs:
        x = cupy.asarray(host_x)
        y, (h, c) = stepwise_layer.forward(x, training=False)
        results.append([y.get(), h.get(), c.get()])
        del x, y, h, c  # so that the next call gets these buffers again
    assert replayed[0] is False and replayed[-1] is True
    persistent = Layer(spec, seed=29, recurrence="persistent")
    for host_x, actual in zip(inputs, results):
        y, (h, c) = persistent.forward(cupy.asarray(host_x), training=False)
        for name, got, wanted in zip(("y", "h_T", "c_T"), actual, (y.get(), h.get(), c.get())):
            report = mismatches(name, got, wanted, "float32")
            assert not report, "\n".join(report)
