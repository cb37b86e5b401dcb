"""Synthetic training tasks. Each draws `count` sequences [count, steps, features] and targets
[count, outputs] from a NumPy Generator, so data sets can be produced chunk by chunk."""

from __future__ import annotations

import numpy as np


def zeros_task(count: int, steps: int, rng: np.random.Generator):
    """The seed experiment: random inputs in [0, 1), one feature; every target is 0."""
    x = rng.uniform(0.0, 1.0, (count, steps, 1)).astype(np.float32)
    return x, np.zeros((count, 1), dtype=np.float32)


def adding_problem(count: int, steps: int, rng: np.random.Generator):
    """The adding problem, two-channel form.

    Channel 0 holds values uniform in [0, 1]; channel 1 marks one step in each half of the
    sequence; the target is the sum of the two marked values. Predicting the mean, 1, gives
    MSE = Var(U + U') = 1/6, the bar a model must get far below (< 0.01) to show memory.
    """
    if steps < 2:
        raise ValueError(f"the adding problem needs steps >= 2 (one marker per half), got {steps}")
    values = rng.uniform(0.0, 1.0, (count, steps))
    half = steps // 2
    first = rng.integers(0, half, count)
    second = rng.integers(half, steps, count)
    rows = np.arange(count)
    markers = np.zeros((count, steps))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


TASKS = {"zeros": zeros_task, "adding": adding_problem}
