"""Replaying repeated launch sequences as CUDA graphs.

A loop that issues thousands of small launches from Python spends more time on the CPU than
its kernels take on the GPU. Captured once as a CUDA graph (CuPy's stream capture), it runs
again with one launch. A graph bakes in every argument of every launch, device addresses
included, so it is keyed by all of them: a call whose key was seen before is captured on the
second sighting and replayed from the third. Fixed shapes in a loop, such as a training loop,
get the same buffers from CuPy's pool call after call; any other call runs its launches
directly, as the first sighting does.
"""

from __future__ import annotations

from collections import OrderedDict

# Keys and graphs kept, most recent first: a few layers' forward and backward loops.
_KEPT = 16

_seen: OrderedDict = OrderedDict()
_graphs: OrderedDict = OrderedDict()


def run(key: tuple, prepare, issue) -> None:
    """Issue the launches of `issue(stream)` on the current stream, or replay their graph.

    `key` must hold everything the launches depend on except the contents of device memory.
    `prepare(stream)` runs first, outside any capture: CuPy refuses to bind its cuBLAS handle
    to a stream while the stream captures.
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    graph = _graphs.get(key)
    if graph is None and key in _seen:
        graph = _capture(prepare, issue)
        _remember(_graphs, key, graph)
    if graph is None:
        _remember(_seen, key, True)
        prepare(stream)
        issue(stream)
    else:
        _graphs.move_to_end(key)
        graph.launch(stream=stream)


def _capture(prepare, issue):
    import cupy

    # Capture needs a stream of its own: the legacy default stream cannot capture. Nothing
    # runs while capturing; the graph launches on the caller's stream, after its earlier work.
    capturing = cupy.cuda.Stream(non_blocking=True)
    prepare(capturing)
    capturing.begin_capture()
    try:
        issue(capturing)
    except BaseException:
        capturing.end_capture()  # the stream stops capturing; the partial graph is dropped
        raise
    return capturing.end_capture()


def _remember(kept: OrderedDict, key: tuple, value) -> None:
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > _KEPT:
        kept.popitem(last=False)
