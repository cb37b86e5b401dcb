"""Optimisers over one flat buffer: SGD with momentum and Adam, with global-norm clipping.

All of a network's parameters become views of one flat array, and their gradients are
gathered into another, so a step is a single elementwise update over every parameter: on
the GPU one fused CuPy kernel (the clipping scale, a device scalar, folded in, so no value
travels to the host); on the reference backend the NumPy references of
lstmgen.reference_training, which the GPU kernel is tested against.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from lstmgen import reference_training

OPTIMIZERS = ("sgd", "adam")


@cache
def _fused_kernels():
    import cupy

    sgd = cupy.ElementwiseKernel(
        "T grad, T scale, T lr, T momentum", "T param, T velocity",
        "const T g = grad * scale; velocity = momentum * velocity + g; param -= lr * velocity;",
        "lstmgen_sgd_momentum")
    adam = cupy.ElementwiseKernel(
        "T grad, T scale, T lr, T beta1, T beta2, T eps, T correction1, T correction2",
        "T param, T m, T v",
        """const T g = grad * scale;
           m = beta1 * m + (1 - beta1) * g;
           v = beta2 * v + (1 - beta2) * g * g;
           param -= lr * (m / correction1) / (sqrt(v / correction2) + eps);""",
        "lstmgen_adam")
    return {"sgd": sgd, "adam": adam}


class Optimizer:
    """Owns the flat parameter, gradient and state buffers of a network."""

    def __init__(self, network, kind: str = "adam", lr: float = 1e-3, momentum: float = 0.9,
                 betas=(0.9, 0.999), eps: float = 1e-8, clip: float | None = None):
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimiser {kind!r}: choose one of {', '.join(OPTIMIZERS)}")
        self.network, self.kind, self.lr, self.momentum = network, kind, lr, momentum
        self.betas, self.eps, self.clip = betas, eps, clip
        xp, params = network.xp, network.parameters()
        self.xp = xp
        self.slices, offset = {}, 0
        for name, value in params.items():
            self.slices[name] = (slice(offset, offset + value.size), value.shape)
            offset += value.size
        self.flat = xp.empty(offset, dtype=network.dtype)
        for name, value in params.items():
            self.flat[self.slices[name][0]] = value.ravel()
        network.set_parameters(self.views(self.flat))
        self.flat_grad = xp.zeros_like(self.flat)
        self.state = {"step": 0, "m": xp.zeros_like(self.flat), "v": xp.zeros_like(self.flat)}

    def views(self, flat) -> dict:
        return {name: flat[where].reshape(shape) for name, (where, shape) in self.slices.items()}

    def step(self, grads: dict):
        """Apply one update from gradients named as the network's parameters; returns the
        gradient norm before clipping (a device scalar on the GPU)."""
        xp = self.xp
        for name, (where, _) in self.slices.items():
            self.flat_grad[where] = grads[name].ravel()
        norm = xp.sqrt(xp.sum(self.flat_grad * self.flat_grad))
        scale = xp.ones((), self.flat.dtype) if self.clip is None else \
            xp.minimum(1.0, self.clip / (norm + 1e-6)).astype(self.flat.dtype)
        self.state["step"] += 1
        if xp is np:
            self._reference_step(scale)
        else:
            self._fused_step(scale)
        return norm

    def _fused_step(self, scale) -> None:
        kernel, dtype, state = _fused_kernels()[self.kind], self.flat.dtype.type, self.state
        if self.kind == "sgd":
            kernel(self.flat_grad, scale, dtype(self.lr), dtype(self.momentum), self.flat, state["v"])
        else:
            beta1, beta2 = self.betas
            kernel(self.flat_grad, scale, dtype(self.lr), dtype(beta1), dtype(beta2), dtype(self.eps),
                   dtype(1 - beta1 ** state["step"]), dtype(1 - beta2 ** state["step"]),
                   self.flat, state["m"], state["v"])

    def _reference_step(self, scale) -> None:
        params, grads, state = {"p": self.flat}, {"p": self.flat_grad * scale}, self.state
        if self.kind == "sgd":
            new, velocity = reference_training.sgd_momentum(params, grads, {"p": state["v"]}, self.lr, self.momentum)
            state["v"][...] = velocity["p"]
        else:
            new, adam_state = reference_training.adam(
                params, grads, {"step": state["step"] - 1, "m": {"p": state["m"]}, "v": {"p": state["v"]}},
                self.lr, self.betas, self.eps)
            state["m"][...], state["v"][...] = adam_state["m"]["p"], adam_state["v"]["p"]
        self.flat[...] = new["p"]  # in place: the network's parameters are views of it
