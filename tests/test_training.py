"""Training on the CPU reference backend: the network's gradients, the head, the optimiser
over flat buffers, the loop, checkpoints and the `train` command (the GPU backend runs the
same code on CuPy and is compared with this in tests/gpu/test_training.py)."""

from pathlib import Path

import numpy as np
import pytest

from lstmgen import reference_training
from lstmgen.cli import main
from lstmgen.codegen import HeadSpec, parse_spec
from lstmgen.dataset import write_dataset
from lstmgen.errors import SpecError
from lstmgen.runtime.checkpoint import load_checkpoint, save_checkpoint
from lstmgen.runtime.head import Head
from lstmgen.runtime.network import Network
from lstmgen.runtime.optimizer import Optimizer
from lstmgen.runtime.trainer import evaluate, train_epochs

STACK = {
    "dtype": "float32",
    "layer": [{"input_size": 2, "hidden_size": 4, "bias": "single"}, {"hidden_size": 3, "return_sequences": False}],
    "head": {"output_size": 2, "activation": "tanh"},
}


def network(seed=0, data=STACK):
    return Network(parse_spec(data, name="stack"), backend="reference", seed=seed)


def test_network_gradients_match_finite_differences():
    net = network()
    rng = np.random.default_rng(1)
    x, weights = rng.uniform(-1, 1, (5, 3, 2)), rng.normal(size=(3, 2))
    net.forward(x)
    grads = net.backward(weights)
    params = net.parameters()
    assert set(grads) == set(params) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "weight_ih_l1",
                                         "weight_hh_l1", "bias_ih_l1", "bias_hh_l1", "head.weight", "head.bias"}
    for name, value in params.items():
        for index in [(0,) * value.ndim, tuple(s - 1 for s in value.shape)]:
            original = value[index]
            value[index] = original + 1e-6
            up = np.sum(net.forward(x, training=False) * weights)
            value[index] = original - 1e-6
            down = np.sum(net.forward(x, training=False) * weights)
            value[index] = original
            assert grads[name][index] == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "tanh", "relu"])
def test_head_matches_torch_linear(activation):
    torch = pytest.importorskip("torch")
    head = Head(HeadSpec(input_size=4, output_size=3, activation=activation), np, "float64", seed=2)
    h = np.random.default_rng(3).normal(size=(5, 2, 4))
    linear = torch.nn.Linear(4, 3).double()
    linear.load_state_dict({"weight": torch.tensor(head.params["W"]), "bias": torch.tensor(head.params["b"])})
    act = {"linear": lambda z: z, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    h_torch = torch.tensor(h, requires_grad=True)
    out_torch = act(linear(h_torch))
    d_out = np.random.default_rng(4).normal(size=out_torch.shape)
    out_torch.backward(torch.tensor(d_out))
    out = head.forward(h)
    dh, grads = head.backward(d_out)
    assert np.allclose(out, out_torch.detach().numpy(), rtol=1e-13, atol=1e-15)
    assert np.allclose(dh, h_torch.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert np.allclose(grads["W"], linear.weight.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert np.allclose(grads["b"], linear.bias.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_updates_the_networks_own_parameters(kind):
    net = network()
    before = {name: value.copy() for name, value in net.parameters().items()}
    optimizer = Optimizer(net, kind, lr=0.05, momentum=0.9, clip=0.5)
    rng = np.random.default_rng(5)
    grads = {name: rng.normal(size=value.shape) for name, value in before.items()}
    clipped, norm = reference_training.clip_grad_norm(grads, 0.5)
    expected = (reference_training.sgd_momentum(before, clipped, {}, 0.05, 0.9)[0] if kind == "sgd"
                else reference_training.adam(before, clipped, {}, 0.05)[0])
    assert optimizer.step(grads) == pytest.approx(norm, rel=1e-12)
    for name, value in net.parameters().items():
        assert np.allclose(value, expected[name], rtol=1e-12, atol=1e-15), name
        assert np.shares_memory(value, optimizer.flat)


def test_the_seed_experiment_loss_falls(tmp_path):
    spec = parse_spec({"dtype": "float32", "layer": [{"input_size": 1, "hidden_size": 5},
                                                      {"hidden_size": 1, "return_sequences": False}]})
    net = Network(spec, backend="reference", seed=0)
    data = write_dataset(tmp_path, "zeros", 300, 10, seed=0)
    runs = list(train_epochs(net, Optimizer(net, "sgd", lr=0.1), data, loss="mse", epochs=40,
                             batch_size=300, seed=0))
    history = runs[-1].history
    assert len(history) == 40 and history[-1] < 0.2 * history[0]


def test_the_adding_problem_is_solved_at_small_scale(tmp_path):
    spec = parse_spec({"dtype": "float32", "layer": [{"input_size": 2, "hidden_size": 16, "return_sequences": False}],
                       "head": {"output_size": 1}})
    net = Network(spec, backend="reference", seed=0)
    train_set = write_dataset(tmp_path / "train", "adding", 3000, 8, seed=0)
    test_set = write_dataset(tmp_path / "test", "adding", 500, 8, seed=1)
    for _ in train_epochs(net, Optimizer(net, "adam", lr=0.01, clip=1.0), train_set, loss="mse", epochs=15,
                          batch_size=50, seed=0):
        pass
    assert evaluate(net, test_set, loss="mse", batch_size=500) < 0.01  # predicting 1 scores 1/6


def test_resuming_from_a_checkpoint_repeats_the_uninterrupted_run(tmp_path):
    data = write_dataset(tmp_path / "data", "adding", 200, 5, seed=0)
    spec = {**STACK, "head": {"output_size": 1}}

    def run(epochs, first_epoch=0, resume_from=None):
        net = network(data=spec)
        optimizer = Optimizer(net, "adam", lr=0.01)
        history = []
        if resume_from:
            first_epoch, history = load_checkpoint(resume_from, net, optimizer)
        for progress in train_epochs(net, optimizer, data, loss="mse", epochs=epochs, batch_size=32, seed=7,
                                     first_epoch=first_epoch, history=history):
            save_checkpoint(tmp_path / "ck.npz", net, optimizer, progress.epoch, progress.history)
        return progress.history, net.parameters()

    straight_history, straight_params = run(4)
    run(2)
    resumed_history, resumed_params = run(4, resume_from=tmp_path / "ck.npz")
    assert resumed_history == straight_history
    for name in straight_params:
        assert np.array_equal(resumed_params[name], straight_params[name])


def test_checkpoint_weights_load_into_torch(tmp_path):
    torch = pytest.importorskip("torch")
    data = {"dtype": "float32", "layer": [{"input_size": 2, "hidden_size": 4, "bias": "single"},
                                           {"hidden_size": 3}]}
    net = network(data=data)
    save_checkpoint(tmp_path / "ck.npz", net, Optimizer(net), 0, [])
    with np.load(tmp_path / "ck.npz") as saved:
        state = {k: torch.from_numpy(saved[k]) for k in saved.files if k.startswith(("weight", "bias"))}
    lstm = torch.nn.LSTM(2, 4, num_layers=1).double()
    second = torch.nn.LSTM(4, 3).double()
    lstm.load_state_dict({k: v for k, v in state.items() if k.endswith("_l0")})
    second.load_state_dict({k.replace("_l1", "_l0"): v for k, v in state.items() if k.endswith("_l1")})
    x = np.random.default_rng(6).uniform(-1, 1, (5, 2, 2))
    expected = second(lstm(torch.tensor(x))[0])[0].detach().numpy()
    assert np.allclose(net.forward(x, training=False), expected, rtol=1e-12, atol=1e-14)


def test_train_command_on_the_reference_backend(tmp_path, capsys):
    spec = tmp_path / "add.toml"
    spec.write_text('[[layer]]\ninput_size = 2\nhidden_size = 8\nreturn_sequences = false\n[head]\noutput_size = 1\n')
    args = ["train", str(spec), "--task", "adding", "--backend", "reference", "--samples", "200", "--steps", "6",
            "--epochs", "3", "--batch-size", "50", "--test-samples", "100", "--data", str(tmp_path / "data"),
            "--checkpoint", str(tmp_path / "ck.npz"), "--plot", str(tmp_path / "loss.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "final training loss" in out and "test loss" in out and "after 12 steps" in out
    assert Path(tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert main(args[:-2] + ["--epochs", "4", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "after 16 steps" in out


def test_train_command_checks_the_task_fits_the_spec(capsys):
    seed = str(Path(__file__).resolve().parent.parent / "specs" / "seed.toml")
    assert main(["train", seed, "--task", "adding", "--backend", "reference"]) == 2
    assert "task 'adding' feeds 2 feature(s) per step but" in capsys.readouterr().err


def test_train_command_reports_time_to_solve_and_the_torch_comparison(tmp_path, capsys):
    pytest.importorskip("torch")
    spec = tmp_path / "add.toml"
    spec.write_text('[[layer]]\ninput_size = 2\nhidden_size = 8\nreturn_sequences = false\n[head]\noutput_size = 1\n')
    assert main(["train", str(spec), "--task", "adding", "--backend", "reference", "--samples", "300", "--steps", "5",
                 "--epochs", "2", "--batch-size", "100", "--test-samples", "100", "--data", str(tmp_path / "data"),
                 "--optimizer", "adam", "--lr", "0.01", "--target-test-loss", "1e-9", "--compare-torch"]) == 0
    out = capsys.readouterr().out
    assert "lstmgen: test loss never went below 1e-09" in out
    assert "torch.nn.LSTM: test loss never went below 1e-09" in out
    difference = float(out.split("loss curves differ by at most ")[1].split()[0])
    assert difference < 1e-10


def test_target_test_loss_needs_a_test_set(capsys):
    seed = str(Path(__file__).resolve().parent.parent / "specs" / "seed.toml")
    assert main(["train", seed, "--task", "zeros", "--backend", "reference", "--target-test-loss", "0.1"]) == 2
    assert "--target-test-loss needs --test-samples N" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_networks_run_but_do_not_train_on_the_gpu(dtype):
    spec = parse_spec({"dtype": dtype, "layer": [{"input_size": 2, "hidden_size": 3}]}, source="half.toml")
    with pytest.raises(SpecError, match=rf"half\.toml has dtype {dtype}, which lstmgen runs but does not train: .*"
                                        rf"train in float32 \(set dtype = \"float32\"\) and run inference in {dtype}$"):
        Network(spec, backend="gpu")
