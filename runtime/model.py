"""A stack of layers built from a spec file."""

from __future__ import annotations

from lstmgen.codegen import ModelSpec, load_spec
from lstmgen.errors import InputError
from lstmgen.runtime.layer import Layer


class Model:
    """The layers of a ModelSpec, compiled for the current GPU and initialised as torch does."""

    def __init__(self, spec: ModelSpec, seed: int | None = None):
        self.spec = spec
        # One seed per layer derived from `seed`, so a stack is reproducible as a whole.
        self.layers = [Layer(layer, seed=None if seed is None else seed + index)
                       for index, layer in enumerate(spec.layers)]

    def forward(self, x, initial_states=None, *, training: bool = True):
        """y of the last layer and the final (h_T, c_T) of every layer.

        initial_states: None or one (h0, c0) or None per layer.
        """
        self._check_per_layer("initial_states", initial_states, "(h0, c0)")
        states = []
        for index, layer in enumerate(self.layers):
            h0, c0 = (None, None) if initial_states is None or initial_states[index] is None else initial_states[index]
            x, state = layer.forward(x, h0, c0, training=training)
            states.append(state)
        return x, states

    def backward(self, dy, final_state_grads=None) -> list[dict]:
        """Gradients of every layer, first layer first; each layer's dx feeds the one below.

        final_state_grads: None or one (dh_T, dc_T) or None per layer.
        """
        self._check_per_layer("final_state_grads", final_state_grads, "(dh_T, dc_T)")
        grads = [None] * len(self.layers)
        for index in reversed(range(len(self.layers))):
            dh_T, dc_T = (None, None) if final_state_grads is None or final_state_grads[index] is None \
                else final_state_grads[index]
            grads[index] = self.layers[index].backward(dy, dh_T, dc_T)
            dy = grads[index]["dx"]
        return grads

    def _check_per_layer(self, name: str, values, pair: str) -> None:
        if values is not None and len(values) != len(self.layers):
            raise InputError(
                f"{name} has {len(values)} entries but the model has {len(self.layers)} layers: "
                f"pass one {pair} or None per layer"
            )

    def load_torch_state_dict(self, state_dict: dict) -> None:
        """Weights of a torch.nn.LSTM with as many layers (weight_ih_l0, ...)."""
        for index, layer in enumerate(self.layers):
            layer.load_torch_state_dict(state_dict, index)


def load(path, seed: int | None = None) -> Model:
    """Load a spec file and compile its layers (once per process; CuPy's disk cache after)."""
    return Model(load_spec(path), seed=seed)
