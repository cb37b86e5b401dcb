"""Spec dtype names as NumPy dtypes: bfloat16 through ml_dtypes, sizes as the generator assumes."""

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from lstmgen.codegen import DTYPES, LSTMSpec
from lstmgen.dtypes import finfo, numpy_dtype
from lstmgen.parameters import initial_parameters


@pytest.mark.parametrize("name", list(DTYPES))
def test_numpy_sizes_match_the_generators_table(name):
    types = DTYPES[name]
    assert numpy_dtype(name).itemsize == types["bytes"]
    assert numpy_dtype(types["accumulate_dtype"]).itemsize == types["accumulate_bytes"]


def test_bfloat16_resolves_without_any_other_import_loading_ml_dtypes():
    # NumPy knows the name only once ml_dtypes is imported; lstmgen.dtypes must do that itself.
    script = "from lstmgen.dtypes import numpy_dtype; print(numpy_dtype('bfloat16').itemsize)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2"]


def test_bfloat16_is_ml_dtypes_type_with_float32s_range_and_8_bits():
    assert numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    info = finfo("bfloat16")
    assert (info.eps, info.nexp, float(info.tiny)) == (2.0**-7, 8, float(np.finfo(np.float32).tiny))


def test_initial_parameters_are_rounded_to_bfloat16():
    spec = LSTMSpec(input_size=3, hidden_size=4, dtype="bfloat16")
    rounded, exact = initial_parameters(spec, seed=5), initial_parameters(spec, seed=5, dtype=np.float64)
    for name, value in rounded.items():
        assert value.dtype == numpy_dtype("bfloat16"), name
        assert np.array_equal(value, exact[name].astype(ml_dtypes.bfloat16)), name
        assert not np.array_equal(value.astype(np.float64), exact[name]), name  # rounding happened
