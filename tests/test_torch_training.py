"""lstmgen's training loop on the float64 reference backend and torch.nn.LSTM on the CPU,
from the same weights, data, batch order and hyper-parameters, give the same loss curve."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the comparison needs it")

from lstmgen.bench.torch_training import train_torch  # noqa: E402
from lstmgen.codegen import parse_spec  # noqa: E402
from lstmgen.dataset import write_dataset  # noqa: E402
from lstmgen.runtime.network import Network  # noqa: E402
from lstmgen.runtime.optimizer import Optimizer  # noqa: E402
from lstmgen.runtime.trainer import train_epochs  # noqa: E402

SEED_NETWORK = {"dtype": "float32", "layer": [{"input_size": 1, "hidden_size": 5, "return_sequences": True},
                                               {"hidden_size": 1, "return_sequences": False}]}
# bias "double" as torch: a "single" bias is one parameter where torch trains two, so the
# runs would differ from the first update on (they agree only in inference).
ADDING_NETWORK = {"dtype": "float32", "layer": [{"input_size": 2, "hidden_size": 6, "return_sequences": False}],
                  "head": {"output_size": 1, "activation": "sigmoid"}}


@pytest.mark.parametrize("spec_data, task, optimizer, clip", [
    (SEED_NETWORK, "zeros", "sgd", None),
    (ADDING_NETWORK, "adding", "adam", 0.3),
])
def test_same_loss_curve_as_torch(tmp_path, spec_data, task, optimizer, clip):
    spec = parse_spec(spec_data, name="net")
    data = write_dataset(tmp_path, task, 120, 7, seed=0)
    network = Network(spec, backend="reference", seed=4)
    initial = network.torch_state_dict()
    options = dict(epochs=3, batch_size=40, seed=9)
    *_, last = train_epochs(network, Optimizer(network, optimizer, lr=0.05, momentum=0.9, clip=clip), data,
                            loss="mse", **options)
    expected, torch_network = train_torch(spec, initial, data, optimizer=optimizer, lr=0.05, momentum=0.9,
                                          clip=clip, device="cpu", dtype=torch.float64, **options)
    assert len(last.history) == len(expected) == 9
    assert np.allclose(last.history, expected, rtol=1e-10, atol=0)
    assert np.allclose(network.torch_state_dict()["weight_hh_l0"], torch_network.lstms[0].weight_hh_l0.detach().numpy(),
                       rtol=1e-9, atol=1e-12)
