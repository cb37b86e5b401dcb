"""The benchmark's arithmetic and outputs, on made-up cells (no GPU)."""

import math

import pytest

from lstmgen.bench.report import Cell, format_table, geometric_means, plot_heatmap, read_json, write_json


def cell(dtype="float32", hidden=256, batch=8, mode="forward", ours=2.0, cudnn=6.0, note=""):
    return Cell(dtype, hidden, batch, 512, mode, ours, cudnn, 3 * 2**20, 5 * 2**20, note)


CELLS = [
    cell(ours=2.0, cudnn=6.0),
    cell(batch=64, ours=4.0, cudnn=2.0),
    cell(mode="training", ours=10.0, cudnn=10.0),
    cell(dtype="bfloat16", ours=1.0, cudnn=None, note="cuDNN: no kernel"),
]


def test_ratio_is_cudnn_time_over_ours():
    assert CELLS[0].ratio == 3.0 and CELLS[1].ratio == 0.5 and CELLS[3].ratio is None


def test_geometric_mean_per_dtype_and_mode_skips_missing_sides():
    means = geometric_means(CELLS)
    assert set(means) == {("float32", "forward"), ("float32", "training")}
    assert math.isclose(means[("float32", "forward")], math.sqrt(3.0 * 0.5))
    assert means[("float32", "training")] == 1.0


def test_table_shows_times_ratio_memory_and_missing_kernels():
    lines = format_table(CELLS).splitlines()
    assert lines[2].split() == ["float32", "256", "8", "forward", "2.00", "6.00", "3.00x", "3.0", "5.0"]
    assert lines[5].split()[:7] == ["bfloat16", "256", "8", "forward", "1.00", "-", "-"]
    assert lines[5].endswith("cuDNN: no kernel")
    assert "  float32   forward   1.22x" in lines


def test_json_round_trip(tmp_path):
    path = tmp_path / "results" / "gpu.json"
    write_json(CELLS, path, "NVIDIA H200")
    assert read_json(path) == CELLS


def test_heatmap_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "gpu.png"
    plot_heatmap(CELLS, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
