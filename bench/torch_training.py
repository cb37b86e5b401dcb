"""The same training run in PyTorch (torch.nn.LSTM: cuDNN on a GPU), for comparison.

Given a spec, the initial weights of an lstmgen Network (its torch_state_dict) and the same
data set, hyper-parameters and batch order, this trains torch's equivalent network: one
torch.nn.LSTM per spec layer (each layer may or may not return sequences) and an
nn.Linear head. Loss curves of the two runs should then agree to the dtype's precision
for bias = "double"; a "single" bias is one parameter where torch trains two (b_ih, b_hh),
so with it the runs part after the first update.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lstmgen.codegen import ModelSpec

_ACTIVATIONS = {"linear": torch.nn.Identity, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class TorchNetwork(torch.nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.lstms = torch.nn.ModuleList(
            torch.nn.LSTM(layer.input_size, layer.hidden_size, bias=layer.bias != "none") for layer in spec.layers)
        self.head = None
        if spec.head is not None:
            self.head = torch.nn.Sequential(torch.nn.Linear(spec.head.input_size, spec.head.output_size),
                                            _ACTIVATIONS[spec.head.activation]())

    def load_lstmgen_state(self, state: dict) -> None:
        """Weights from lstmgen's Network.torch_state_dict() (layer k's tensors end in _l<k>)."""
        for index, lstm in enumerate(self.lstms):
            lstm.load_state_dict({name.rsplit("_l", 1)[0] + "_l0": torch.from_numpy(value)
                                  for name, value in state.items() if name.endswith(f"_l{index}")})
        if self.head is not None:
            self.head[0].load_state_dict({"weight": torch.from_numpy(state["head.weight"]),
                                          "bias": torch.from_numpy(state["head.bias"])})

    def forward(self, x):
        for layer, lstm in zip(self.spec.layers, self.lstms):
            output, (h_n, _) = lstm(x)
            x = output if layer.return_sequences else h_n[0]
        return self.head(x) if self.head is not None else x


def _to_torch(x, y, device: str, dtype: torch.dtype):
    """A host batch (x [B, T, F], y) as time-major torch tensors, as lstmgen's trainer sees it."""
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))).to(device=device, dtype=dtype)
    return x, torch.from_numpy(np.array(y)).to(device=device, dtype=dtype)


def train_torch(spec: ModelSpec, state: dict, dataset, *, epochs: int, batch_size: int, seed: int,
                optimizer: str, lr: float, momentum: float, clip: float | None, device: str,
                dtype: torch.dtype, epoch_callback=None):
    """Train with the batch order lstmgen's trainer uses; returns (per-step losses, network).

    epoch_callback(epoch, network, seconds) may return True to stop early.
    """
    torch.backends.cuda.matmul.allow_tf32 = False  # strict fp32, as lstmgen computes it
    torch.backends.cudnn.allow_tf32 = False
    network = TorchNetwork(spec).to(device=device, dtype=dtype)
    network.load_lstmgen_state(state)  # after .to: loading into float32 first would round the weights
    if optimizer == "sgd":
        optim = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum)
    else:
        optim = torch.optim.Adam(network.parameters(), lr=lr)
    history, start = [], time.perf_counter()
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        losses = []
        for x, y in dataset.batches(batch_size, rng):
            x, y = _to_torch(x, y, device, dtype)
            loss = torch.nn.functional.mse_loss(network(x), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
            optim.step()
            losses.append(loss.detach())
        history += [float(value) for value in losses]
        if epoch_callback is not None and epoch_callback(epoch + 1, network, time.perf_counter() - start):
            break
    return history, network


def evaluate_torch(network: TorchNetwork, dataset, *, batch_size: int, device: str, dtype: torch.dtype) -> float:
    """Mean MSE over a data set, as lstmgen.runtime.trainer.evaluate computes it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in dataset.batches(batch_size):
            x, y = _to_torch(x, y, device, dtype)
            total += float(torch.nn.functional.mse_loss(network(x), y)) * len(y)
            count += len(y)
    return total / count
