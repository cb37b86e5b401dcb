"""Replaying repeated launch sequences as CUDA graphs.

A loop that issues thousands of small launches from Python spends more time on the CPU than
its kernels take on the GPU; even a layer's persistent forward, four launches, is queued
more slowly than the GPU runs the first of them. Captured once as a CUDA graph (CuPy's
stream capture), it runs again with one launch. A graph bakes in every argument of every
launch, device addresses included, so it is keyed by all of them: a call whose key was seen
before is captured on the second sighting and replayed from then on. A loop over fixed
shapes that lets go of each call's arrays before the next gets the same buffers from CuPy's
pool call after call; a first sighting runs its launches directly, or not at all where the
caller has a faster way for calls that are not replayed (Layer's "auto" recurrence). Where
the driver cannot capture a key's launches, they run directly, with a warning.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import OrderedDict

# Keys and graphs kept, oldest first: each layer's forwards (inference and training, one or
# two sets of buffers each) and stepwise loops, for models of several layers.
_KEPT = 64

_seen: OrderedDict = OrderedDict()
_graphs: OrderedDict = OrderedDict()
_uncapturable: OrderedDict = OrderedDict()
# The bookkeeping is shared by every thread (one a GPU, say); launches run outside the lock.
_lock = threading.Lock()


def run(key: tuple, prepare, issue, replays_only: bool = False) -> bool:
    """Issue the launches of `issue(stream)` on the current stream, or replay their graph;
    with `replays_only`, a key seen for the first time is only remembered. Returns whether
    the launches ran.

    `key` must hold everything the launches depend on except the contents of device memory.
    `prepare(stream)` runs first, outside any capture: CuPy refuses to bind its cuBLAS handle
    to a stream while the stream captures. A capture prepares its own stream and afterwards
    the current one again, as the capturing stream is gone once the capture ends; a replay
    prepares nothing, as it queues nothing but the graph (2 host us a call, bench/NOTES.md v30).
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    with _lock:
        graph = _graphs.get(key)
        capture = graph is None and key in _seen and key not in _uncapturable
        if graph is not None:
            _graphs.move_to_end(key)  # the most recently used are kept
        elif capture:
            del _seen[key]
        else:
            _remember(_seen, key, True)
    if capture:
        try:
            graph = _capture(prepare, issue, stream)
        except Exception as error:
            # Launches that fail outright fail again below, with their own error; those that
            # only cannot be captured (a driver without graph support for a launch kind) run.
            warnings.warn(f"these launches cannot be captured as a CUDA graph ({error}); they run directly "
                          f"on every call, which costs host time but changes no result", RuntimeWarning,
                          stacklevel=2)
            with _lock:
                _remember(_uncapturable, key, True)
        else:
            with _lock:
                _remember(_graphs, key, graph)
    if graph is not None:
        graph.launch(stream=stream)
        return True
    if replays_only:
        return False
    prepare(stream)
    issue(stream)
    return True


def _capture(prepare, issue, current):
    import cupy

    # Capture needs a stream of its own: the legacy default stream cannot capture. Nothing
    # runs while capturing; the graph launches on the caller's stream, after its earlier work.
    capturing = cupy.cuda.Stream(non_blocking=True)
    try:
        prepare(capturing)
        capturing.begin_capture()
        try:
            issue(capturing)
        except BaseException:
            # The stream stops capturing and the partial graph is dropped; ending a capture that
            # the failure invalidated raises too, which would hide the failure itself.
            with contextlib.suppress(Exception):
                capturing.end_capture()
            raise
        return capturing.end_capture()
    finally:
        prepare(current)


def _remember(kept: OrderedDict, key: tuple, value) -> None:
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > _KEPT:
        kept.popitem(last=False)
