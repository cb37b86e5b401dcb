"""CPU tests of the planner (lstmgen.codegen.planner): launch shapes that the kernels rely on.

The recurrence kernels run one persistent block per SM, block k owning hidden units
[k*U, (k+1)*U), a warp per (unit, up to 8 batch rows) and the block's input rows staged in
shared memory; these properties must hold for every layer and target or the generated
kernels would miss units, overrun a block, its registers or its shared memory.
"""

import re
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings, strategies as st

from lstmgen.codegen import DTYPES, SM90_H200, LSTMSpec, Target, load_spec, plan_layer, render_layer, sized_plan
from lstmgen.codegen.planner import FmaStep, TensorCoreStep, _chunk_rows
from lstmgen.errors import SpecError
from lstmgen.compare import tolerance_key
from lstmgen.strategies import layer_specs

SPECS = Path(__file__).resolve().parent.parent / "specs"

_AMPERE = Target(arch="sm_80", sm_count=108, max_smem_per_block=166912)  # A100
_TURING = Target(arch="sm_75", sm_count=40, max_smem_per_block=65536)    # T4
TARGETS = (
    SM90_H200,
    _AMPERE,
    _TURING,
    Target(arch="sm_90", sm_count=132, max_smem_per_block=232448, max_threads_per_block=128),  # hand-built, small blocks
    Target(arch="sm_70", sm_count=10, max_smem_per_block=65536, max_threads_per_block=128),  # few SMs: many units a block
)

specs = layer_specs(max_hidden=20000, max_input=4096)
targets = st.sampled_from(TARGETS)


def _largest_hidden(target: Target, dtype: str) -> int:
    """The backward pass stages one row of 4H gate gradients in shared memory."""
    return target.max_smem_per_block // (4 * DTYPES[dtype]["bytes"])


@given(specs, targets)
def test_every_unit_has_one_block_and_no_block_is_empty(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    assert 1 <= plan.num_blocks <= target.sm_count
    if plan.batch_sliced:  # every cluster owns every unit; the batch decides how many run
        cluster = plan.cluster_blocks
        assert cluster in (1, 2, 4, 8, 16) and cluster <= target.max_cluster_blocks
        assert cluster * plan.units_per_block >= spec.hidden_size > (cluster - 1) * plan.units_per_block
        assert plan.num_blocks == target.sm_count // cluster * cluster
        return
    assert plan.num_blocks * plan.units_per_block >= spec.hidden_size
    assert (plan.num_blocks - 1) * plan.units_per_block < spec.hidden_size
    assert plan.blocks(batch=1) == plan.blocks(batch=10**6) == plan.num_blocks


@given(specs, targets)
def test_warps_cover_the_units_within_the_block_limit(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    assert plan.threads == 32 * plan.warps <= target.max_threads_per_block
    if plan.forward_step is not None:
        return  # threads split the weights, not the units: see the tensor-core and FMA step tests
    assert plan.warps >= min(plan.units_per_block, target.max_threads_per_block // 32)
    if plan.weights_in == "registers":
        # Each warp keeps one unit's weights for the whole launch.
        assert plan.warps % plan.units_per_block == 0 and plan.threads <= 256


@given(specs, targets)
def test_shared_memory_holds_the_weights_and_at_least_one_row_per_direction(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    element = DTYPES[spec.dtype]["bytes"]
    slice_bytes = 4 * plan.units_per_block * spec.hidden_size * element
    assert plan.smem_bytes <= target.max_smem_per_block
    assert plan.forward_chunk_rows >= 1 and plan.backward_chunk_rows >= 1
    weights = {direction: split.shared_bytes if split else 0
               for direction, split in (("forward", plan.forward_weights), ("backward", plan.backward_weights))}
    assert plan.smem_bytes >= weights["forward"] + plan.forward_chunk_rows * spec.hidden_size * element
    assert plan.smem_bytes >= weights["backward"] + plan.backward_chunk_rows * 4 * spec.hidden_size * element
    for shared_bytes in weights.values():
        if plan.weights_in == "shared":
            assert slice_bytes <= shared_bytes < slice_bytes + 16
        elif plan.weights_in != "split":
            assert shared_bytes == 0
        assert shared_bytes % 16 == 0  # the staging area is aligned for 16-byte copies


@example(spec=LSTMSpec(input_size=1, hidden_size=193), target=TARGETS[-1])  # a slice in shared memory whose rows end mid-warp
@example(spec=LSTMSpec(input_size=1, hidden_size=512), target=SM90_H200)   # runs of k both ways
@example(spec=LSTMSpec(input_size=1, hidden_size=320), target=SM90_H200)   # runs of k backward only (4H = 1280)
@example(spec=LSTMSpec(input_size=1, hidden_size=300), target=SM90_H200)   # no runs: 4H = 1200
@example(spec=LSTMSpec(input_size=1, hidden_size=512, dtype="float64"), target=SM90_H200)  # float64: one k a lane
@given(specs, targets)
def test_weight_splits_cover_each_row_and_fit_registers_and_shared_memory(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    if plan.forward_step is not None:
        assert plan.forward_weights is None and plan.backward_weights is None
        return
    units, element = plan.units_per_block, DTYPES[spec.dtype]["bytes"]
    lane_weights = 0
    for split, k_len, outputs in ((plan.forward_weights, spec.hidden_size, 4),
                                  (plan.backward_weights, 4 * spec.hidden_size, 1)):
        assert split.k_len == k_len
        assert 0 <= split.in_registers <= split.on_chip <= k_len
        # The kernels place each lane's k = lane + 32 j (or its runs of k) by j: a place ends at
        # a whole j or at K.
        assert all(bound % 32 == 0 or bound == k_len for bound in (split.in_registers, split.on_chip))
        assert (split.on_chip - split.in_registers) * outputs * units * element <= split.shared_bytes
        # Runs of 4 consecutive float32 k a lane exactly where the whole row is in registers
        # and whole runs of the warp's lanes cover it; else one k a lane.
        runs = element == 4 and split.in_registers == k_len and k_len % (32 * 4) == 0
        assert split.lane_k == (4 if runs else 1)
        row = k_len * element
        chunk = plan.forward_chunk_rows if outputs == 4 else plan.backward_chunk_rows
        if plan.weights_in == "split" or plan.pass_inputs_bytes:
            # Never fewer staged rows than with all of W_hh in L2 and no input slots, nor than a pass.
            assert chunk >= min(8, _chunk_rows(target.max_smem_per_block // row))
        lane_weights = max(lane_weights, -(-split.in_registers // 32) * outputs)
        expected = {"registers": (k_len, k_len), "shared": (0, k_len), "global": (0, 0)}.get(plan.weights_in)
        assert expected is None or (split.in_registers, split.on_chip) == expected
    if plan.weights_in == "split":
        assert plan.forward_weights.streams or plan.backward_weights.streams or plan.forward_weights.in_registers
    if lane_weights:  # each warp keeps one unit's weights, within the lanes' register budget
        assert plan.warps % units == 0 and units <= 8
        assert lane_weights * DTYPES[spec.dtype]["accumulate_bytes"] // 4 + 5 * 8 * DTYPES[spec.dtype]["accumulate_bytes"] // 4 <= 168
    # The backward kernel reads W_hh^T exactly when part of it comes from L2 (the layer passes it).
    assert plan.backward_streams_weights == (plan.backward_weights.on_chip < 4 * spec.hidden_size)
    # Input slots only where the backward reads part of W_hh^T from L2, on GPUs with cp.async
    # and for elements it can copy: a slot of 8 elements and an accumulator for each row of
    # each warp's pass, in the backward's shared memory beside its weights and staged rows.
    if plan.pass_inputs_bytes:
        assert plan.backward_streams_weights and element >= 4 and int(target.arch.removeprefix("sm_")) >= 80
        accumulate = DTYPES[spec.dtype]["accumulate_bytes"]
        assert plan.pass_inputs_bytes >= plan.warps * 8 * (8 * element + accumulate)
        assert (plan.pass_inputs_bytes + plan.backward_weights.shared_bytes + plan.backward_chunk_rows * 4 * spec.hidden_size * element
                <= plan.smem_bytes <= target.max_smem_per_block)


@given(st.sampled_from(list(DTYPES)), targets, st.integers(1, 10000))
def test_hidden_size_beyond_one_staged_row_names_the_limit(dtype, target, excess):
    largest = _largest_hidden(target, dtype)
    spec = LSTMSpec(input_size=1, hidden_size=largest + excess, dtype=dtype)
    plan_layer(LSTMSpec(input_size=1, hidden_size=largest, dtype=dtype), target)  # the limit itself plans
    with pytest.raises(SpecError, match=rf"too large for {target.arch}.*lower hidden_size to {largest} or less"):
        plan_layer(spec, target)


@pytest.mark.parametrize("dtype, hidden, place, where", [
    ("float32", 1024, "registers", "registers"),
    ("float32", 1100, "shared", "shared memory"),
    ("float32", 1400, "split", "shared memory and L2 by k (forward 1056 in shared memory / 344 in L2 of 1400, "
                               "backward 1120 in shared memory / 4480 in L2 of 5600)"),
    ("float32", 7100, "global", "global memory (L2)"),
    ("float64", 256, "registers", "registers"),
    ("float64", 512, "shared", "shared memory"),
    ("float64", 960, "split", "registers, shared memory and L2 by k (forward 352 in registers / 608 in shared "
                              "memory of 960, backward 1408 in registers / 1632 in shared memory / 800 in L2 of 3840)"),
    ("float64", 1024, "split", "registers, shared memory and L2 by k (forward 352 in registers / 640 in shared "
                               "memory / 32 in L2 of 1024, backward 1408 in registers / 1504 in shared memory / "
                               "1184 in L2 of 4096)"),
    ("bfloat16", 2000, "global", "global memory (L2)"),  # 16-bit storage: no split (_SPLIT_MIN_ELEMENT_BYTES)
])
def test_where_the_weights_live_on_h200(dtype, hidden, place, where):
    plan = plan_layer(LSTMSpec(input_size=64, hidden_size=hidden, dtype=dtype), SM90_H200)
    assert plan.weights_in == place
    assert re.search(rf"W_hh slice in {re.escape(where)}[, ]", plan.summary())


@settings(max_examples=40)
@given(layer_specs(max_hidden=8000, max_input=64), targets)
def test_kernels_print_the_plans_weight_split(spec, target):
    # The templates place the weights by the plan's numbers, and the backward kernel indexes
    # W_hh^T exactly when the layer passes it (Plan.backward_streams_weights).
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    sources = render_layer(spec, target)
    plan = sources["forward"].plan
    assume(plan.forward_step is None)
    for direction, split, reserved in (("forward", plan.forward_weights, 0),
                                       ("backward", plan.backward_weights, plan.pass_inputs_bytes)):
        text = sources[direction].text
        assert f"#define K_IN_REGISTERS {split.in_registers} " in text
        assert f"#define K_ON_CHIP {split.on_chip} " in text
        assert f"#define LANE_K {split.lane_k} " in text
        assert f"smem_raw + {reserved + split.shared_bytes});" in text
        assert ("cp.async.ca.shared.global" in text) == (reserved > 0)  # the backward's input slots
        assert ("w_reg[" in text) == (split.in_registers > 0)
        assert ("w_smem[" in text) == (split.on_chip > split.in_registers)
        assert ("__ldg(&weights[" in text) == split.streams
    transposed = "return (size_t)unit * GATES + r;" in sources["backward"].text
    assert transposed == plan.backward_streams_weights


@pytest.mark.parametrize("dtype, hidden, target, slots", [
    ("float32", 1400, SM90_H200, True), ("float64", 1024, SM90_H200, True),  # W_hh^T partly from L2
    ("float32", 1024, SM90_H200, False), ("float64", 512, SM90_H200, False),  # all on chip
    ("bfloat16", 2000, SM90_H200, False),  # 16 bits: cp.async copies 4 bytes at least
    ("float64", 660, TARGETS[1], False),   # split, but the backward keeps all of W_hh on chip
    ("float32", 2000, TARGETS[2], False),  # no cp.async before sm_80
    ("float32", 7100, SM90_H200, False),   # the slots would cost the backward a staged row
])
def test_backward_input_slots_where_its_passes_read_weights_from_l2(dtype, hidden, target, slots):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype), target)
    assert bool(plan.pass_inputs_bytes) == slots


def test_float64_1024_keeps_all_but_a_warps_k_of_each_row_on_chip_with_a_full_pass_staged():
    # Registers (11 of 32 k's a lane forward, the budget) and shared memory beside 8 staged
    # rows forward: the H200 bench's float64 H = 1024 cells at B <= 8 stage once a step.
    plan = plan_layer(LSTMSpec(input_size=64, hidden_size=1024, dtype="float64"), SM90_H200)
    assert (plan.forward_weights.in_registers, plan.forward_weights.on_chip) == (352, 992)
    assert (plan.backward_weights.in_registers, plan.backward_weights.on_chip) == (1408, 2912)
    assert plan.forward_chunk_rows == 8 and plan.backward_chunk_rows == 4
    assert plan.backward_streams_weights


# Batch-sliced plans that random H rarely reach: padded m tiles, fragments in shared memory.
_SLICED_EXAMPLES = [LSTMSpec(input_size=1, hidden_size=hidden, dtype=dtype)
                    for hidden in (11, 72, 73, 112, 128, 129, 200, 256) for dtype in ("float16", "bfloat16")]


def _with_sliced_examples(test):
    for spec in _SLICED_EXAMPLES:
        test = example(spec=spec, target=SM90_H200)(test)
    return test


@_with_sliced_examples
@given(specs, targets)
def test_tensor_core_steps_cover_the_block_and_fit_registers_and_shared_memory(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    assert (plan.math == "mma") == isinstance(plan.forward_step, TensorCoreStep) == isinstance(plan.backward_step, TensorCoreStep)
    if plan.math == "fma":
        return
    assert spec.dtype in ("float16", "bfloat16", "float32") and plan.weights_in == "registers"
    assert int(target.arch.removeprefix("sm_")) >= 80  # mma.sync.m16n8k16 came with Ampere
    units = plan.units_per_block
    # Fragment registers a lane: batch-sliced forward steps keep all their k tiles (at most 32
    # of 4 registers), batch-sliced backward steps at most 96, cooperative steps 72.
    forward_budget, backward_budget = (128, 96) if plan.batch_sliced else (72, 72)
    for step, rows, k_len, budget in ((plan.forward_step, 4 * units, spec.hidden_size, forward_budget),
                                      (plan.backward_step, units, 4 * spec.hidden_size, backward_budget)):
        # Whole 16-row tiles; batch-sliced blocks pad their count to the next one the warps
        # share out (one that divides 8 or that 8 divides).
        needed = -(-rows // 16)
        shares_out = lambda count: 8 % count == 0 or count % 8 == 0  # noqa: E731
        assert step.rows == rows and step.m_tiles >= needed
        assert step.m_tiles == needed or (plan.batch_sliced and not any(map(shares_out, range(needed, step.m_tiles))))
        # One (group of m tiles, k part) per warp; cooperative warps take one m tile, or both of 2.
        assert step.m_tiles % step.m_tiles_per_warp == 0
        assert plan.batch_sliced or step.m_tiles_per_warp == 1 or step.m_tiles_per_warp == step.m_tiles == 2
        assert step.m_tiles // step.m_tiles_per_warp * step.k_split == plan.warps
        k_tile = 8 if plan.mma_type in ("tf32", "tf32x3") else 16
        assert step.k_tiles * k_tile >= k_len > (step.k_tiles - 1) * k_tile
        assert step.k_tiles_per_warp * step.k_split >= step.k_tiles  # every k tile has a warp
        # Fragments within the budget; only where they fill it, the rest in shared memory.
        # Strict float32 (3xTF32) keeps two fragments a tile, its TF32 high and low halves.
        parts = 2 if plan.mma_type == "tf32x3" else 1
        registers_per_tile = step.m_tiles_per_warp * (4 if rows > 8 else 2) * parts
        assert 1 <= step.k_tiles_in_registers <= step.k_tiles_per_warp
        assert step.k_tiles_in_registers * registers_per_tile <= budget
        assert (step.k_tiles_in_registers == step.k_tiles_per_warp
                or (step.k_tiles_in_registers + 1) * registers_per_tile > budget)
        assert step.chunk_rows % 8 == 0 and step.chunk_rows >= 8
        # Staged rows padded to every warp's k tiles, plus 16 bytes so that a fragment's rows change banks.
        element = DTYPES[spec.dtype]["bytes"]
        assert step.stage_stride * element == step.k_tiles_per_warp * step.k_split * k_tile * element + 16
        assert step.staged_bytes % 16 == 0 and step.staged_bytes >= step.chunk_rows * step.stage_stride * element
        assert step.partial_stride % 4 == 0 and step.partial_stride >= step.m_tiles * 16  # float4 reads
        # Staged rows, partial sums, then the fragments kept in shared memory (at most 64 KiB):
        # 16 bytes a lane, 8 where rows 8-15 are padding; in clusters, two 8-byte mbarriers last.
        shared_fragments = (plan.warps * step.m_tiles_per_warp * (step.k_tiles_per_warp - step.k_tiles_in_registers)
                            * 32 * (16 if rows > 8 else 8) * parts)
        assert shared_fragments <= 64 * 1024
        barriers = 16 if plan.cluster_blocks > 1 else 0
        assert step.smem_bytes == (step.staged_bytes + step.k_split * step.chunk_rows * step.partial_stride * 4
                                   + shared_fragments + barriers)
        assert step.smem_bytes <= plan.smem_bytes <= target.max_smem_per_block
        assert step.items_per_thread * plan.threads >= units * step.chunk_rows
    if plan.batch_sliced and plan.fragment_parts == 1:
        # The forward reads no weights from shared memory a step, nor does the wide forward
        # (3xTF32's two fragments a tile fill the 128 registers at 16 k tiles a warp).
        for step in filter(None, (plan.forward_step, plan.wide_forward_step)):
            assert step.k_tiles_in_registers == step.k_tiles_per_warp


@_with_sliced_examples
@given(specs, targets)
def test_batch_sliced_blocks_stage_the_same_groups_both_ways_and_hold_every_unit(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    if not plan.batch_sliced:
        return
    cluster = plan.cluster_blocks
    assert plan.forward_step is not None and plan.units_per_block == -(-spec.hidden_size // cluster)
    chunk = plan.forward_chunk_rows
    assert chunk == plan.backward_chunk_rows == plan.forward_step.chunk_rows == plan.backward_step.chunk_rows
    assert max(plan.forward_step.items_per_thread, plan.backward_step.items_per_thread) <= 4
    for step in (plan.forward_step, plan.backward_step):
        if plan.math == "mma":
            assert step.m_tiles_per_warp * step.k_tiles_per_warp <= 32  # past that the step is short of registers
        # Clusters double-buffer the staged rows: others write step t's while one reads t - 1's.
        assert step.stage_buffers == (1 if cluster == 1 else 2)
    clusters = plan.num_blocks // cluster
    # Kernels are compiled for whole passes of rows: an n tile of 8 on tensor cores, 4 rows on
    # FMA; or on FMA up to one_pass_rows rows as they are, one pass of their own.
    pass_rows, one_pass = plan.rows_per_pass, plan.one_pass_rows
    assert (pass_rows, one_pass) in ([(8, 0)] if plan.math == "mma" else [(4, 8), (4, 5)])
    # As many clusters as fit the SMs, or fewer where a GPU's GPCs hold fewer at once.
    for running in (clusters, max(1, clusters // 2 + 1), 1):
        for batch in (1, 3, 8, chunk, chunk + 1, pass_rows * running + 1, (one_pass or pass_rows) * running, 1000, 10**6):
            rows, blocks = plan.group_rows(batch, running), plan.blocks(batch, running)
            # A group takes as few rows as spread the batch over every running cluster.
            spread = -(-batch // running)
            assert rows == min(chunk, spread)
            assert blocks % cluster == 0 and blocks // cluster == min(running, -(-batch // rows))
            # Each direction's kernel for the batch holds its groups' rows in the fewest whole
            # passes of its own, and the launch of its plan takes the same groups.
            for direction in ("forward", "backward"):
                staged = plan.staged_rows(direction, batch, running)
                sized = sized_plan(spec, plan, direction, staged)
                assert sized.rows_per_pass == (staged if staged <= one_pass else pass_rows)
                assert getattr(sized, f"{direction}_step").chunk_rows == staged
                assert staged % sized.rows_per_pass == 0 and staged - sized.rows_per_pass < min(staged, spread) <= staged
                assert sized.group_rows(batch, running) == min(staged, spread)
                assert sized.blocks(batch, running) == min(running, -(-batch // min(staged, spread))) * cluster
    assert plan.blocks(10**6) == plan.blocks(10**6, clusters) == plan.num_blocks
    # Each direction's kernel is compiled for the rows of the batch's groups: up to the
    # backward's chunk both ways, and for the forward up to its wide step's, which stages
    # more rows in as many items a thread as fit 3, exactly where the narrower groups would
    # take the running clusters more than one turn.
    wide = plan.wide_forward_step
    if wide is not None:
        assert wide.chunk_rows > chunk and wide.items_per_thread <= 3
        assert (wide.rows, wide.async_exchange) == (plan.forward_step.rows, plan.forward_step.async_exchange)
    most = {"forward": wide.chunk_rows if wide else chunk, "backward": chunk}
    for running in (clusters, 1):
        for direction in ("forward", "backward"):
            assert plan.staged_rows(direction, running * chunk, running) == chunk
            assert plan.staged_rows(direction, running * chunk + 1, running) == min(most[direction], chunk + pass_rows)
            assert plan.staged_rows(direction, 10**6, running) == most[direction]
    for rows in range(pass_rows, most["forward"] + 1, pass_rows):
        for direction in ("forward", "backward") if rows <= chunk else ("forward",):
            sized = sized_plan(spec, plan, direction, rows)
            step = sized.forward_step if direction == "forward" else sized.backward_step
            # Exactly the group's rows, in as few items a thread as hold them.
            assert step.chunk_rows == rows and step.items_per_thread == -(-plan.units_per_block * rows // plan.threads)
            assert sized.smem_bytes == step.smem_bytes <= target.max_smem_per_block and not sized.wide_forward_step
            assert rows > chunk or sized.smem_bytes <= plan.smem_bytes
            assert ((sized.forward_step.async_exchange, sized.backward_step.async_exchange)
                    == (plan.forward_step.async_exchange, plan.backward_step.async_exchange))
            assert (sized.cluster_blocks, sized.units_per_block, sized.num_blocks) == (cluster, plan.units_per_block,
                                                                                      plan.num_blocks)
    # At the plan's own rows they are its steps, so the runtime launches the plan's kernel there
    # (load_sized_kernel).
    assert sized_plan(spec, plan, "backward", chunk).backward_step == plan.backward_step
    assert sized_plan(spec, plan, "forward", most["forward"]).forward_step == (wide or plan.forward_step)


# Blocks per batch-sliced cluster on the H200 from each hidden size on, to the next (to 256):
# one where its warps each multiply at most 8 fragments a step, else the largest cluster that
# fits. (TF32 from H = 33 to 49 takes 4 or 8 by H: the largest in which every block owns a unit.)
_CLUSTERS_FROM = {"float16": {1: 1, 65: 8, 257: 16}, "bfloat16": {1: 1, 65: 8, 257: 16},
                  "tf32": {1: 1, 33: 4, 64: 8}}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "tf32"])
@pytest.mark.parametrize("hidden", [1, 8, 9, 16, 32, 33, 64, 65, 72, 73, 112, 113, 128, 129, 144, 145, 200, 256, 257,
                                    512, 513])
def test_small_tensor_core_layers_are_batch_sliced_on_h200(dtype, hidden):
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    allow_tf32=dtype == "tf32")
    plan = plan_layer(spec, SM90_H200)
    sliced = hidden <= (256 if dtype == "tf32" else 512)
    assert plan.math == "mma" and plan.batch_sliced == sliced
    assert ("batch rows x" in plan.summary()) == sliced
    if sliced:
        cluster = _CLUSTERS_FROM[dtype][max(h for h in _CLUSTERS_FROM[dtype] if h <= hidden)]
        assert plan.cluster_blocks == cluster and ("clusters of" in plan.summary()) == (cluster > 1)
        assert plan.non_portable_cluster == (cluster > 8)
        # B = 8: a row a cluster, over as many as run; a large batch takes every cluster.
        assert plan.blocks(batch=8) == min(8, 132 // cluster) * cluster
        assert plan.blocks(batch=10**5) == 132 // cluster * cluster


@pytest.mark.parametrize("dtype, hidden, allow_tf32, chunk, wide", [
    ("float64", 128, False, 20, 48),   # the backward's rows of 4H leave 20 (FMA: whole passes of 4 rows)
    ("float64", 256, False, 12, 16),   # 64 weights a thread in 128 registers: one item
    ("float32", 256, False, 16, 48),   # strict float32 (3xTF32), clusters of 16 blocks of 16 units
    ("float32", 256, True, 16, 24),    # TF32, 32 units a block
    ("float16", 512, False, 16, 24),
    ("float16", 256, False, 32, None),  # the backward leaves room for 4 items a thread already
])
def test_wide_forward_steps_on_the_h200(dtype, hidden, allow_tf32, chunk, wide):
    plan = plan_layer(LSTMSpec(input_size=hidden, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32), SM90_H200)
    assert plan.forward_chunk_rows == plan.backward_chunk_rows == chunk
    assert (plan.wide_forward_step and plan.wide_forward_step.chunk_rows) == wide


@pytest.mark.parametrize("dtype, hidden, forward, backward", [
    ("float16", 64, False, False),    # one block: nothing to send
    ("float16", 72, False, False),    # clusters of 8 blocks of 9 units: odd, no 4-byte pairs
    ("bfloat16", 112, True, False),   # 8 blocks of 14 units; 16-bit backward: plain stores (measured)
    ("float16", 256, True, False),
    ("bfloat16", 300, False, False),  # 16 blocks of 19 units
    ("float16", 514, False, False),   # no cluster holds it: cooperative
    ("tf32", 37, True, True),         # 4-byte values: any unit count
    ("float32", 100, True, True),     # strict float32 (3xTF32): clusters of 8 blocks of 13 units
    ("float64", 128, True, True),     # 8-byte values, st.async.b64
])
def test_clusters_send_staged_rows_by_st_async_in_whole_4_byte_words(dtype, hidden, forward, backward):
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    allow_tf32=dtype == "tf32")
    plan = plan_layer(spec, SM90_H200)
    assert (plan.forward_step.async_exchange, plan.backward_step.async_exchange) == (forward, backward)
    summary = plan.summary()
    assert ("forward rows sent" in summary or "forward and backward rows sent" in summary) == forward
    assert ("backward rows sent by st.async" in summary) == backward
    kernels = render_layer(spec, SM90_H200)
    sends = "st.async.shared::cluster"
    assert (sends in kernels["forward"].text) == forward and (sends in kernels["backward"].text) == backward


@example(spec=LSTMSpec(input_size=1, hidden_size=128), target=SM90_H200)
@example(spec=LSTMSpec(input_size=1, hidden_size=256, dtype="float64"), target=SM90_H200)
@example(spec=LSTMSpec(input_size=1, hidden_size=9), target=SM90_H200)
@example(spec=LSTMSpec(input_size=1, hidden_size=64, dtype="float64"), target=TARGETS[1])
@given(specs, targets)
def test_fma_steps_cover_the_block_and_fit_registers_and_shared_memory(spec, target):
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    if not isinstance(plan.forward_step, FmaStep):
        return
    assert spec.dtype in ("float32", "float64") and plan.math == "fma" and not plan.mma_type and plan.batch_sliced
    units, element = plan.units_per_block, DTYPES[spec.dtype]["bytes"]
    vector = 16 // element
    for step, rows, k_len in ((plan.forward_step, 4 * units, spec.hidden_size),
                              (plan.backward_step, units, 4 * spec.hidden_size)):
        # A thread per (weight row, part of K): rows padded to a power of two, at most 16 parts.
        assert step.rows == rows <= step.m_threads < 2 * rows
        assert step.m_threads & (step.m_threads - 1) == 0 and step.m_threads * step.k_split == plan.threads == 256
        assert step.k_split <= 16
        # The fewest whole 16 bytes a part that cover K; at most 64 weights a thread.
        assert step.k_per_thread % vector == 0 and step.k_per_thread <= 64
        assert step.k_per_thread * step.k_split >= k_len > (step.k_per_thread - vector) * step.k_split
        assert step.stage_stride == step.k_per_thread * step.k_split + vector  # 16-byte reads stay aligned
        # The forward's epilogue reads a (unit, row)'s 4 gate sums as 16-byte vectors.
        assert step.partial_stride % 4 == 0 and step.partial_stride >= step.m_threads
        assert step.chunk_rows % plan.rows_per_pass == 0 and step.chunk_rows >= plan.rows_per_pass == 4  # whole passes
        assert step.staged_bytes % 16 == 0
        assert step.staged_bytes >= step.stage_buffers * step.chunk_rows * step.stage_stride * element
        barriers = 16 if plan.cluster_blocks > 1 else 0
        partial_bytes = step.k_split * step.chunk_rows * step.partial_stride * element  # in the accumulation type
        assert step.smem_bytes == step.staged_bytes + partial_bytes + barriers
        assert step.smem_bytes <= plan.smem_bytes <= target.max_smem_per_block
        assert step.items_per_thread * plan.threads >= units * step.chunk_rows
        # Past 64 registers of weights, at most 2 (unit, row) items a thread (ptxas spills at 4).
        assert step.k_per_thread * element <= 256 or step.items_per_thread <= 2
    assert plan.threads <= target.max_threads_per_block


# float64 on the H200: batch-sliced FMA blocks where a cluster's registers hold W_hh (at most
# 64 weights a thread, K in at most 16 parts), the largest portable cluster that does, 16
# blocks to H = 256 (not H = 129-135, where some block of 16 would own no unit); past that,
# the cooperative warp-per-unit kernels.
_FMA_CLUSTERS = {1: None, 8: None, 9: 1, 16: 1, 17: 2, 32: 2, 33: 4, 64: 4, 65: 8, 128: 8, 129: None, 144: 16, 256: 16, 257: None, 1024: None}


@pytest.mark.parametrize("hidden", sorted(_FMA_CLUSTERS))
def test_float64_is_batch_sliced_on_cuda_cores_to_h_256(hidden):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype="float64"), SM90_H200)
    cluster = _FMA_CLUSTERS[hidden]
    assert plan.math == "fma" and plan.batch_sliced == (cluster is not None)
    assert ("for FMA" in plan.summary()) == plan.batch_sliced
    if cluster:
        assert plan.cluster_blocks == cluster and isinstance(plan.forward_step, FmaStep)
        # 8-byte values: every cluster sends its rows by st.async.
        assert plan.forward_step.async_exchange == plan.backward_step.async_exchange == (cluster > 1)


@pytest.mark.parametrize("hidden, batch, running, group, kernel_rows, pass_rows, clusters", [
    # The plan's 8 clusters of 16 blocks, 7 of which run at once on the H200; 64 weights a
    # thread (128 registers): one pass of up to 5 rows.
    (256, 1, 7, 1, 1, 1, 1), (256, 8, 7, 2, 2, 2, 4), (256, 32, 7, 5, 5, 5, 7), (256, 36, 7, 6, 8, 4, 6),
    (256, 16, 8, 2, 2, 2, 8), (256, 33, 8, 5, 5, 5, 7),
    # 16 clusters of 8 (15 run): one pass of up to 8 rows, then passes of 4.
    (128, 1, 15, 1, 1, 1, 1), (128, 8, 15, 1, 1, 1, 8), (128, 64, 15, 5, 5, 5, 13), (128, 120, 15, 8, 8, 8, 15),
    (128, 121, 15, 9, 12, 4, 14), (128, 64, 16, 4, 4, 4, 16),
])
def test_fma_clusters_take_small_batches_in_groups_of_their_own_rows(hidden, batch, running, group, kernel_rows,
                                                                     pass_rows, clusters):
    # A thread of the FMA product carries the rows of a pass through its weights at once, so
    # a small batch spreads over the clusters a row at a time, and the kernel for its groups
    # multiplies one pass of their own rows: float64 forward at B = 1 and 8 took 0.69-0.79 of
    # the time of groups rounded up to passes of 4, 0.84 at H = 128 B = 64 (bench/NOTES.md v24).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float64")
    plan = plan_layer(spec, SM90_H200)
    assert plan.rows_per_pass == 4 and plan.one_pass_rows == (5 if hidden == 256 else 8)
    assert plan.group_rows(batch, running) == group
    assert plan.staged_rows("forward", batch, running) == plan.staged_rows("backward", batch, running) == kernel_rows
    assert plan.blocks(batch, running) == clusters * plan.cluster_blocks
    for direction in ("forward", "backward"):
        sized = sized_plan(spec, plan, direction, kernel_rows)
        assert sized.rows_per_pass == pass_rows and sized.blocks(batch, running) == clusters * plan.cluster_blocks
        if kernel_rows > plan.one_pass_rows + 1:
            with pytest.raises(AssertionError, match="whole passes"):  # a kernel's rows past one pass
                sized_plan(spec, plan, direction, kernel_rows - 1)


# Strict float32 on the H200: batch-sliced as 3xTF32 on tensor cores (one block while the
# warps' chains are short, then clusters of up to 16) to H = 256; past that, the cooperative
# FMA kernels, where the three TF32 products lost (plan_layer).
_STRICT_FLOAT32_PLANS = {1: 1, 32: 1, 33: 4, 64: 8, 129: 8, 200: 16, 256: 16, 257: "fma", 544: "fma", 1024: "fma"}


@pytest.mark.parametrize("hidden", sorted(_STRICT_FLOAT32_PLANS))
def test_strict_float32_runs_batch_sliced_on_tensor_cores_as_three_tf32_products(hidden):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype="float32"), SM90_H200)
    expected = _STRICT_FLOAT32_PLANS[hidden]
    if isinstance(expected, int):
        assert plan.batch_sliced and plan.cluster_blocks == expected
    else:
        assert not plan.batch_sliced and plan.math == expected
    assert plan.mma_type == ("tf32x3" if plan.math == "mma" else "")
    if plan.math == "mma":
        assert plan.mma_input_type == "tf32" and plan.fragment_parts == 2
        # Its GEMMs and its tolerance stay strict float32's (runtime/gemm.py, lstmgen.compare).
        assert tolerance_key("float32", plan.mma_type) == "float32"


@given(specs, targets)
def test_three_tf32_products_only_in_batch_sliced_recurrences(spec, target):
    # The cooperative kernels keep strict float32 on FMA: there 3xTF32 lost (plan_layer).
    assume(spec.hidden_size <= _largest_hidden(target, spec.dtype))
    plan = plan_layer(spec, target)
    assert plan.mma_type != "tf32x3" or plan.batch_sliced


@pytest.mark.parametrize("dtype, allow_tf32, hidden, target, activations, tf32x3_gemms", [
    ("float32", False, 64, SM90_H200, "fast", True),     # batch-sliced 3xTF32 recurrence
    ("float32", False, 1024, SM90_H200, "fast", True),   # cooperative FMA recurrence; stepwise steps 3xTF32
    ("float32", False, 1024, _AMPERE, "fast", True),
    ("float32", False, 64, _TURING, "fast", False),      # no TF32 before sm_80: FMA and FFMA GEMMs
    ("float32", True, 1024, SM90_H200, "hardware", False),  # TF32 allowed: TF32 fragments and GEMMs
    ("float32", True, 1064, SM90_H200, "fast", True),    # too wide for TF32 fragments: strict float32
    ("float16", False, 256, SM90_H200, "hardware", False),
    ("bfloat16", False, 1024, SM90_H200, "hardware", False),
    ("float16", False, 64, _TURING, "fast", False),      # 16-bit storage on FMA, accumulating in float32
    ("float64", False, 256, SM90_H200, "exact", False),
])
def test_activations_and_gemms_follow_how_the_products_round(dtype, allow_tf32, hidden, target, activations,
                                                             tf32x3_gemms):
    # tanh.approx (about 2^-11 off) only where the products round to 11-bit significands; strict
    # float32's stepwise step as three TF32 products wherever the GPU has TF32 (runtime/tf32_split.py).
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32), target)
    assert (plan.activations, plan.tf32x3_gemms) == (activations, tf32x3_gemms)


def test_strict_float32_past_portable_clusters_falls_back_to_the_cooperative_kernels():
    portable = Target(arch="sm_90", sm_count=132, max_smem_per_block=232448)  # clusters of 8 at most
    assert plan_layer(LSTMSpec(input_size=8, hidden_size=129), portable).cluster_blocks == 8
    cooperative = plan_layer(LSTMSpec(input_size=8, hidden_size=200), portable)
    assert cooperative.math == "fma" and not cooperative.batch_sliced
    # The A100 has no clusters: one block to H = 64.
    assert plan_layer(LSTMSpec(input_size=8, hidden_size=64), _AMPERE).cluster_blocks == 1
    assert not plan_layer(LSTMSpec(input_size=8, hidden_size=65), _AMPERE).batch_sliced
    assert plan_layer(LSTMSpec(input_size=8, hidden_size=64, dtype="float64"), _AMPERE).cluster_blocks == 1
    # Without TF32 tensor cores (before sm_80), strict float32 takes the FMA step: one block to H = 64.
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=64), _TURING)
    assert plan.math == "fma" and plan.batch_sliced and plan.cluster_blocks == 1
    assert not plan_layer(LSTMSpec(input_size=8, hidden_size=65), _TURING).batch_sliced


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("hidden, math", [(1, "mma"), (128, "mma"), (1000, "mma"), (1056, "mma"), (1057, "fma")])
def test_16_bit_layers_run_on_tensor_cores_up_to_8_units_per_block_on_h200(dtype, hidden, math):
    # Past 8 units (H > 1056) the forward kernel's 36 gate rows make 3 m tiles, which do not
    # divide 8 warps; the FMA kernels take over.
    plan = plan_layer(LSTMSpec(input_size=64, hidden_size=hidden, dtype=dtype), SM90_H200)
    assert plan.math == math
    assert (plan.mma_type == {"float16": "f16", "bfloat16": "bf16"}[dtype]) == (math == "mma")
    assert ("as mma.sync fragments" in plan.summary()) == (math == "mma")


@settings(max_examples=60, deadline=None)
@given(spec=layer_specs(max_hidden=2000))
@example(spec=LSTMSpec(input_size=8, hidden_size=1024, dtype="float16"))
def test_cooperative_forwards_send_tagged_h_in_whole_vectors_of_words(spec):
    # The tagged words replace the grid barrier where every block needs all of h_t; batch-sliced
    # kernels meet within their block or cluster. Rows are copied in 16-byte vectors of words:
    # a 16-bit value and its tag in 4 bytes, float32 and float64 with the tag in their last
    # bit. float64 keeps the barrier where most of W_hh's rows come from L2.
    plan = plan_layer(spec, SM90_H200)
    words_per_vector = {"float16": 4, "bfloat16": 4, "float32": 4, "float64": 2}[spec.dtype]
    mostly_from_l2 = spec.dtype == "float64" and not plan.batch_sliced and 2 * plan.forward_weights.on_chip < spec.hidden_size
    assert plan.tagged_exchange == (not plan.batch_sliced and not mostly_from_l2
                                    and spec.hidden_size % words_per_vector == 0)
    assert ("words tagged with t" in plan.summary()) == plan.tagged_exchange
    assert ("exchange_t* exchange" in render_layer(spec)["forward"].text) == plan.tagged_exchange


@pytest.mark.parametrize("dtype, allow_tf32, hidden, batch", [
    ("float16", False, 1024, 8), ("bfloat16", False, 520, 15), ("float32", True, 1024, 8), ("float32", True, 512, 16),
    ("float32", True, 264, 31), ("float32", False, 512, 16), ("float32", False, 1400, 5), ("bfloat16", False, 1060, 7),
    ("float64", False, 512, 8), ("float64", False, 1024, 4), ("float64", False, 1088, 3),  # half of each row on chip
    ("float64", False, 1090, 0), ("float64", False, 2000, 0)])
def test_tagged_words_carry_h_while_a_block_copies_at_most_32_kib_of_them(dtype, allow_tf32, hidden, batch):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32), SM90_H200)
    assert plan.tagged_exchange_batch == batch
    assert (f"tagged with t up to B = {batch}," in plan.summary()) == (batch > 0)


@pytest.mark.parametrize("hidden, math, fragments_in", [
    (1, "mma", "registers"), (576, "mma", "registers"),
    # Past 576 a TF32 slice (k tiles of 8) no longer fits the register budget: the rest of it
    # goes to shared memory, 57344 bytes at H = 1024 both ways (backward, 8 bytes a lane).
    (577, "mma", "registers and shared memory"), (1024, "mma", "registers and shared memory"),
    (1056, "mma", "registers and shared memory"), (1064, "fma", "")])
def test_float32_with_tf32_allowed_runs_on_tensor_cores_up_to_1056(hidden, math, fragments_in):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, allow_tf32=True), SM90_H200)
    assert plan.math == math and plan.mma_type == ("tf32" if math == "mma" else "")
    if math == "mma":
        assert f"W_hh slice in {fragments_in} as mma.sync fragments" in plan.summary()
    if hidden == 1024:
        for step in (plan.forward_step, plan.backward_step):
            shared_tiles = step.k_tiles_per_warp - step.k_tiles_in_registers
            lane_bytes = 16 if step.rows > 8 else 8
            assert 8 * step.m_tiles_per_warp * shared_tiles * 32 * lane_bytes == 57344


@pytest.mark.parametrize("dtype, allow_tf32, hidden, m_tiles_per_warp, chunk_rows", [
    # 2 m tiles: each warp multiplies both over 1/8 of K, so that no two warps load the same
    # B fragments (bench/NOTES.md v28) ...
    ("float16", False, 1024, 2, 64), ("bfloat16", False, 576, 2, 64), ("float32", True, 1024, 2, 32),
    # ... unless the partial sums of 8 parts of K would leave room for fewer staged rows
    # (TF32 H = 768: 48 rows, not 56).
    ("float32", True, 768, 1, 56), ("float32", True, 640, 1, 64)])
def test_cooperative_warps_take_every_m_tile_unless_fewer_rows_would_fit(dtype, allow_tf32, hidden, m_tiles_per_warp,
                                                                           chunk_rows):
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32), SM90_H200)
    step = plan.forward_step
    assert not plan.batch_sliced and plan.math == "mma" and step.m_tiles == 2
    assert step.m_tiles_per_warp == m_tiles_per_warp and step.k_split == 4 * m_tiles_per_warp
    assert step.chunk_rows == chunk_rows
    assert plan.backward_step.m_tiles == plan.backward_step.m_tiles_per_warp == 1  # a unit's row a tile row


def test_tf32_needs_ampere():
    spec = LSTMSpec(input_size=8, hidden_size=64, allow_tf32=True)
    assert plan_layer(spec, _AMPERE).math == "mma" and plan_layer(spec, _TURING).math == "fma"


def test_hidden_1024_float32_on_h200_is_one_warp_per_unit():
    plan = plan_layer(LSTMSpec(input_size=64, hidden_size=1024), SM90_H200)
    assert (plan.num_blocks, plan.units_per_block, plan.warps) == (128, 8, 8)
    assert "128 blocks x 256 threads" in plan.summary()


def test_seed_layer_runs_in_blocks_that_each_own_its_5_units_and_a_group_of_batch_rows():
    plan = plan_layer(load_spec(SPECS / "seed.toml").layers[0], SM90_H200)
    assert plan.batch_sliced and plan.cluster_blocks == 1 and plan.num_blocks == 132
    assert (plan.units_per_block, plan.warps, plan.mma_type) == (5, 8, "tf32x3")
    assert plan.weights_in == "registers"


def test_error_names_the_layer():
    spec = LSTMSpec(input_size=1, hidden_size=20000, where="big.toml, layer 2")
    with pytest.raises(SpecError, match=r"hidden_size 20000 is too large for sm_90 \(big\.toml, layer 2\)"):
        plan_layer(spec, SM90_H200)


def test_threads_respect_a_small_per_block_limit():
    target = Target("sm_70", sm_count=10, max_smem_per_block=65536, max_threads_per_block=128)
    plan = plan_layer(LSTMSpec(input_size=4, hidden_size=1000), target)
    assert plan.units_per_block == 100 and plan.warps == 4 and plan.threads == 128
    assert plan.weights_in != "registers"


def test_tensor_cores_need_room_for_their_eight_warps():
    small = Target("sm_90", sm_count=132, max_smem_per_block=232448, max_threads_per_block=128)
    spec = LSTMSpec(input_size=4, hidden_size=256, dtype="float16")
    assert plan_layer(spec, SM90_H200).math == "mma"
    plan = plan_layer(spec, small)
    assert plan.math == "fma" and plan.threads <= 128


def test_clusters_never_outnumber_the_sms():
    # A GPU with clusters but fewer SMs than a cluster's blocks gets clusters that fit it.
    tiny = Target(arch="sm_90", sm_count=4, max_smem_per_block=232448, max_cluster_blocks=16)
    plan = plan_layer(LSTMSpec(input_size=8, hidden_size=256, dtype="float16"), tiny)
    assert plan.num_blocks >= 1 and plan.cluster_blocks <= tiny.sm_count
    if plan.batch_sliced:
        assert 1 <= plan.blocks(10**6) <= plan.num_blocks and plan.group_rows(10**6) >= plan.rows_per_pass


@pytest.mark.parametrize("arch, asked, planned", [("sm_80", 8, 1), ("sm_80", 16, 1), ("sm_90", None, 8)])
def test_clusters_need_sm_90_and_a_hand_built_target_gets_the_portable_size(arch, asked, planned):
    # Thread-block clusters came with sm_90: below it none is planned, whatever the target says.
    spec = LSTMSpec(input_size=8, hidden_size=256, dtype="float16")
    target = Target(arch=arch, sm_count=108, max_smem_per_block=166912,
                    **({"max_cluster_blocks": asked} if asked else {}))
    assert plan_layer(spec, target).cluster_blocks == planned
    assert ("__cluster_dims__" in render_layer(spec, target)["forward"].text) == (planned > 1)


@given(specs, st.integers(1, 4096))
def test_stepwise_recurrence_from_a_batch_that_shrinks_as_h_grows(spec, larger_by):
    # Large batches run a cuBLAS GEMM and a cell kernel a step; the planner names the batch
    # from which (0: never, below H = 256 in float64 and 512 otherwise, nor the forward of
    # tensor-core clusters), never below the rows that fill cuBLAS's tiles, and wider layers
    # (more work a row) switch at fewer rows. float64 from H = 128 where the one-kernel DMMA
    # step takes the first of those batches (H = 128: B = 256), which no rule of width orders.
    assume(spec.hidden_size + larger_by <= _largest_hidden(SM90_H200, spec.dtype))
    plan = plan_layer(spec, SM90_H200)
    wider = plan_layer(LSTMSpec(spec.input_size, spec.hidden_size + larger_by, spec.dtype, allow_tf32=spec.allow_tf32),
                       SM90_H200)
    rows = [planned.stepwise_from_batch or float("inf") for planned in (plan, wider)]
    # Tensor-core clusters (16 bits at H = 512) keep their forward persistent at any batch.
    forward_persistent = plan.batch_sliced and plan.math == "mma"
    narrow = spec.hidden_size < (256 if spec.dtype == "float64" else 512)
    one_kernel = spec.hidden_size >= 128 and plan.dmma_step_until_batch >= -(-4 * 2**20 // spec.hidden_size**2)
    never = (narrow and not one_kernel) or forward_persistent
    assert (plan.stepwise_from_batch == 0) == never
    ordered = spec.dtype != "float64" or spec.hidden_size >= 256
    assert 32 <= rows[1] <= rows[0] or not ordered
    # The backward recurrence: the same batch, but earlier in float32, whose persistent
    # backward is the slower half.
    backward_rows = [planned.stepwise_backward_from_batch or float("inf") for planned in (plan, wider)]
    assert 32 <= backward_rows[1] <= backward_rows[0] <= rows[0] or not ordered
    assert ((plan.stepwise_backward_from_batch == 0) == (narrow and not one_kernel)) or spec.dtype == "float32"
    if spec.dtype != "float32" and not forward_persistent:
        assert plan.stepwise_backward_from_batch == plan.stepwise_from_batch
    forward, backward = plan.stepwise_from_batch, plan.stepwise_backward_from_batch
    if forward == backward and forward:
        assert f"from B = {forward} a cuBLAS GEMM and a cell kernel a step" in plan.summary()
    elif backward:
        assert f"backward from B = {backward} a cuBLAS GEMM and a cell kernel a step" in plan.summary()
        assert (f"forward from B = {forward} and" in plan.summary()) == bool(forward)
    else:
        assert "cuBLAS" not in plan.summary()


@pytest.mark.parametrize("dtype, allow_tf32, hidden, from_batch, backward_from_batch", [
    # Where python -m lstmgen.bench.crossover measured the stepwise recurrence faster on the H200.
    ("float32", False, 512, 128, 32), ("float32", False, 1024, 64, 32), ("float32", True, 512, 128, 32),
    ("float32", True, 1024, 64, 32), ("float32", False, 256, 0, 256), ("float32", True, 128, 0, 0),
    ("float16", False, 512, 0, 128), ("bfloat16", False, 512, 0, 128), ("bfloat16", False, 1024, 64, 64), ("float64", False, 256, 64, 64),
    ("float64", False, 512, 32, 32), ("float64", False, 1024, 32, 32), ("float16", False, 256, 0, 0),
    ("float64", False, 128, 256, 256), ("float64", False, 64, 0, 0),
    ("float64", False, 136, 0, 0)])  # the one-kernel step takes up to B = 226 there, stepwise would start at 227
def test_stepwise_recurrence_from_the_measured_crossover(dtype, allow_tf32, hidden, from_batch, backward_from_batch):
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    plan = plan_layer(spec, SM90_H200)
    assert (plan.stepwise_from_batch, plan.stepwise_backward_from_batch) == (from_batch, backward_from_batch)


@pytest.mark.parametrize("dtype, hidden, target, until_batch", [
    ("float64", 128, SM90_H200, 256), ("float64", 256, SM90_H200, 64), ("float64", 1024, SM90_H200, 4),
    ("float64", 128, _AMPERE, 256),   # mma.m8n8k4 from sm_80
    ("float64", 128, _TURING, 0),     # none before it
    ("float64", 100, SM90_H200, 0),   # H not a multiple of the step's 8 units
    ("float32", 128, SM90_H200, 0),
])
def test_float64_one_kernel_step_up_to_4m_of_batch_x_h2(dtype, hidden, target, until_batch):
    # float64's stepwise forward runs a step as one DMMA kernel up to batch x H^2 = 4M, where
    # it beat cuBLAS's GEMM and the cell kernel on the H200 (bench/NOTES.md v22); the cell
    # file holds that kernel only where the plan runs it.
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype)
    plan = plan_layer(spec, target)
    assert plan.dmma_step_until_batch == until_batch
    source = render_layer(spec, target)["cell"]
    assert ("lstm_forward_step" in source.entries) == bool(until_batch)
    assert ("mma.sync.aligned.m8n8k4" in source.text) == bool(until_batch)
