"""Float64 NumPy reference LSTM: the oracle every generated kernel is checked against.

Conventions match torch.nn.LSTM and cuDNN. With gate rows ordered i, f, g, o,

    z_t = x_t W_ih^T + h_{t-1} W_hh^T + b
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

where b is b_ih + b_hh ("double"), b ("single") or 0 ("none").
x is time-major [T, B, I]; W_ih is [4H, I] and W_hh is [4H, H].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lstmgen.codegen.spec import BIAS_PARAMETERS


def parameter_names(bias: str) -> tuple:
    """The keys of a parameter dict for bias mode `bias`."""
    return ("W_ih", "W_hh", *BIAS_PARAMETERS[bias])


@dataclass(frozen=True)
class ForwardCache:
    """What backward needs: h and c hold the initial state at index 0, so both are [T+1, B, H]."""
    x: np.ndarray          # [T, B, I]
    h: np.ndarray          # [T+1, B, H]
    c: np.ndarray          # [T+1, B, H]
    gates: np.ndarray      # [T, B, 4H], after their activations (i, f, g, o)
    return_sequences: bool


@dataclass(frozen=True)
class ForwardResult:
    y: np.ndarray          # [T, B, H] if return_sequences else [B, H]
    h_T: np.ndarray        # [B, H]
    c_T: np.ndarray        # [B, H]
    cache: ForwardCache


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Identical to 1 / (1 + exp(-z)), but never overflows for large negative z.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _bias_mode(params: dict) -> str:
    """The bias mode whose parameter names are exactly the keys of `params`."""
    for bias in BIAS_PARAMETERS:
        if set(params) == set(parameter_names(bias)):
            return bias
    raise ValueError(f"parameter keys {sorted(params)} match no bias mode; expected one of "
                     + ", ".join(str(parameter_names(b)) for b in BIAS_PARAMETERS))


def _bias_sum(params: dict, bias: str, size: int) -> np.ndarray:
    """The single bias vector [4H] that all bias modes reduce to in the forward pass."""
    total = np.zeros(size)
    for name in BIAS_PARAMETERS[bias]:
        total = total + _f64(params[name])
    return total


def forward(params: dict, x, h0=None, c0=None, *, return_sequences: bool = True) -> ForwardResult:
    """Run one LSTM layer over x [T, B, I]; h0 and c0 [B, H] default to zeros."""
    bias = _bias_mode(params)
    W_ih, W_hh = _f64(params["W_ih"]), _f64(params["W_hh"])
    x = _f64(x)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    h = np.zeros((T + 1, B, H))
    c = np.zeros((T + 1, B, H))
    if h0 is not None:
        h[0] = _f64(h0)
    if c0 is not None:
        c[0] = _f64(c0)
    gates = np.empty((T, B, 4 * H))
    # The input projection does not depend on the recurrence, so it is done for all steps at once.
    z_in = x @ W_ih.T + _bias_sum(params, bias, 4 * H)
    for t in range(T):
        z = z_in[t] + h[t] @ W_hh.T
        a = _sigmoid(z)
        # Only g is a tanh; overwrite its slice rather than splitting and re-joining the gates.
        a[:, 2 * H:3 * H] = np.tanh(z[:, 2 * H:3 * H])
        i, f, g, o = np.split(a, 4, axis=1)
        c[t + 1] = f * c[t] + i * g
        h[t + 1] = o * np.tanh(c[t + 1])
        gates[t] = a
    cache = ForwardCache(x, h, c, gates, return_sequences)
    # Copies, so that a caller writing into y cannot corrupt the cache that backward reads.
    y = h[1:].copy() if return_sequences else h[T].copy()
    return ForwardResult(y=y, h_T=h[T].copy(), c_T=c[T].copy(), cache=cache)


class GateGradients(NamedTuple):
    dz: np.ndarray              # dL/d(pre-activation gates) [T, B, 4H]
    dh0: np.ndarray             # [B, H]
    dc0: np.ndarray             # [B, H]
    # [T, B, 4H]: each dz element without its activation's derivative (|dc g|, |dc c_{t-1}|,
    # |dc i|, |dh tanh(c_t)|). A kernel forms the derivatives from stored activations, and
    # i(1-i) from an i rounded near 1 is off by about u absolutely, not relatively (a 16-bit
    # i = 0.99 leaves 1 - i 20% off in bfloat16): dz's rounding error is u times these sizes.
    dz_error_sizes: np.ndarray


def gate_gradients(params: dict, cache: ForwardCache, dy, dh_T=None, dc_T=None) -> GateGradients:
    """dz = dL/d(pre-activation gates) [T, B, 4H], dh0 and dc0, given dL/dy (y's shape) and
    optionally dL/dh_T, dL/dc_T [B, H].

    Going back in time, with dh and dc the total gradients reaching h_t and c_t:
        dc += dh * o * (1 - tanh(c_t)^2)
        dz_i = dc * g * i(1-i)     dz_f = dc * c_{t-1} * f(1-f)
        dz_g = dc * i * (1-g^2)    dz_o = dh * tanh(c_t) * o(1-o)
        dh_{t-1} = dz W_hh         dc_{t-1} = dc * f
    """
    W_hh = _f64(params["W_hh"])
    h, c, gates = cache.h, cache.c, cache.gates
    T, B, H = h.shape[0] - 1, h.shape[1], h.shape[2]
    dy = _f64(dy)
    expected = (T, B, H) if cache.return_sequences else (B, H)
    if dy.shape != expected:
        raise ValueError(f"dy has shape {dy.shape}, but y has shape {expected}")
    dh = np.zeros((B, H)) if dh_T is None else _f64(dh_T).copy()
    dc = np.zeros((B, H)) if dc_T is None else _f64(dc_T).copy()
    if not cache.return_sequences:
        dh += dy  # y is h_T itself
    dz, dz_error_sizes = np.empty((T, B, 4 * H)), np.empty((T, B, 4 * H))
    for t in reversed(range(T)):
        if cache.return_sequences:
            dh += dy[t]
        i, f, g, o = np.split(gates[t], 4, axis=1)
        tanh_c = np.tanh(c[t + 1])
        dc = dc + dh * o * (1.0 - tanh_c ** 2)
        dz[t] = np.concatenate([dc * g * i * (1.0 - i),
                                dc * c[t] * f * (1.0 - f),
                                dc * i * (1.0 - g ** 2),
                                dh * tanh_c * o * (1.0 - o)], axis=1)
        dz_error_sizes[t] = np.abs(np.concatenate([dc * g, dc * c[t], dc * i, dh * tanh_c], axis=1))
        dh = dz[t] @ W_hh
        dc = dc * f
    return GateGradients(dz, dh, dc, dz_error_sizes)


def backward(params: dict, cache: ForwardCache, dy, dh_T=None, dc_T=None) -> dict:
    """Gradients of a scalar loss: dx, dW_ih, dW_hh, the biases' (by the params' bias mode),
    dh0 and dc0, given dL/dy (y's shape) and optionally dL/dh_T, dL/dc_T [B, H]."""
    gate = gate_gradients(params, cache, dy, dh_T, dc_T)
    return gradients(params, cache, gate.dz, gate.dh0, gate.dc0)


def gradients(params: dict, cache: ForwardCache, dz, dh0, dc0) -> dict:
    """backward's result from gate_gradients': the parameter gradients are sums over t of
    dz^T x_t, dz^T h_{t-1} and dz."""
    W_ih, x, h = _f64(params["W_ih"]), cache.x, cache.h
    grads = {
        "dx": dz @ W_ih,
        "dW_ih": _sum_over_steps_and_rows(dz, x),
        "dW_hh": _sum_over_steps_and_rows(dz, h[:-1]),
    }
    # Every bias enters z unscaled, so each one's gradient is the summed gate gradient.
    db = dz.sum(axis=(0, 1))
    for name in BIAS_PARAMETERS[_bias_mode(params)]:
        grads["d" + name] = db.copy()
    grads["dh0"] = dh0
    grads["dc0"] = dc0
    return grads


def _sum_over_steps_and_rows(a, b) -> np.ndarray:
    """sum over t and b of a[t, b, :]^T b[t, b, :], as one BLAS product (einsum's own loops
    were most of a GPU-tier example's reference time)."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def stack_forward(layers: list, return_sequences: list, x, initial_states=None) -> list:
    """Run layers in order, each on the previous layer's y; returns one ForwardResult per layer."""
    if len(return_sequences) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(return_sequences)} return_sequences flags")
    if not all(return_sequences[:-1]):
        raise ValueError("every layer but the last must return sequences: the next layer reads them")
    states = [None] * len(layers) if initial_states is None else initial_states
    if len(states) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(states)} initial states")
    results = []
    for params, seq, state in zip(layers, return_sequences, states):
        h0, c0 = (None, None) if state is None else state
        results.append(forward(params, x, h0, c0, return_sequences=seq))
        x = results[-1].y
    return results


def stack_backward(layers: list, results: list, dy, final_state_grads=None) -> list:
    """Backpropagate dy (the last layer's y gradient) through the stack; one grad dict per layer.

    Layer k's y only feeds layer k+1, so layer k+1's dx is layer k's dy.
    """
    state_grads = [None] * len(layers) if final_state_grads is None else final_state_grads
    if not len(layers) == len(results) == len(state_grads):
        raise ValueError(f"{len(layers)} layers, {len(results)} results, "
                         f"{len(state_grads)} final state gradients")
    grads = [None] * len(layers)
    for k in reversed(range(len(layers))):
        dh_T, dc_T = (None, None) if state_grads[k] is None else state_grads[k]
        grads[k] = backward(layers[k], results[k].cache, dy, dh_T, dc_T)
        dy = grads[k]["dx"]
    return grads


class ReferenceLayer:
    """The reference behind the interface of lstmgen.runtime.Layer, so a network can run on
    the CPU in float64: the twin that GPU training is compared with, and a way to train
    without a GPU. Initial parameters equal the GPU layer's for the same seed."""

    def __init__(self, spec, seed: int | None = None):
        from lstmgen.parameters import initial_parameters

        self.spec = spec
        self.params = initial_parameters(spec, seed, dtype=np.float64)
        self._cache = None

    def set_parameters(self, params: dict) -> None:
        self.params = {name: np.asarray(params[name], dtype=np.float64) for name in self.params}
        self._cache = None

    def forward(self, x, h0=None, c0=None, *, training: bool = True):
        result = forward(self.params, x, h0, c0, return_sequences=self.spec.return_sequences)
        self._cache = result.cache if training else None
        return result.y, (result.h_T, result.c_T)

    def backward(self, dy, dh_T=None, dc_T=None) -> dict:
        if self._cache is None:
            raise ValueError("backward needs a preceding forward with training=True")
        cache, self._cache = self._cache, None
        return backward(self.params, cache, dy, dh_T, dc_T)


def gradient_term_sizes(params: dict, cache: ForwardCache, dz) -> dict:
    """For each gradient that is a sum of products with dz, the root-sum-square of its terms,
    element by element: the size its rounding error scales with when the terms are rounded
    (lstmgen.compare), however much the sum itself cancels. Pass GateGradients.dz_error_sizes
    as dz to size the error that rounded activations leave in dz itself, too."""
    W_ih, W_hh = _f64(params["W_ih"]), _f64(params["W_hh"])
    dz2 = dz ** 2
    db = np.sqrt(dz2.sum(axis=(0, 1)))
    sizes = {
        "dx": np.sqrt(dz2 @ W_ih ** 2),
        "dW_ih": np.sqrt(_sum_over_steps_and_rows(dz2, cache.x ** 2)),
        "dW_hh": np.sqrt(_sum_over_steps_and_rows(dz2, cache.h[:-1] ** 2)),
        "dh0": np.sqrt(dz2[0] @ W_hh ** 2),
    }
    sizes.update({"d" + name: db for name in BIAS_PARAMETERS[_bias_mode(params)]})
    return sizes
