"""The order of a bench cell's work (no GPU): both sides run and agree before either is timed.

torch, CuPy and the layer are stand-ins here; what is checked is what `measure` does with
them, in which order.
"""

import sys
from unittest import mock

import pytest

import lstmgen.runtime
from lstmgen.bench import measure as bench_measure


@pytest.fixture
def events(monkeypatch):
    """Records each agreement check and timing of `measure`, in order; `disagree` makes the
    checks report a mismatch."""
    class Log(list):
        disagree = False

    log = Log()
    monkeypatch.setitem(sys.modules, "torch", mock.MagicMock(name="torch"))
    monkeypatch.setitem(sys.modules, "cupy", mock.MagicMock(name="cupy"))
    monkeypatch.setattr(lstmgen.runtime, "Layer", mock.MagicMock(name="Layer"))
    monkeypatch.setattr(bench_measure, "tolerance_key", lambda storage, mma_type: storage)

    def mismatches(name, *arrays):
        log.append(("check", name))
        return [f"{name}: off"] if log.disagree else []

    def timing_ms(timer, run, repeats, warmup):
        log.append(("time", timer.__name__))
        return bench_measure.Timing(1.0, 0.9, 1.1)

    monkeypatch.setattr(bench_measure, "mismatches", mismatches)
    monkeypatch.setattr(bench_measure, "timing_ms", timing_ms)
    monkeypatch.setattr(bench_measure, "_cudnn_peak_bytes", lambda run: 1)
    monkeypatch.setattr(bench_measure, "_ours_peak_bytes", lambda run: 1)
    return log


def test_both_sides_agree_before_either_is_timed(events):
    cells = bench_measure.measure("float32", 128, 8, steps=4, repeats=20, warmup=3)
    kinds = [kind for kind, _ in events]
    assert kinds == ["check", "check", "time", "time", "time", "time"]
    assert [name for kind, name in events if kind == "check"] == ["y vs cuDNN", "dW_hh vs cuDNN"]
    # cuDNN's runs first (forward, training), then ours: the order the bench has always timed in.
    assert [name for kind, name in events if kind == "time"] == ["torch_ms", "torch_ms", "cupy_ms", "cupy_ms"]
    assert [(cell.mode, cell.ours_us, cell.cudnn_us) for cell in cells] == [("forward", 250.0, 250.0),
                                                                          ("training", 250.0, 250.0)]


def test_a_disagreement_stops_the_cell_before_anything_is_timed(events):
    events.disagree = True
    with pytest.raises(AssertionError, match="lstmgen and cuDNN disagree"):
        bench_measure.measure("float16", 256, 1, steps=4, repeats=20, warmup=3)
    assert all(kind == "check" for kind, _ in events) and events
