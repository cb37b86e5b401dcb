"""NumPy dtypes and machine limits of the spec's dtype names (lstmgen.codegen.DTYPES).

NumPy has no bfloat16 of its own: ml_dtypes provides it, and CuPy's bfloat16 arrays use that
same type. Importing ml_dtypes registers the name "bfloat16" with NumPy, so a spec's dtype
name goes through here rather than straight to numpy, where it would resolve only if some
other import happened to load ml_dtypes first.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a spec dtype name, e.g. "bfloat16" -> ml_dtypes.bfloat16."""
    return np.dtype(name)


def finfo(name: str):
    """eps, tiny, bits, ... of a spec dtype name; numpy.finfo rejects ml_dtypes' bfloat16."""
    return ml_dtypes.finfo(numpy_dtype(name))
