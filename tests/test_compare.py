"""The comparison every GPU check relies on must catch what it exists to catch."""

import numpy as np
import pytest

from lstmgen.compare import TOLERANCES, mismatches


@pytest.fixture
def expected():
    return np.random.default_rng(0).uniform(-1, 1, (7, 5))


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_rounding_to_the_dtype_passes(expected, dtype):
    assert mismatches("y", expected.astype(dtype), expected, dtype) == []


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


def test_a_swapped_gate_fails(expected):
    # sigmoid where tanh belongs moves values by far more than any tolerance.
    assert mismatches("y", 1 / (1 + np.exp(-expected)), np.tanh(expected), "float32")


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
