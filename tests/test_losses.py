"""Losses and their gradients (on NumPy here; the same code runs on CuPy) against torch."""

import numpy as np
import pytest

from lstmgen.runtime.losses import mse, softmax_cross_entropy

torch = pytest.importorskip("torch", reason="torch is not installed: the losses are checked against it")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mse_and_its_gradient(rng):
    prediction, target = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    p = torch.tensor(prediction, requires_grad=True)
    expected = torch.nn.functional.mse_loss(p, torch.tensor(target))
    expected.backward()
    loss, gradient = mse(prediction, target)
    assert np.isclose(loss, expected.item(), rtol=1e-14)
    assert np.allclose(gradient, p.grad.numpy(), rtol=1e-13, atol=0)


def test_softmax_cross_entropy_and_its_gradient(rng):
    logits, labels = rng.normal(size=(9, 5)) * 30, rng.integers(0, 5, 9)  # large logits: stability
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(z, torch.tensor(labels))
    expected.backward()
    loss, gradient = softmax_cross_entropy(logits, labels)
    assert np.isclose(loss, expected.item(), rtol=1e-12)
    assert np.allclose(gradient, z.grad.numpy(), rtol=1e-10, atol=1e-15)
