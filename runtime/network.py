"""A trainable network: the LSTM stack of a spec and its optional dense head.

The same code runs on two backends: "gpu" (lstmgen's kernels, CuPy, the spec's dtype) and
"reference" (lstmgen.reference in float64 NumPy on the CPU). Parameters and gradients are
named as in torch (weight_ih_l0, ..., head.weight), so checkpoints load into torch.
"""

from __future__ import annotations

import numpy as np

from lstmgen.codegen import ModelSpec
from lstmgen.errors import SpecError
from lstmgen.runtime.head import Head

BACKENDS = ("gpu", "reference")
TRAINABLE_DTYPES = ("float32", "float64")

# lstmgen parameter -> torch.nn.LSTM parameter (layer index appended as _l<k>).
_TORCH_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "b": "bias_ih"}


class Network:
    def __init__(self, spec: ModelSpec, backend: str = "gpu", seed: int = 0):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.spec, self.backend = spec, backend
        if backend == "gpu" and spec.layers[0].dtype not in TRAINABLE_DTYPES:
            raise SpecError(
                f"{spec.source} has dtype {spec.layers[0].dtype}, which lstmgen runs but does not train: "
                f"16-bit training needs float32 master weights and loss scaling, which the optimiser "
                f"does not have yet; train in float32 (set dtype = \"float32\") and run inference in "
                f"{spec.layers[0].dtype}"
            )
        if backend == "gpu":
            import cupy

            from lstmgen.runtime.layer import Layer

            self.xp, layer_class, dtype = cupy, Layer, spec.layers[0].dtype
        else:
            from lstmgen.reference import ReferenceLayer

            self.xp, layer_class, dtype = np, ReferenceLayer, "float64"
        self.dtype = dtype
        # One seed per layer derived from `seed`, as lstmgen.runtime.Model does.
        self.layers = [layer_class(layer, seed=seed + index) for index, layer in enumerate(spec.layers)]
        self.head = Head(spec.head, self.xp, dtype, seed=seed + len(spec.layers)) if spec.head else None

    # ----------------------------------------------------------------- parameters
    def _owners(self):
        """(torch-style name, owning object, its parameter name) for every parameter."""
        for index, layer in enumerate(self.layers):
            for name in layer.params:
                yield f"{_TORCH_NAMES[name]}_l{index}", layer, name
        if self.head is not None:
            yield "head.weight", self.head, "W"
            yield "head.bias", self.head, "b"

    def parameters(self) -> dict:
        return {full: owner.params[name] for full, owner, name in self._owners()}

    def set_parameters(self, params: dict) -> None:
        """Rebind every parameter (e.g. to views of an optimiser's flat buffer), no copies."""
        for index, layer in enumerate(self.layers):
            layer.set_parameters({name: params[f"{_TORCH_NAMES[name]}_l{index}"] for name in layer.params})
        if self.head is not None:
            self.head.params = {"W": params["head.weight"], "b": params["head.bias"]}

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """Host copies under torch's names; a "single" bias becomes bias_ih with bias_hh = 0."""
        state = {}
        for full, owner, name in self._owners():
            state[full] = to_host(owner.params[name])
            if full.startswith("bias_ih_l") and name == "b":  # an LSTM layer's single bias
                state[full.replace("bias_ih", "bias_hh")] = np.zeros_like(state[full])
        return state

    # ----------------------------------------------------------------- forward, backward
    def forward(self, x, *, training: bool = True):
        """x [T, B, input_size] -> the prediction: [T, B, out] with sequences, else [B, out]."""
        for layer in self.layers:
            x, _ = layer.forward(x, training=training)
        return self.head.forward(x) if self.head is not None else x

    def backward(self, d_prediction) -> dict:
        """Gradients of every parameter, by torch-style name, given dL/d(prediction)."""
        grads = {}
        dy = d_prediction
        if self.head is not None:
            dy, head_grads = self.head.backward(dy)
            grads.update({"head.weight": head_grads["W"], "head.bias": head_grads["b"]})
        for index in reversed(range(len(self.layers))):
            layer_grads = self.layers[index].backward(dy)
            dy = layer_grads["dx"]
            grads.update({f"{_TORCH_NAMES[name]}_l{index}": layer_grads["d" + name]
                          for name in self.layers[index].params})
        return grads


def to_host(array) -> np.ndarray:
    """A host copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.array(array)
