"""Float64 NumPy references for gradient clipping and optimisers, with torch's semantics:
the fused GPU update is checked against them (as the LSTM kernels are against
lstmgen.reference), and the CPU reference backend of training uses them directly."""

from __future__ import annotations

import numpy as np


def clip_grad_norm(grads: dict, max_norm: float):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    As torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), applied only
    when below 1. Returns the clipped gradients and the norm before clipping.
    """
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads.values()))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return {name: np.asarray(g, np.float64) * scale for name, g in grads.items()}, norm


def sgd_momentum(params: dict, grads: dict, velocity: dict, lr: float, momentum: float):
    """One step of torch.optim.SGD with momentum: v = momentum*v + g (v starts at 0), p -= lr*v."""
    new_velocity = {name: momentum * velocity.get(name, 0.0) + grads[name] for name in params}
    return {name: params[name] - lr * new_velocity[name] for name in params}, new_velocity


def adam(params: dict, grads: dict, state: dict, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """One step of torch.optim.Adam. `state` holds step, m and v (all start at 0)."""
    beta1, beta2 = betas
    step = state.get("step", 0) + 1
    m = {name: beta1 * state.get("m", {}).get(name, 0.0) + (1 - beta1) * grads[name] for name in params}
    v = {name: beta2 * state.get("v", {}).get(name, 0.0) + (1 - beta2) * grads[name] ** 2 for name in params}
    correction1, correction2 = 1 - beta1**step, 1 - beta2**step
    new = {name: params[name] - lr * (m[name] / correction1) / (np.sqrt(v[name] / correction2) + eps)
           for name in params}
    return new, {"step": step, "m": m, "v": v}
