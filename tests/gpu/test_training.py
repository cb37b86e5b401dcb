"""GPU tier: training on lstmgen's kernels matches the float64 reference backend, the fused
optimiser matches the NumPy references, and streaming keeps GPU memory flat."""

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from lstmgen import reference_training  # noqa: E402
from lstmgen.codegen import parse_spec  # noqa: E402
from lstmgen.dataset import write_dataset  # noqa: E402
from lstmgen.runtime.network import Network  # noqa: E402
from lstmgen.runtime.optimizer import Optimizer  # noqa: E402
from lstmgen.runtime.streaming import device_batches  # noqa: E402
from lstmgen.runtime.trainer import train_epochs  # noqa: E402

pytestmark = pytest.mark.gpu

SPEC = {"dtype": "float64", "layer": [{"input_size": 2, "hidden_size": 16, "return_sequences": True},
                                      {"hidden_size": 8, "return_sequences": False, "bias": "single"}],
        "head": {"output_size": 1, "activation": "sigmoid"}}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gpu_training_follows_the_reference(tmp_path, kind):
    data = write_dataset(tmp_path, "adding", 256, 12, seed=0)
    runs = {}
    for backend in ("gpu", "reference"):
        net = Network(parse_spec(SPEC, name="two"), backend=backend, seed=3)
        optimizer = Optimizer(net, kind, lr=0.05, momentum=0.9, clip=0.5)
        *_, last = train_epochs(net, optimizer, data, loss="mse", epochs=3, batch_size=64, seed=1)
        runs[backend] = (last.history, {k: v.get() if hasattr(v, "get") else v for k, v in net.parameters().items()})
    assert np.allclose(runs["gpu"][0], runs["reference"][0], rtol=1e-9, atol=0)
    for name, value in runs["reference"][1].items():
        assert np.allclose(runs["gpu"][1][name], value, rtol=1e-8, atol=1e-12), name


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_fused_update_matches_the_numpy_reference(kind):
    rng = np.random.default_rng(0)
    spec = parse_spec({"dtype": "float64", "layer": [{"input_size": 1, "hidden_size": 3}]}, name="tiny")
    net = Network(spec, backend="gpu")
    optimizer = Optimizer(net, kind, lr=0.01, momentum=0.8, clip=1.0)
    flat = optimizer.flat.get()
    reference_params, state = {"p": flat}, {}
    for step in range(3):
        grads = {name: cupy.asarray(rng.normal(size=value.shape)) for name, value in net.parameters().items()}
        optimizer.step(grads)
        flat_grad = np.concatenate([grads[name].get().ravel() for name in net.parameters()])
        clipped, _ = reference_training.clip_grad_norm({"p": flat_grad}, 1.0)
        if kind == "sgd":
            reference_params, state = reference_training.sgd_momentum(reference_params, clipped, state, 0.01, 0.8)
        else:
            reference_params, state = reference_training.adam(reference_params, clipped, state, 0.01)
    assert np.allclose(optimizer.flat.get(), reference_params["p"], rtol=1e-12, atol=1e-15)


def test_streaming_keeps_gpu_memory_flat_on_data_larger_than_the_budget(tmp_path):
    data = write_dataset(tmp_path, "adding", 60_000, 200, seed=0, chunk=10_000)  # 96 MiB on disk
    pool = cupy.get_default_memory_pool()
    net = Network(parse_spec({"dtype": "float32", "layer": [{"input_size": 2, "hidden_size": 32,
                                                             "return_sequences": False}],
                              "head": {"output_size": 1}}), backend="gpu")
    optimizer = Optimizer(net, "adam", lr=1e-3)
    budget = 64 * 2**20
    pool.free_all_blocks()
    pool.set_limit(size=budget)
    try:
        peaks = []
        for progress in train_epochs(net, optimizer, data, loss="mse", epochs=1, batch_size=256, seed=0,
                                     on_step=lambda value, rows: peaks.append(pool.total_bytes())):
            pass
    finally:
        pool.set_limit(size=0)
    assert data.nbytes > budget
    assert max(peaks) <= budget and max(peaks) - min(peaks) < 8 * 2**20  # flat, not growing with data
    assert np.isfinite(progress.loss)


def test_streaming_handles_the_short_batch_coming_first(tmp_path):
    data = write_dataset(tmp_path, "adding", 250, 7, seed=0)  # batches of 64: 64, 64, 64, 58
    seed = next(s for s in range(1000) if np.random.default_rng(s).permutation(4)[0] == 3)
    expected = [(np.ascontiguousarray(x.transpose(1, 0, 2)), y) for x, y in data.batches(64, np.random.default_rng(seed))]
    streamed = [(x.get(), y.get()) for x, y in device_batches(data.batches(64, np.random.default_rng(seed)),
                                                              cupy, "float32", 64)]
    assert [len(y) for _, y in streamed] == [58, 64, 64, 64]
    for (x, y), (x_host, y_host) in zip(streamed, expected):
        assert np.array_equal(x, x_host) and np.array_equal(y, y_host)
