"""Data sets on disk as NumPy memmaps, written and read in bounded memory.

A data set is a folder with x.npy [N, T, features] and y.npy [N, outputs]. Writing fills
them chunk by chunk, and reading maps them, so neither side ever holds the whole set: it
may be larger than host or GPU memory. Mini-batches are contiguous row ranges visited in a
shuffled order, so every read is sequential on disk; rows are i.i.d. draws, so shuffling
batches rather than rows loses nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmgen.tasks import TASKS


def write_dataset(folder, task: str, count: int, steps: int, seed: int, chunk: int = 65536) -> "Dataset":
    """Generate `count` sequences of `task` into `folder`, `chunk` sequences at a time."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_file = y_file = None
    for start in range(0, count, chunk):
        x, y = TASKS[task](min(chunk, count - start), steps, rng)
        if x_file is None:
            x_file = np.lib.format.open_memmap(folder / "x.npy", "w+", x.dtype, (count, *x.shape[1:]))
            y_file = np.lib.format.open_memmap(folder / "y.npy", "w+", y.dtype, (count, *y.shape[1:]))
        x_file[start:start + len(x)] = x
        y_file[start:start + len(y)] = y
    x_file.flush()
    y_file.flush()
    del x_file, y_file
    return Dataset(folder)


class Dataset:
    """A data set folder opened read-only as memmaps."""

    def __init__(self, folder):
        folder = Path(folder)
        self.x = np.load(folder / "x.npy", mmap_mode="r")
        self.y = np.load(folder / "y.npy", mmap_mode="r")
        if len(self.x) != len(self.y):
            raise ValueError(f"{folder}: x.npy has {len(self.x)} sequences but y.npy {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.y.nbytes

    def batches(self, batch_size: int, rng: np.random.Generator | None = None):
        """(x, y) host arrays of `batch_size` rows (the last may be shorter), every row once.

        With `rng` the batches come in a shuffled order; without, in file order.
        """
        starts = np.arange(0, len(self), batch_size)
        if rng is not None:
            starts = rng.permutation(starts)
        for start in starts:
            yield np.asarray(self.x[start:start + batch_size]), np.asarray(self.y[start:start + batch_size])
