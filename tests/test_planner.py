"""CPU tests of the planner (lstmgen.codegen.planner): launch shapes that the kernels rely on.

The recurrence kernels run one persistent block per SM, block k owning hidden units
[k*U, (k+1)*U) and one thread per (unit, batch row); these properties must hold for every
layer and target or the generated kernels would miss units, overrun a block or its smem.
"""

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from lstmgen.codegen import SM90_H200, LSTMSpec, Target, load_spec, plan_layer
from lstmgen.errors import SpecError
from lstmgen.strategies import layer_specs

SPECS = Path(__file__).resolve().parent.parent / "specs"

TARGETS = (
    SM90_H200,
    Target(arch="sm_80", sm_count=108, max_smem_per_block=166912),  # A100
    Target(arch="sm_75", sm_count=40, max_smem_per_block=65536),    # T4
)
BYTES_PER_ELEMENT = {"float32": 4, "float64": 8}

specs = layer_specs(max_hidden=20000, max_input=4096)
targets = st.sampled_from(TARGETS)


@given(specs, targets)
def test_every_unit_has_one_block_and_no_block_is_empty(spec, target):
    plan = plan_layer(spec, target)
    assert 1 <= plan.num_blocks <= target.sm_count
    assert plan.num_blocks * plan.units_per_block >= spec.hidden_size
    assert (plan.num_blocks - 1) * plan.units_per_block < spec.hidden_size


@given(specs, targets)
def test_threads_are_one_per_unit_and_batch_row(spec, target):
    plan = plan_layer(spec, target)
    assert plan.batch_tile >= 1
    assert plan.threads == plan.units_per_block * plan.batch_tile
    assert plan.threads <= target.max_threads_per_block


@given(specs, targets)
def test_weight_slice_in_smem_exactly_when_it_fits(spec, target):
    plan = plan_layer(spec, target)
    assert plan.weight_slice_elems == 4 * plan.units_per_block * spec.hidden_size
    weight_bytes = plan.weight_slice_elems * BYTES_PER_ELEMENT[spec.dtype]
    if plan.weights_in_smem:
        assert plan.smem_bytes == weight_bytes <= target.max_smem_per_block
    else:
        assert plan.smem_bytes == 0
        assert weight_bytes > target.max_smem_per_block


@pytest.mark.parametrize("dtype, in_smem, where", [
    ("float32", True, "shared memory"),
    ("float64", False, "global memory (L2)"),
])
def test_hidden_1024_on_h200(dtype, in_smem, where):
    plan = plan_layer(LSTMSpec(input_size=64, hidden_size=1024, dtype=dtype), SM90_H200)
    assert plan.weights_in_smem is in_smem
    assert (plan.num_blocks, plan.units_per_block) == (128, 8)
    assert "128 blocks" in plan.summary()
    assert f"W_hh slice in {where}" in plan.summary()


def test_seed_layer_gets_one_unit_per_block():
    plan = plan_layer(load_spec(SPECS / "seed.toml").layers[0], SM90_H200)
    assert (plan.num_blocks, plan.units_per_block) == (5, 1)
    assert plan.weights_in_smem


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.arch)
def test_hidden_size_too_large_for_target(target):
    largest = target.sm_count * target.max_threads_per_block
    assert plan_layer(LSTMSpec(input_size=1, hidden_size=largest), target).units_per_block == target.max_threads_per_block
    spec = LSTMSpec(input_size=1, hidden_size=largest + 1, where="big.toml, layer 2")
    message = (rf"hidden_size {largest + 1} is too large for {target.arch} with {target.sm_count} SMs "
               rf"\(big\.toml, layer 2\): .*lower hidden_size to {largest} or less")
    with pytest.raises(SpecError, match=message):
        plan_layer(spec, target)


def test_threads_respect_a_small_per_block_limit():
    target = Target("sm_x", sm_count=10, max_smem_per_block=65536, max_threads_per_block=128)
    plan = plan_layer(LSTMSpec(input_size=4, hidden_size=1000), target)
    assert plan.units_per_block == 100 and plan.batch_tile == 1 and plan.threads == 100
