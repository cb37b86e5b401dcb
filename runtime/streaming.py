"""Moving host mini-batches to where the network runs.

On the GPU, batch k+1 is copied host -> pinned -> device on a side stream while batch k is
computed, through two fixed pinned and two fixed device buffers sized for a full batch: GPU
memory for data stays at two batches however large the data set is. The compute stream
waits for a batch's copy (an event) before using it, and a buffer is refilled only after the
compute that read it has finished (another event).
"""

from __future__ import annotations

import numpy as np


def _part_dtype(part: np.ndarray, dtype):
    """Inputs and regression targets take the network's dtype; integer class labels stay integers."""
    return dtype if part.dtype.kind == "f" else part.dtype


def device_batches(batches, xp, dtype, batch_size: int):
    """Yield (x [T, B, F], y) on `xp` from host batches (x [B, T, F], y [B, ...]) of at most `batch_size` rows."""
    if xp is np:
        for x, y in batches:
            yield np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dtype), np.asarray(y, dtype=_part_dtype(y, dtype))
        return
    yield from _gpu_batches(batches, dtype, batch_size)


def _gpu_batches(batches, dtype, batch_size: int):
    import cupy
    import cupyx

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    copy_stream = cupy.cuda.Stream(non_blocking=True)
    compute_stream = cupy.cuda.get_current_stream()
    # Sized for a full batch: the shorter last batch may come first in a shuffled epoch.
    layouts = [((batch_size, *part.shape[1:]), _part_dtype(part, dtype)) for part in first]
    pinned = [[cupyx.empty_pinned(shape, kind) for shape, kind in layouts] for _ in range(2)]
    device = [[cupy.empty(shape, kind) for shape, kind in layouts] for _ in range(2)]
    consumed = [None, None]  # event: compute finished with that slot's device buffers

    def start_copy(slot, host_batch):
        rows = len(host_batch[0])
        for pinned_part, host_part in zip(pinned[slot], host_batch):
            pinned_part[:rows] = host_part  # reads the memmap from disk
        if consumed[slot] is not None:
            copy_stream.wait_event(consumed[slot])
        for device_part, pinned_part in zip(device[slot], pinned[slot]):
            device_part[:rows].set(pinned_part[:rows], stream=copy_stream)
        return rows, copy_stream.record(cupy.cuda.Event(disable_timing=True))

    slot, pending = 0, start_copy(0, first)
    try:
        while pending is not None:
            rows, copied = pending
            compute_stream.wait_event(copied)
            following = next(batches, None)
            if following is not None:
                # Copies run in order on copy_stream: once this batch's copy is done, the other
                # slot's pinned buffer (last read by the previous batch's copy) may be refilled.
                copied.synchronize()
                pending = start_copy(1 - slot, following)
            else:
                pending = None
            x, y = (part[:rows] for part in device[slot])
            # Fresh arrays: the slot's buffers are refilled two batches later.
            yield cupy.ascontiguousarray(x.transpose(1, 0, 2)), y.copy()
            consumed[slot] = compute_stream.record(cupy.cuda.Event(disable_timing=True))
            slot = 1 - slot
    finally:
        # The pinned buffers return to CuPy's pool, which does not know about copies in flight.
        copy_stream.synchronize()
