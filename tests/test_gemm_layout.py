"""How runtime/gemm.py hands a row-major operand to column-major cuBLAS (no GPU needed:
only the array's shape and flags are read)."""

import numpy as np
import pytest

from lstmgen.runtime.gemm import _layout


def test_a_c_contiguous_operand_is_read_as_stored_with_its_row_length_as_leading_dimension():
    assert _layout(np.zeros((5, 7))) == (False, 7)


def test_a_transposed_view_is_read_with_op_t_and_the_stored_arrays_row_length():
    # The layer passes dG^T and W_ih^T this way: [7, 5] stored (rows of 5), read as its
    # transpose, the [5, 7] view.
    assert _layout(np.zeros((7, 5)).T) == (True, 5)


def test_one_row_or_one_column_is_read_as_stored():
    # db's row of ones is [1, T*B]: both C- and F-contiguous, read as stored.
    assert _layout(np.zeros((1, 9))) == (False, 9)
    assert _layout(np.zeros((9, 1))) == (False, 1)


def test_a_strided_operand_is_refused():
    with pytest.raises(AssertionError, match="C-contiguous"):
        _layout(np.zeros((6, 6))[:, ::2])
