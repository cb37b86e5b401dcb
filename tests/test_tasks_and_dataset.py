"""Synthetic tasks and the on-disk data set (CPU tier)."""

import numpy as np
import pytest

from lstmgen.dataset import Dataset, write_dataset
from lstmgen.tasks import adding_problem, zeros_task


def test_adding_problem_marks_one_step_per_half_and_sums_them():
    x, y = adding_problem(500, 11, np.random.default_rng(0))
    assert x.shape == (500, 11, 2) and y.shape == (500, 1)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.2
    assert np.array_equal(markers[:, :5].sum(axis=1), np.ones(500))  # first half: steps 0..4
    assert np.array_equal(markers[:, 5:].sum(axis=1), np.ones(500))
    assert np.allclose(y[:, 0], (values * markers).sum(axis=1), atol=1e-6)


def test_predicting_one_on_the_adding_problem_scores_a_sixth():
    _, y = adding_problem(200_000, 20, np.random.default_rng(1))
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.003


def test_adding_problem_needs_two_steps():
    with pytest.raises(ValueError, match="needs steps >= 2"):
        adding_problem(3, 1, np.random.default_rng(0))


def test_zeros_task_has_random_inputs_and_zero_targets():
    x, y = zeros_task(300, 10, np.random.default_rng(2))
    assert x.shape == (300, 10, 1) and x.std() > 0.2 and not y.any()


def test_dataset_written_in_chunks_equals_the_task_drawn_in_the_same_chunks(tmp_path):
    dataset = write_dataset(tmp_path / "adding", "adding", count=1000, steps=9, seed=3, chunk=300)
    rng = np.random.default_rng(3)
    parts = [adding_problem(n, 9, rng) for n in (300, 300, 300, 100)]
    assert np.array_equal(dataset.x, np.concatenate([p[0] for p in parts]))
    assert np.array_equal(dataset.y, np.concatenate([p[1] for p in parts]))
    assert isinstance(Dataset(tmp_path / "adding").x, np.memmap)
    assert dataset.nbytes == 1000 * 9 * 2 * 4 + 1000 * 4


@pytest.mark.parametrize("shuffled", [False, True])
def test_batches_cover_every_row_once(tmp_path, shuffled):
    dataset = write_dataset(tmp_path / "d", "adding", count=103, steps=4, seed=4)
    rng = np.random.default_rng(5) if shuffled else None
    batches = list(dataset.batches(10, rng))
    assert [len(x) for x, _ in batches].count(3) == 1 and len(batches) == 11
    rows = np.concatenate([x for x, _ in batches])
    order = np.concatenate([y for _, y in batches])[:, 0]
    assert sorted(map(bytes, rows)) == sorted(map(bytes, np.asarray(dataset.x)))
    assert shuffled != np.array_equal(order, dataset.y[:, 0])


def test_shuffled_order_is_reproducible(tmp_path):
    dataset = write_dataset(tmp_path / "d", "zeros", count=50, steps=3, seed=6)
    first = [x[0, 0, 0] for x, _ in dataset.batches(7, np.random.default_rng(8))]
    again = [x[0, 0, 0] for x, _ in dataset.batches(7, np.random.default_rng(8))]
    assert first == again


def test_unknown_task_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'copy': choose one of zeros, adding"):
        write_dataset(tmp_path, "copy", 10, 5, 0)
