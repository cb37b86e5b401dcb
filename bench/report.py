"""Turning benchmark cells into the table, the geometric means, JSON and a heat map."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    """One (dtype, H, B, mode) point of the grid. Times are medians in microseconds per step,
    with the fastest and slowest of the timed runs (None in runs before v12 kept them)."""

    dtype: str
    hidden: int
    batch: int
    steps: int
    mode: str                        # "forward" (inference) or "training" (forward + backward of sum(y))
    ours_us: float | None            # None: lstmgen has no kernel for this cell (see note)
    cudnn_us: float | None           # None: cuDNN has no kernel for this cell (see note)
    ours_peak_bytes: int | None
    cudnn_peak_bytes: int | None
    note: str = ""
    ours_range_us: tuple[float, float] | None = None
    cudnn_range_us: tuple[float, float] | None = None

    @property
    def ratio(self) -> float | None:
        """cuDNN time over ours: above 1 means lstmgen is faster."""
        if self.ours_us is None or self.cudnn_us is None:
            return None
        return self.cudnn_us / self.ours_us

    @property
    def runs_overlap(self) -> bool | None:
        """Whether the two sides' runs overlap (the slowest of one slower than the fastest of
        the other), so that the run does not order them; None without both ranges."""
        if self.ours_range_us is None or self.cudnn_range_us is None:
            return None
        return self.ours_range_us[0] <= self.cudnn_range_us[1] and self.cudnn_range_us[0] <= self.ours_range_us[1]


def geometric_means(cells: list[Cell]) -> dict[tuple[str, str], float]:
    """Geometric mean of the ratio per (dtype, mode), over cells where both sides ran."""
    logs: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        if cell.ratio is not None:
            logs.setdefault((cell.dtype, cell.mode), []).append(math.log(cell.ratio))
    return {key: math.exp(sum(values) / len(values)) for key, values in logs.items()}


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def format_table(cells: list[Cell], header: bool = True) -> str:
    """Fixed-width table: us/step of both, the ratio, peak memory, and why a side is missing.

    Without the header, just the rows and means: a progress line while the grid runs."""
    title = (f"{'dtype':<9} {'H':>5} {'B':>4} {'mode':<9} {'ours us/step':>12} {'cuDNN us/step':>13} "
             f"{'cuDNN/ours':>10} {'runs':>7} {'ours MiB':>9} {'cuDNN MiB':>9}  note")
    lines = [title, "-" * len(title)] if header else []
    for c in cells:
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}x"
        runs = {None: "-", True: "overlap", False: "apart"}[c.runs_overlap]
        lines.append(f"{c.dtype:<9} {c.hidden:>5} {c.batch:>4} {c.mode:<9} {_us(c.ours_us):>12} "
                     f"{_us(c.cudnn_us):>13} {ratio:>10} {runs:>7} {_mib(c.ours_peak_bytes):>9} "
                     f"{_mib(c.cudnn_peak_bytes):>9}  {c.note}".rstrip())
    means = geometric_means(cells)
    if means and header:
        lines.append("")
        lines.append("geometric mean of cuDNN/ours:")
        lines += [f"  {dtype:<9} {mode:<9} {value:.2f}x" for (dtype, mode), value in sorted(means.items())]
    return "\n".join(lines)


def write_json(cells: list[Cell], path: Path, device: str) -> None:
    payload = {
        "device": device,
        "cells": [asdict(cell) | {"ratio": cell.ratio} for cell in cells],
        "geometric_means": [{"dtype": d, "mode": m, "ratio": r} for (d, m), r in sorted(geometric_means(cells).items())],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def _point(cell: Cell) -> tuple:
    return cell.dtype, cell.hidden, cell.batch, cell.steps, cell.mode


def merge_cells(earlier: list[Cell], measured: list[Cell]) -> list[Cell]:
    """`earlier` with each cell at a point `measured` has (dtype, H, B, T and mode) replaced
    in place, then `measured`'s new points: a run of part of the grid updates a full report
    without dropping the rest or reordering it."""
    latest = {_point(cell): cell for cell in measured}
    merged = [latest.pop(_point(cell), cell) for cell in earlier]
    return merged + [cell for cell in measured if _point(cell) in latest]


def read_json(path: Path) -> list[Cell]:
    def fields(cell: dict) -> dict:
        ranges = {key: tuple(cell[key]) for key in ("ours_range_us", "cudnn_range_us") if cell.get(key) is not None}
        return {key: value for key, value in cell.items() if key != "ratio"} | ranges

    return [Cell(**fields(cell)) for cell in json.loads(path.read_text())["cells"]]


def plot_heatmap(cells: list[Cell], path: Path) -> None:
    """One panel per (dtype, mode), a row per dtype: the ratio over H x B, annotated; n/a where
    a side is missing. In panels whose cells kept their runs' ranges, ~ marks the ratios whose
    runs overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    dtypes = sorted({c.dtype for c in cells})
    modes = sorted({c.mode for c in cells})
    hiddens = sorted({c.hidden for c in cells})
    batches = sorted({c.batch for c in cells})
    figure, axes = plt.subplots(len(dtypes), len(modes), figsize=(3.2 * len(modes), 3.2 * len(dtypes)), squeeze=False)
    for axis, (dtype, mode) in zip(axes.flat, [(d, m) for d in dtypes for m in modes]):
        grid = np.full((len(hiddens), len(batches)), np.nan)
        overlap = np.zeros(grid.shape, dtype=bool)
        ranged = False
        for c in cells:
            if (c.dtype, c.mode) == (dtype, mode) and c.ratio is not None:
                grid[hiddens.index(c.hidden), batches.index(c.batch)] = c.ratio
                overlap[hiddens.index(c.hidden), batches.index(c.batch)] = bool(c.runs_overlap)
                ranged |= c.runs_overlap is not None
        axis.imshow(np.log2(grid), cmap="RdYlGn", vmin=-3, vmax=3, origin="lower")
        for (row, column), value in np.ndenumerate(grid):
            text = "n/a" if np.isnan(value) else f"{value:.2f}" + ("~" if overlap[row, column] else "")
            axis.text(column, row, text, ha="center", va="center", fontsize=8)
        axis.set_xticks(range(len(batches)), batches)
        axis.set_yticks(range(len(hiddens)), hiddens)
        axis.set_xlabel("batch")
        axis.set_ylabel("hidden")
        axis.set_title(f"{dtype} {mode}\ncuDNN time / ours" + (" (~: runs overlap)" if ranged else ""), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
