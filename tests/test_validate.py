"""CPU tests of runtime/validate.py's dtype messages: arrays are stood in for by a fake with
the attributes check_array reads (the GPU tier passes real CuPy arrays: tests/gpu/test_runtime.py)."""

import types

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from lstmgen.dtypes import numpy_dtype  # noqa: E402
from lstmgen.errors import InputError  # noqa: E402
from lstmgen.runtime.validate import check_array  # noqa: E402


class FakeArray:
    def __init__(self, dtype, shape=(2, 3, 4)):
        self.dtype, self.shape, self.ndim = np.dtype(dtype), shape, len(shape)
        self.device = types.SimpleNamespace(id=0)
        self.flags = types.SimpleNamespace(c_contiguous=True)


@pytest.fixture(autouse=True)
def fake_arrays(monkeypatch):
    monkeypatch.setattr(cupy, "ndarray", FakeArray)


def refusal(dtype, layer_dtype) -> str:
    with pytest.raises(InputError) as raised:
        check_array("x", FakeArray(dtype), (None, None, 4), layer_dtype, "[T, B, input_size]", 0)
    return str(raised.value)


def test_raw_two_byte_elements_name_from_dlpack():
    # What cupy.asarray makes of a torch bfloat16 tensor: no astype turns bytes into numbers.
    assert refusal("V2", "bfloat16") == (
        "x has dtype |V2 but this layer was generated for bfloat16: take the tensor with "
        "cupy.from_dlpack, which keeps bfloat16, not cupy.asarray")


def test_a_real_bfloat16_array_is_offered_astype_and_its_spec():
    # ml_dtypes' bfloat16 is of NumPy's kind "V" too, but it is a type lstmgen runs.
    assert refusal(numpy_dtype("bfloat16"), "float32") == (
        'x has dtype bfloat16 but this layer was generated for float32: convert it with '
        'x.astype("float32") or use a spec with dtype = "bfloat16"')


def test_a_type_lstmgen_does_not_run_is_offered_astype_alone():
    assert refusal("int32", "float16") == (
        'x has dtype int32 but this layer was generated for float16: convert it with x.astype("float16")')


def test_the_layer_dtype_passes():
    array = FakeArray(numpy_dtype("bfloat16"))
    assert check_array("x", array, (None, None, 4), "bfloat16", "[T, B, input_size]", 0) is array
