"""Losses with their gradients, on NumPy or CuPy arrays alike (the array's own module)."""

from __future__ import annotations


def _module(array):
    import numpy

    try:
        import cupy
    except ImportError:
        return numpy
    return cupy.get_array_module(array)


def mse(prediction, target):
    """Mean squared error over all elements, and dL/d(prediction)."""
    difference = prediction - target
    return (difference * difference).mean(), difference * (2.0 / difference.size)


def softmax_cross_entropy(logits, labels):
    """Mean over rows of -log softmax(logits)[label], and dL/d(logits).

    logits [rows, classes]; labels: integer class indices [rows].
    """
    xp = _module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)  # exp never overflows
    log_probabilities = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
    rows = xp.arange(len(logits))
    gradient = xp.exp(log_probabilities)
    gradient[rows, labels] -= 1.0
    return -log_probabilities[rows, labels].mean(), gradient / len(logits)


LOSSES = {"mse": mse, "cross_entropy": softmax_cross_entropy}
