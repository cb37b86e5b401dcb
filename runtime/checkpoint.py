"""Checkpoints: one .npz with the weights under torch's names, the optimiser state and the
progress, so that training resumes exactly and torch loads the weights directly:

    state = {k: torch.from_numpy(v) for k, v in numpy.load(path).items() if k.startswith(("weight", "bias"))}
    torch.nn.LSTM(input_size, hidden_size, num_layers).load_state_dict(state)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmgen.runtime.network import to_host

_OPTIMIZER, _PROGRESS = "optimizer.", "progress."


def save_checkpoint(path, network, optimizer, epoch: int, history: list[float]) -> None:
    arrays = dict(network.torch_state_dict())
    arrays[_OPTIMIZER + "m"] = to_host(optimizer.state["m"])
    arrays[_OPTIMIZER + "v"] = to_host(optimizer.state["v"])
    arrays[_OPTIMIZER + "step"] = np.array(optimizer.state["step"])
    arrays[_PROGRESS + "epoch"] = np.array(epoch)
    arrays[_PROGRESS + "history"] = np.asarray(history, dtype=np.float64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(path)  # a crash mid-write never leaves a torn checkpoint


def load_checkpoint(path, network, optimizer) -> tuple[int, list[float]]:
    """Restore weights and optimiser state in place; returns (epochs done, loss history)."""
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    weights = {}
    for name in network.parameters():
        if name not in arrays:
            raise ValueError(f"checkpoint {path} has no {name!r}: it was saved from a different spec")
        weights[name] = arrays[name]
        if name.startswith("bias_ih") and name.replace("bias_ih", "bias_hh") not in network.parameters():
            # A "single" bias was saved as bias_ih plus bias_hh = 0 for torch; fold it back.
            weights[name] = weights[name] + arrays[name.replace("bias_ih", "bias_hh")]
    xp = optimizer.xp
    for name, view in optimizer.views(optimizer.flat).items():
        if view.shape != weights[name].shape:
            raise ValueError(f"checkpoint {path}: {name} has shape {weights[name].shape}, the spec needs {view.shape}")
        view[...] = xp.asarray(weights[name])
    optimizer.state["m"][...] = xp.asarray(arrays[_OPTIMIZER + "m"])
    optimizer.state["v"][...] = xp.asarray(arrays[_OPTIMIZER + "v"])
    optimizer.state["step"] = int(arrays[_OPTIMIZER + "step"])
    return int(arrays[_PROGRESS + "epoch"]), arrays[_PROGRESS + "history"].tolist()
