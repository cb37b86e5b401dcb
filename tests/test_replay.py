"""CPU tests of runtime/replay.py's bookkeeping: when a loop of launches is issued directly,
captured as a CUDA graph, or replayed. CuPy's streams and graphs are stood in for by fakes
that record what happens; the GPU tier runs the real ones (tests/gpu/test_runtime.py)."""

import contextlib
from collections import OrderedDict

import pytest

cupy = pytest.importorskip("cupy")

from lstmgen.runtime import replay  # noqa: E402


class FakeGraph:
    def __init__(self, captured: list):
        self.captured = captured
        self.launched_on = []

    def launch(self, stream):
        self.launched_on.append(stream)


class FakeStream:
    """A stream: launches issued while it captures are recorded, not run."""

    def __init__(self, non_blocking: bool = False):
        self.capturing, self.captured = False, None

    def begin_capture(self):
        self.capturing, self.captured = True, []

    def end_capture(self):
        self.capturing = False
        return FakeGraph(self.captured)


@pytest.fixture
def current(monkeypatch):
    """The caller's stream, with empty caches."""
    stream = FakeStream()
    monkeypatch.setattr(cupy.cuda, "get_current_stream", lambda: stream)
    monkeypatch.setattr(cupy.cuda, "Stream", FakeStream)
    monkeypatch.setattr(replay, "_seen", OrderedDict())
    monkeypatch.setattr(replay, "_graphs", OrderedDict())
    monkeypatch.setattr(replay, "_uncapturable", OrderedDict())
    return stream


class Loop:
    """A loop of launches: what it issued directly, and on which stream each prepare ran."""

    def __init__(self):
        self.issued_on, self.prepared = [], []

    def prepare(self, stream):
        self.prepared.append((stream, stream.capturing))

    def issue(self, stream):
        if stream.capturing:
            stream.captured.append("step")
        else:
            self.issued_on.append(stream)


def test_a_loop_runs_directly_then_is_captured_then_replayed(current):
    loop = Loop()
    assert replay.run(("key",), loop.prepare, loop.issue)
    assert loop.issued_on == [current] and not replay._graphs
    assert replay.run(("key",), loop.prepare, loop.issue)
    graph = replay._graphs[("key",)]
    assert graph.captured == ["step"] and graph.launched_on == [current]
    assert replay.run(("key",), loop.prepare, loop.issue)
    assert graph.launched_on == [current, current] and loop.issued_on == [current]
    # prepare ran before the direct launches, and before and after the capture (for the
    # capturing stream, then for the caller's again), never during one; not for the replay.
    assert [capturing for _, capturing in loop.prepared] == [False, False, False]
    assert [stream is current for stream, _ in loop.prepared] == [True, False, True]


def test_replays_only_issues_nothing_on_a_first_sighting(current):
    loop = Loop()
    assert not replay.run(("key",), loop.prepare, loop.issue, replays_only=True)
    assert loop.issued_on == [] and loop.prepared == []
    assert replay.run(("key",), loop.prepare, loop.issue, replays_only=True)
    assert replay._graphs[("key",)].launched_on == [current] and loop.issued_on == []


def test_each_key_has_its_own_graph_and_the_oldest_are_forgotten(current):
    loop = Loop()
    keys = [("key", index) for index in range(replay._KEPT + 1)]
    for key in keys:
        replay.run(key, loop.prepare, loop.issue)
        replay.run(key, loop.prepare, loop.issue)
    assert list(replay._graphs) == keys[1:]
    assert all(len(graph.launched_on) == 1 for graph in replay._graphs.values())
    replay.run(keys[0], loop.prepare, loop.issue)  # seen long ago: forgotten, runs directly
    assert len(loop.issued_on) == len(keys) + 1


def test_a_replayed_graph_is_kept_over_older_unused_ones(current):
    loop = Loop()
    keys = [("key", index) for index in range(replay._KEPT)]
    for key in keys:
        replay.run(key, loop.prepare, loop.issue)
        replay.run(key, loop.prepare, loop.issue)
    replay.run(keys[0], loop.prepare, loop.issue)  # replayed: now the most recently used
    newest = ("key", "newest")
    replay.run(newest, loop.prepare, loop.issue)
    replay.run(newest, loop.prepare, loop.issue)
    assert keys[0] in replay._graphs and keys[1] not in replay._graphs
    assert len(replay._graphs[keys[0]].launched_on) == 2  # at its capture and its replay


@pytest.mark.parametrize("ending_fails", [False, True])
def test_launches_that_cannot_be_captured_run_directly_from_then_on(current, monkeypatch, ending_fails):
    # Ending a capture that the failure invalidated raises as well; either way the call's
    # launches still run, with a warning that names the failure, and the key is not captured again.
    if ending_fails:
        def end_capture(stream):
            raise RuntimeError("capture invalidated")
        monkeypatch.setattr(FakeStream, "end_capture", end_capture)
    issued = []

    def capture_refused(stream):
        if stream.capturing:
            raise ValueError("operation not permitted when stream is capturing")
        issued.append(stream)

    loop = Loop()
    assert replay.run(("key",), loop.prepare, capture_refused)
    with pytest.warns(RuntimeWarning, match="cannot be captured.*operation not permitted"):
        assert replay.run(("key",), loop.prepare, capture_refused)
    assert replay.run(("key",), loop.prepare, capture_refused)
    assert issued == [current] * 3 and not replay._graphs
    assert not replay.run(("key",), loop.prepare, capture_refused, replays_only=True), "never a replay"


def test_launches_that_fail_directly_raise_their_own_error(current):
    def failing(stream):
        raise ValueError("a launch failed")

    loop = Loop()
    with pytest.raises(ValueError, match="a launch failed"):
        replay.run(("key",), loop.prepare, failing)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="a launch failed"):
        replay.run(("key",), loop.prepare, failing)
    assert not replay._graphs


@pytest.mark.parametrize("capture_fails", [False, True])
def test_a_prepared_handle_goes_back_to_the_current_stream(current, capture_fails):
    # prepare binds a library handle (cuBLAS) for the launches: to the capturing stream for a
    # capture, which is gone afterwards, so it ends bound to the caller's stream, also when the
    # capture fails and the launches run directly. A replay queues only the graph: nothing
    # is bound.
    bound = []

    def issue(stream):
        if capture_fails and stream.capturing:
            raise ValueError("a launch failed")

    replay.run(("key",), bound.append, issue)
    assert bound == [current]
    bound.clear()
    with pytest.warns(RuntimeWarning) if capture_fails else contextlib.nullcontext():
        replay.run(("key",), bound.append, issue)
    # Captured: bound to the capturing stream, then back. Not captured: bound for the direct
    # launches too.
    expected = 3 if capture_fails else 2
    assert len(bound) == expected and bound[0] is not current and bound[1:] == [current] * (expected - 1)
    bound.clear()
    replay.run(("key",), bound.append, issue)
    assert bound == ([current] if capture_fails else [])
