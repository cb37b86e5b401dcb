"""Checks on arrays handed to a layer, done before any launch."""

from __future__ import annotations

import numpy as np

from lstmgen.codegen import DTYPES
from lstmgen.errors import InputError


def check_array(name: str, array, shape: tuple, dtype: str, meaning: str, device_id: int,
                contiguous: bool = True):
    """Raise InputError unless `array` is a CuPy array on `device_id` of `shape` and `dtype`,
    C-contiguous unless `contiguous` is False.

    `shape` may hold None for an axis that takes any size; `meaning` names the axes, e.g.
    "[T, B, input_size]", for the message.
    """
    import cupy

    if not isinstance(array, cupy.ndarray):
        raise InputError(
            f"{name} is a {type(array).__module__}.{type(array).__name__}, not a CuPy array: the kernels "
            f"read GPU memory; move it with cupy.asarray({name})"
        )
    if array.device.id != device_id:
        raise InputError(
            f"{name} is on GPU {array.device.id} but the layer lives on GPU {device_id}: "
            f"copy it there with `with cupy.cuda.Device({device_id}): {name} = cupy.asarray({name})`"
        )
    if array.dtype != dtype:
        if array.dtype.type is np.void:
            # What cupy.asarray makes of a torch bfloat16 tensor: __cuda_array_interface__ has no
            # type for it, so its elements arrive as bytes, which no astype turns into numbers.
            fix = "take the tensor with cupy.from_dlpack, which keeps bfloat16, not cupy.asarray"
        else:
            # By name: CuPy has no cupy.bfloat16 attribute, but takes "bfloat16" (ml_dtypes' type).
            fix = f"convert it with {name}.astype(\"{dtype}\")"
            if array.dtype.name in DTYPES:
                fix += f" or use a spec with dtype = \"{array.dtype.name}\""
        raise InputError(f"{name} has dtype {array.dtype} but this layer was generated for {dtype}: {fix}")
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        expected = tuple("any" if want is None else want for want in shape)
        raise InputError(
            f"{name} has shape {tuple(array.shape)} but this layer expects {meaning} = {expected}: "
            f"reshape or slice it to that shape"
        )
    if 0 in array.shape:
        raise InputError(
            f"{name} has shape {tuple(array.shape)}, which holds no data: a sequence needs at least "
            f"one step and one batch row"
        )
    if contiguous and not array.flags.c_contiguous:
        raise InputError(
            f"{name} is not C-contiguous (strides {array.strides}): the kernels index it densely; "
            f"pass cupy.ascontiguousarray({name})"
        )
    return array
