"""The benchmark's arithmetic and outputs, on made-up cells (no GPU)."""

import json
import math
from dataclasses import asdict

import pytest

from lstmgen.bench.measure import timing_ms
from lstmgen.bench.report import Cell, format_table, geometric_means, merge_cells, plot_heatmap, read_json, write_json


def cell(dtype="float32", hidden=256, batch=8, mode="forward", ours=2.0, cudnn=6.0, note="", ranges=(None, None)):
    return Cell(dtype, hidden, batch, 512, mode, ours, cudnn, 3 * 2**20, 5 * 2**20, note, *ranges)


CELLS = [
    cell(ours=2.0, cudnn=6.0, ranges=((1.9, 2.3), (5.5, 6.4))),
    cell(batch=64, ours=4.0, cudnn=2.0, ranges=((3.8, 4.4), (1.9, 3.9))),
    cell(mode="training", ours=10.0, cudnn=10.0),
    cell(dtype="bfloat16", ours=1.0, cudnn=None, note="cuDNN: no kernel", ranges=((0.9, 1.1), None)),
]


def test_ratio_is_cudnn_time_over_ours():
    assert CELLS[0].ratio == 3.0 and CELLS[1].ratio == 0.5 and CELLS[3].ratio is None


def test_geometric_mean_per_dtype_and_mode_skips_missing_sides():
    means = geometric_means(CELLS)
    assert set(means) == {("float32", "forward"), ("float32", "training")}
    assert math.isclose(means[("float32", "forward")], math.sqrt(3.0 * 0.5))
    assert means[("float32", "training")] == 1.0


def test_runs_overlap_when_neither_side_is_faster_in_every_run():
    # 1.9-2.3 against 5.5-6.4 us: apart; 3.8-4.4 against 1.9-3.9: cuDNN's slowest run is
    # slower than our fastest; without both ranges (older runs, a side missing): unknown.
    assert [c.runs_overlap for c in CELLS] == [False, True, None, None]
    assert cell(ranges=((2.0, 3.0), (3.0, 4.0))).runs_overlap  # touching ranges order nothing


def test_table_shows_times_ratio_overlap_memory_and_missing_kernels():
    lines = format_table(CELLS).splitlines()
    assert lines[2].split() == ["float32", "256", "8", "forward", "2.00", "6.00", "3.00x", "apart", "3.0", "5.0"]
    assert lines[3].split()[6:8] == ["0.50x", "overlap"]
    assert lines[4].split()[6:8] == ["1.00x", "-"]
    assert lines[5].split()[:8] == ["bfloat16", "256", "8", "forward", "1.00", "-", "-", "-"]
    assert lines[5].endswith("cuDNN: no kernel")
    assert "  float32   forward   1.22x" in lines


def test_json_round_trip(tmp_path):
    path = tmp_path / "results" / "gpu.json"
    write_json(CELLS, path, "NVIDIA H200")
    assert read_json(path) == CELLS


def test_a_partial_run_replaces_only_the_points_it_measured():
    # bench --include: a rerun of float32 at B = 64 and 256 keeps the earlier B = 8 cells and float32's
    # other mode and dtypes as they were, and replaces the earlier B = 64 forward.
    rerun = [cell(batch=64, ours=3.0, cudnn=2.0), cell(batch=256, ours=9.0, cudnn=9.5)]
    merged = merge_cells(CELLS, rerun)
    assert merged == [CELLS[0], rerun[0], CELLS[2], CELLS[3], rerun[1]]  # in place, then new points
    assert merge_cells(CELLS, []) == CELLS


def test_runs_before_v12_read_without_ranges(tmp_path):
    # bench --include takes an earlier run's JSON, written before cells kept their runs' range.
    path = tmp_path / "v11.json"
    old = {key: value for key, value in asdict(CELLS[0]).items() if not key.endswith("_range_us")}
    path.write_text(json.dumps({"device": "NVIDIA H200", "cells": [old | {"ratio": 3.0}], "geometric_means": []}))
    (cell,) = read_json(path)
    assert cell.ours_us == 2.0 and cell.ours_range_us is None and cell.runs_overlap is None


def test_timing_keeps_the_median_and_the_fastest_and_slowest_runs():
    runs, times = [], iter([3.0, 1.0, 2.0, 7.0])
    timing = timing_ms(lambda run: (run(), next(times))[1], lambda: runs.append(1), repeats=4, warmup=2)
    assert len(runs) == 2 + 4  # the warm-up runs, then the timed ones
    assert (timing.median, timing.low, timing.high) == (2.5, 1.0, 7.0)
    assert timing.per_step_us(500) == (5.0, (2.0, 14.0))


def test_heatmap_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "gpu.png"
    plot_heatmap(CELLS, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
