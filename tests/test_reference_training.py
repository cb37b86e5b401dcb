"""The NumPy references for clipping and optimisers agree with torch on the CPU."""

import numpy as np
import pytest

from lstmgen import reference_training as ref

torch = pytest.importorskip("torch", reason="torch is not installed: these references are checked against it")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_clip_grad_norm(rng, max_norm):
    grads = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=7)}
    tensors = [torch.zeros(4, 3, dtype=torch.float64, requires_grad=True), torch.zeros(7, dtype=torch.float64, requires_grad=True)]
    for tensor, g in zip(tensors, grads.values()):
        tensor.grad = torch.tensor(g)
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    clipped, norm = ref.clip_grad_norm(grads, max_norm)
    assert np.isclose(norm, expected_norm.item(), rtol=1e-14)
    for tensor, name in zip(tensors, grads):
        assert np.allclose(clipped[name], tensor.grad.numpy(), rtol=1e-14, atol=0)
    assert (max_norm < norm) == (not np.allclose(clipped["a"], grads["a"]))


def _torch_steps(optimizer_class, params, grad_sequence, **options):
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    optimizer = optimizer_class(tensors.values(), **options)
    for grads in grad_sequence:
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        optimizer.step()
    return {name: tensor.detach().numpy() for name, tensor in tensors.items()}


@pytest.fixture
def problem(rng):
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}
    grad_sequence = [{name: rng.normal(size=value.shape) for name, value in params.items()} for _ in range(4)]
    return params, grad_sequence


def test_sgd_with_momentum_matches_torch(problem):
    params, grad_sequence = problem
    expected = _torch_steps(torch.optim.SGD, params, grad_sequence, lr=0.1, momentum=0.9)
    velocity = {}
    for grads in grad_sequence:
        params, velocity = ref.sgd_momentum(params, grads, velocity, lr=0.1, momentum=0.9)
    for name in params:
        assert np.allclose(params[name], expected[name], rtol=1e-13, atol=1e-15)


def test_adam_matches_torch(problem):
    params, grad_sequence = problem
    expected = _torch_steps(torch.optim.Adam, params, grad_sequence, lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    state = {}
    for grads in grad_sequence:
        params, state = ref.adam(params, grads, state, lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    assert state["step"] == 4
    for name in params:
        assert np.allclose(params[name], expected[name], rtol=1e-12, atol=1e-15)
