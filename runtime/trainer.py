"""The training loop: mini-batches streamed from a data set, loss, backward, one optimiser step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lstmgen.runtime.losses import LOSSES
from lstmgen.runtime.streaming import device_batches


@dataclass
class Progress:
    """What the loop reports after each epoch."""

    epoch: int
    steps: int
    loss: float                # mean training loss of the epoch
    sequences_per_second: float
    sequences_seen: int        # since this call started
    seconds: float             # wall time since this call started, data streaming included
    history: list[float] = field(repr=False, default_factory=list)  # loss of every step so far


def train_epochs(network, optimizer, dataset, *, loss: str, epochs: int, batch_size: int, seed: int,
                 first_epoch: int = 0, history: list[float] | None = None, on_step=None):
    """Train for epochs first_epoch .. epochs-1, yielding a Progress after each.

    The batch order of epoch e depends only on (seed, e), so a run resumed from a checkpoint
    sees the same batches as one that never stopped. `on_step(step_loss_array)` is called
    after each step (for a progress bar); the loss stays on the device until an epoch ends.
    """
    loss_function = LOSSES[loss]
    history = list(history or [])
    run_start, sequences_seen = time.perf_counter(), 0
    for epoch in range(first_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        start, step_losses, sequences = time.perf_counter(), [], 0
        for x, y in device_batches(dataset.batches(batch_size, rng), network.xp, network.dtype, batch_size):
            value, d_prediction = loss_function(network.forward(x), y)
            optimizer.step(network.backward(d_prediction))
            step_losses.append(value)
            sequences += x.shape[1]
            if on_step is not None:
                on_step(value, x.shape[1])
        epoch_losses = [float(value) for value in step_losses]  # one device sync per epoch
        history += epoch_losses
        sequences_seen += sequences
        now = time.perf_counter()
        yield Progress(epoch=epoch + 1, steps=len(history), loss=float(np.mean(epoch_losses)),
                       sequences_per_second=sequences / (now - start), sequences_seen=sequences_seen,
                       seconds=now - run_start, history=history)


def evaluate(network, dataset, *, loss: str, batch_size: int) -> float:
    """Mean loss over a data set, in inference mode."""
    loss_function, total, count = LOSSES[loss], 0.0, 0
    for x, y in device_batches(dataset.batches(batch_size), network.xp, network.dtype, batch_size):
        value, _ = loss_function(network.forward(x, training=False), y)
        total += float(value) * x.shape[1]
        count += x.shape[1]
    return total / count
