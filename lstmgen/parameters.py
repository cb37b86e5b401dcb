"""LSTM parameter shapes and initial values, shared by the GPU layer and its CPU reference twin."""

from __future__ import annotations

import numpy as np

from lstmgen.codegen import BIAS_PARAMETERS, LSTMSpec
from lstmgen.dtypes import numpy_dtype


def parameter_shapes(spec: LSTMSpec) -> dict[str, tuple[int, ...]]:
    """W_ih [4H, I], W_hh [4H, H] and the bias vectors [4H] of the spec's bias mode."""
    gates = 4 * spec.hidden_size
    shapes = {"W_ih": (gates, spec.input_size), "W_hh": (gates, spec.hidden_size)}
    shapes.update({name: (gates,) for name in BIAS_PARAMETERS[spec.bias]})
    return shapes


def initial_parameters(spec: LSTMSpec, seed: int | None, dtype=None) -> dict[str, np.ndarray]:
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.LSTM initialises (host arrays
    of `dtype`, by default the spec's)."""
    bound = 1.0 / np.sqrt(spec.hidden_size)
    rng = np.random.default_rng(seed)
    dtype = dtype or numpy_dtype(spec.dtype)
    return {name: rng.uniform(-bound, bound, shape).astype(dtype)
            for name, shape in parameter_shapes(spec).items()}
