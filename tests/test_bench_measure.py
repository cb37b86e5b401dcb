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
        log.append(("time", run.__name__))
        return bench_measure.Timing(1.0, 0.9, 1.1)

    def peak_bytes(run):
        log.append(("peak", run.__name__))
        return 1

    monkeypatch.setattr(bench_measure, "mismatches", mismatches)
    monkeypatch.setattr(bench_measure, "timing_ms", timing_ms)
    monkeypatch.setattr(bench_measure, "_cudnn_peak_bytes", peak_bytes)
    monkeypatch.setattr(bench_measure, "_ours_peak_bytes", peak_bytes)
    return log


def test_both_sides_agree_before_either_is_timed(events):
    cells = bench_measure.measure("float32", 128, 8, steps=4, repeats=20, warmup=3)
    # cuDNN's runs first, then ours: the order the bench has always timed in.
    assert events == [("check", "y vs cuDNN"), ("check", "dW_hh vs cuDNN"),
                      ("time", "cudnn_forward"), ("peak", "cudnn_forward"),
                      ("time", "cudnn_training"), ("peak", "cudnn_training"),
                      ("time", "ours_forward"), ("peak", "ours_forward"),
                      ("time", "ours_training"), ("peak", "ours_training")]
    assert [(cell.mode, cell.ours_us, cell.cudnn_us, cell.note) for cell in cells] == [
        ("forward", 250.0, 250.0, ""), ("training", 250.0, 250.0, "")]


def test_a_disagreement_stops_the_cell_before_anything_is_timed(events):
    events.disagree = True
    with pytest.raises(AssertionError, match="lstmgen and cuDNN disagree"):
        bench_measure.measure("float16", 256, 1, steps=4, repeats=20, warmup=3)
    assert all(kind == "check" for kind, _ in events) and events


def test_without_a_cudnn_kernel_ours_is_timed_alone_and_the_cell_says_why(events):
    torch = sys.modules["torch"]
    torch.nn.LSTM.return_value.to.return_value.side_effect = RuntimeError("no cuDNN RNN for this dtype\nmore")
    cells = bench_measure.measure("bfloat16", 128, 8, steps=4, repeats=20, warmup=3)
    assert [name for kind, name in events] == ["ours_forward", "ours_forward", "ours_training", "ours_training"]
    for cell in cells:
        assert (cell.cudnn_us, cell.ours_us) == (None, 250.0)
        assert cell.note == "cuDNN: no kernel (no cuDNN RNN for this dtype)"


def test_a_dtype_without_our_kernels_times_cudnn_alone(events):
    cells = bench_measure.measure("float8", 128, 8, steps=4, repeats=20, warmup=3)
    assert [name for kind, name in events] == ["cudnn_forward", "cudnn_forward", "cudnn_training", "cudnn_training"]
    for cell in cells:
        assert (cell.cudnn_us, cell.ours_us) == (250.0, None)
        assert cell.note == "lstmgen: no float8 kernels yet"
