"""The dense head after the LSTM stack: out = activation(h W^T + b), on NumPy or CuPy."""

from __future__ import annotations

import numpy as np

from lstmgen.codegen import HeadSpec

# activation(z) and its derivative written in terms of the output y = activation(z).
_ACTIVATIONS = {
    "linear": (lambda xp, z: z, lambda xp, y: 1.0),
    "sigmoid": (lambda xp, z: 1.0 / (1.0 + xp.exp(-z)), lambda xp, y: y * (1.0 - y)),
    "tanh": (lambda xp, z: xp.tanh(z), lambda xp, y: 1.0 - y * y),
    "relu": (lambda xp, z: xp.maximum(z, 0), lambda xp, y: (y > 0).astype(y.dtype)),
}


class Head:
    """Parameters W [output_size, input_size] and b [output_size], initialised as torch.nn.Linear."""

    def __init__(self, spec: HeadSpec, xp, dtype: str, seed: int | None = None):
        self.spec, self.xp = spec, xp
        bound = 1.0 / np.sqrt(spec.input_size)
        rng = np.random.default_rng(seed)
        self.params = {
            "W": xp.asarray(rng.uniform(-bound, bound, (spec.output_size, spec.input_size)).astype(dtype)),
            "b": xp.asarray(rng.uniform(-bound, bound, spec.output_size).astype(dtype)),
        }
        self._cache = None

    def forward(self, h):
        """h [..., input_size] -> [..., output_size]; keeps what backward needs."""
        activation, _ = _ACTIVATIONS[self.spec.activation]
        out = activation(self.xp, h @ self.params["W"].T + self.params["b"])
        self._cache = (h, out)
        return out

    def backward(self, d_out):
        """Gradient of the input and of each parameter, given dL/d(out)."""
        h, out = self._cache
        self._cache = None
        _, derivative = _ACTIVATIONS[self.spec.activation]
        dz = d_out * derivative(self.xp, out)
        dz_rows = dz.reshape(-1, self.spec.output_size)
        grads = {"W": dz_rows.T @ h.reshape(-1, self.spec.input_size), "b": dz_rows.sum(axis=0)}
        return dz @ self.params["W"], grads
