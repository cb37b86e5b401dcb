"""The comparison every GPU check relies on must catch what it exists to catch."""

import numpy as np
import pytest

from lstmgen import reference
from lstmgen.codegen import DTYPES
from lstmgen.compare import TOLERANCES, mismatches, tolerance_key, underflow_floor
from lstmgen.dtypes import finfo, numpy_dtype


@pytest.fixture
def expected():
    return np.random.default_rng(0).uniform(-1, 1, (7, 5))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_rounding_to_the_dtype_passes(expected, dtype):
    assert mismatches("y", expected.astype(numpy_dtype(dtype)), expected, dtype) == []


def test_only_kernels_that_run_tf32_get_its_tolerance():
    assert tolerance_key("float32", "tf32") == "tf32"
    assert tolerance_key("float32", "") == "float32"      # allow_tf32 past the fragments' limit: FMA
    assert tolerance_key("float32", "tf32x3") == "float32"  # strict float32 as three TF32 products
    assert tolerance_key("bfloat16", "bf16") == "bfloat16"


def test_tf32_passes_its_rounding_and_fails_float32s():
    # TF32 keeps 10 of float32's 23 mantissa bits: round half up at bit 13.
    values = np.random.default_rng(1).uniform(-1, 1, 64)
    bits = values.astype(np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    assert mismatches("y", rounded, values, "tf32") == []
    assert mismatches("y", rounded, values, "float32")  # strict float32 would not pass it


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_an_error_past_tolerance_is_reported_with_index_and_values(expected, dtype):
    actual = expected.copy()
    actual[3, 2] += 20 * TOLERANCES[dtype] * np.abs(expected).max()
    report = mismatches("dW_hh", actual, expected, dtype)
    assert report[0].startswith("dW_hh: 1 of 35 elements off by more than")
    assert report[1] == f"  at (3, 2): expected {expected[3, 2]:.10g}, got {actual[3, 2]:.10g}"


def test_unwritten_poisoned_elements_fail(expected):
    actual = expected.copy()
    actual[0, 0] = np.nan
    assert mismatches("h_T", actual, expected, "float64")[1].startswith("  at (0, 0): expected")


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_a_swapped_gate_fails(expected, dtype):
    # sigmoid where tanh belongs moves values by far more than any tolerance.
    assert mismatches("y", 1 / (1 + np.exp(-expected)), np.tanh(expected), dtype)


def test_only_the_first_few_mismatches_are_listed(expected):
    report = mismatches("dx", expected + 1, expected, "float32")
    assert report[0].startswith("dx: 35 of 35 elements") and len(report) == 6


def test_shape_mismatch_is_reported(expected):
    assert mismatches("y", expected[:3], expected, "float32") == ["y: shape (3, 5), expected (7, 5)"]


def test_float32_underflow_below_the_floor_is_not_a_mismatch():
    expected = np.array([3.8e-58, -1.2e-40])  # gradients that vanished over a long sequence
    assert mismatches("dh0", np.zeros(2, dtype=np.float32), expected, "float32") == []
    assert mismatches("dh0", np.zeros(2), expected, "float64")  # float64 resolves them


def test_a_cancelled_sum_is_judged_by_the_size_of_its_terms():
    # The float16 tier's draw: dx = 0.0070 from terms of root-sum-square 0.083, 1.9e-4 off.
    expected, actual = np.array([0.0070214544]), np.array([0.0068359375])
    assert mismatches("dx", actual, expected, "float16")
    assert mismatches("dx", actual, expected, "float16", term_sizes=np.array([0.083])) == []
    # The term sizes only ever widen the yardstick to them, not beyond.
    assert mismatches("dx", actual + 0.01, expected, "float16", term_sizes=np.array([0.083]))


def test_float16_floor_is_its_smallest_normal_not_tiny_over_eps():
    # An output whose whole scale is 1e-3 is judged by the floor, 6.1e-5, not 2e-2 x 1e-3.
    assert mismatches("dh0", np.array([1e-3 + 5e-5, 5e-4]), np.array([1e-3, 5e-4]), "float16") == []
    assert mismatches("dh0", np.array([1e-3 + 8e-5, 5e-4]), np.array([1e-3, 5e-4]), "float16")


def _swap_input_and_forget_gates(weights):
    hidden = weights.shape[0] // 4
    return np.concatenate([weights[hidden:2 * hidden], weights[:hidden], weights[2 * hidden:]])


def test_bfloat16_catches_input_and_forget_gates_swapped():
    # Both gates sit near sigmoid(0) = 0.5 with torch's initialisation, so swapping them moves
    # y by only 12% of its scale in this draw: inside float16's margin of 41 roundings
    # scaled to bfloat16 (16%), outside bfloat16's tolerance.
    rng = np.random.default_rng(28)
    bound = 1 / np.sqrt(8)
    params = {"W_ih": rng.uniform(-bound, bound, (32, 3)), "W_hh": rng.uniform(-bound, bound, (32, 8)),
              "b": rng.uniform(-bound, bound, 32)}
    x = rng.uniform(-1, 1, (20, 4, 3))
    expected = reference.forward(params, x).y
    swapped = reference.forward({name: _swap_input_and_forget_gates(value) for name, value in params.items()}, x).y
    unit_roundoff = finfo("bfloat16").eps / 2
    assert np.abs(swapped - expected).max() < 41 * unit_roundoff * np.abs(expected).max()
    assert mismatches("y", swapped.astype(numpy_dtype("bfloat16")), expected, "bfloat16")


def test_bfloat16_passes_errors_of_a_few_roundings_per_output():
    # What 16-bit stores of h, the gates and dG leave after a sequence: a few u of the scale
    # (2.6u at worst on the H200); 8u passes, and 30u, past the tolerance's 26u, does not.
    rng = np.random.default_rng(3)
    expected = rng.uniform(-1, 1, (50, 8))
    unit_roundoff = finfo("bfloat16").eps / 2
    noise = rng.choice([-1.0, 1.0], expected.shape) * np.abs(expected).max()
    assert mismatches("dW_hh", expected + 8 * unit_roundoff * noise, expected, "bfloat16") == []
    assert mismatches("dW_hh", expected + 30 * unit_roundoff * noise, expected, "bfloat16")


def test_bfloat16_floor_is_at_underflow_as_float32s():
    # bfloat16 underflows where float32 does: gradients that vanished below its range pass...
    vanished = np.array([3.8e-58, -1.2e-40])
    assert mismatches("dh0", np.zeros(2), vanished, "bfloat16") == []
    assert underflow_floor("bfloat16") == 2.0**-126 / 2.0**-7  # float32's tiny over bfloat16's eps
    # ...but an output whose whole scale is small is still judged relative to it: dh0 at 1e-3
    # and half wrong is a wrong kernel, which a floor at bfloat16's eps (7.8e-3) would pass.
    small = np.array([1e-3, -4e-4])
    assert mismatches("dh0", small * [1.5, 1.0], small, "bfloat16")
