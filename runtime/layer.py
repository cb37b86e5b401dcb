"""One LSTM layer on the GPU: parameters, forward, backward.

Forward: Gx = x W_ih^T + b for all steps as one cuBLAS GEMM, then the generated persistent
recurrence kernel. Backward: the generated reverse recurrence kernel produces the
pre-activation gate gradients dG, then cuBLAS GEMMs give dx, dW_ih and dW_hh and a
reduction gives the bias gradient.

Memory (elements of the spec's dtype, T steps, B rows, H units, I inputs):
  inference: Gx 4*T*B*H, plus T*B*H for y when return_sequences (else 2*B*H ping-pong)
  training cache: T*B*(4H + H + H): activated gates (written over Gx in place), cell
  states and every h_t; backward writes dG over the gates and adds only dx (T*B*I).
"""

from __future__ import annotations

import numpy as np

from lstmgen import reference
from lstmgen.codegen import LSTMSpec
from lstmgen.errors import InputError
from lstmgen.runtime.buffers import new_buffer
from lstmgen.runtime.compile import load_kernels
from lstmgen.runtime.validate import check_array


def _pointer(array) -> np.uint64:
    """Device address of an array's first element (0 for an absent optional tensor)."""
    return np.uint64(0 if array is None else array.data.ptr)


class Layer:
    """A compiled LSTM layer with its parameters on the current GPU."""

    def __init__(self, spec: LSTMSpec, seed: int | None = None):
        self.spec = spec
        self.kernels = load_kernels(spec)
        self.params = self._initial_parameters(seed)
        self._cache = None

    # ----------------------------------------------------------------- parameters
    def _parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        hidden, gates = self.spec.hidden_size, 4 * self.spec.hidden_size
        shapes = {"W_ih": (gates, self.spec.input_size), "W_hh": (gates, hidden)}
        shapes.update({name: (gates,) for name in reference.BIAS_PARAMETERS[self.spec.bias]})
        return shapes

    def _initial_parameters(self, seed: int | None) -> dict:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.LSTM initialises."""
        import cupy

        bound = 1.0 / np.sqrt(self.spec.hidden_size)
        rng = np.random.default_rng(seed)
        return {name: cupy.asarray(rng.uniform(-bound, bound, shape).astype(self.spec.dtype))
                for name, shape in self._parameter_shapes().items()}

    def set_parameters(self, params: dict) -> None:
        """Replace every parameter from host or device arrays named as `parameter_names`."""
        import cupy

        expected = self._parameter_shapes()
        if set(params) != set(expected):
            raise InputError(
                f"parameters {sorted(params)} do not match bias mode {self.spec.bias!r}, which needs "
                f"{sorted(expected)}: pass exactly those names"
            )
        new = {}
        for name, shape in expected.items():
            value = cupy.ascontiguousarray(cupy.asarray(params[name], dtype=self.spec.dtype))
            if value.shape != shape:
                raise InputError(
                    f"parameter {name} has shape {tuple(value.shape)} but a layer with input_size "
                    f"{self.spec.input_size} and hidden_size {self.spec.hidden_size} needs {shape}: "
                    f"check that the weights come from a layer of the same sizes"
                )
            new[name] = value
        self.params = new

    def load_torch_state_dict(self, state_dict: dict, layer_index: int = 0) -> None:
        """Take weights from torch.nn.LSTM's state_dict (layer `layer_index` of it)."""
        def get(kind):
            key = f"{kind}_l{layer_index}"
            if key not in state_dict:
                raise InputError(
                    f"state_dict has no {key!r} (keys: {sorted(state_dict)}): it must come from "
                    f"torch.nn.LSTM with at least {layer_index + 1} layer(s)"
                    + (" and bias=True" if kind.startswith("bias") else "")
                )
            value = state_dict[key]
            return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

        params = {"W_ih": get("weight_ih"), "W_hh": get("weight_hh")}
        if self.spec.bias == "double":
            params.update(b_ih=get("bias_ih"), b_hh=get("bias_hh"))
        elif self.spec.bias == "single":
            params["b"] = get("bias_ih") + get("bias_hh")
        self.set_parameters(params)

    def load_keras_weights(self, kernel, recurrent_kernel, bias=None) -> None:
        """Take weights from a Keras LSTM: kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]."""
        params = {"W_ih": np.asarray(kernel).T, "W_hh": np.asarray(recurrent_kernel).T}
        if (bias is None) != (self.spec.bias == "none"):
            raise InputError(
                f"Keras bias {'missing' if bias is None else 'given'} but this layer's bias mode is "
                f"{self.spec.bias!r}: Keras layers with use_bias=True map to bias = \"single\", "
                f"use_bias=False to bias = \"none\""
            )
        if bias is not None:
            bias = np.asarray(bias)
            params.update(b=bias) if self.spec.bias == "single" else params.update(b_ih=bias, b_hh=np.zeros_like(bias))
        self.set_parameters(params)

    # ----------------------------------------------------------------- forward
    def forward(self, x, h0=None, c0=None, *, training: bool = True, batch_first: bool = False):
        """Run the layer over a sequence.

        x: [T, B, input_size] ([B, T, input_size] with batch_first); h0, c0: [B, H] or None
        (zeros). Returns y ([T, B, H] or [B, T, H] when return_sequences, else [B, H]) and
        (h_T, c_T). With training=True the activations the backward pass needs are kept.
        """
        import cupy

        spec, plan = self.spec, self.kernels.plan
        axes = "[B, T, input_size]" if batch_first else "[T, B, input_size]"
        check_array("x", x, (None, None, spec.input_size), spec.dtype, axes)
        if batch_first:
            x = cupy.ascontiguousarray(x.transpose(1, 0, 2))
        steps, batch = x.shape[:2]
        for name, state in (("h0", h0), ("c0", c0)):
            if state is not None:
                check_array(name, state, (batch, spec.hidden_size), spec.dtype, "[B, hidden_size]")

        advice = ("lower the batch size or the sequence length, or run with training=False, "
                  "which keeps no backward cache")
        hidden, gates = spec.hidden_size, 4 * spec.hidden_size
        gx = new_buffer((steps, batch, gates), spec.dtype, "the input projection Gx", advice)
        cupy.matmul(x.reshape(steps * batch, spec.input_size), self.params["W_ih"].T,
                    out=gx.reshape(steps * batch, gates))
        bias = self._bias_sum()
        if bias is not None:
            gx += bias
        keep_sequence = spec.return_sequences or training
        h_buf = new_buffer((steps if keep_sequence else 2, batch, hidden), spec.dtype, "the h sequence", advice)
        h_last = new_buffer((batch, hidden), spec.dtype, "h_T", advice)
        c_last = new_buffer((batch, hidden), spec.dtype, "c_T", advice)
        c_seq = new_buffer((steps, batch, hidden), spec.dtype, "the cell-state cache", advice) if training else None

        for first, rows in self._batch_chunks(batch):
            sl = slice(first, first + rows)
            self._launch(self.kernels.forward, (
                _pointer(gx[:, sl]), _pointer(self.params["W_hh"]),
                _pointer(None if h0 is None else h0[sl]), _pointer(None if c0 is None else c0[sl]),
                _pointer(h_buf[:, sl]), np.int32(h_buf.shape[0]),
                _pointer(h_last[sl]), _pointer(c_last[sl]),
                # Training writes the activated gates over Gx: each thread reads Gx[t] of its
                # own (unit, row) before writing the gates there, so nothing is lost.
                _pointer(gx[:, sl] if training else None), _pointer(None if c_seq is None else c_seq[:, sl]),
                np.int32(steps), np.int32(rows), np.int32(batch),
            ))

        self._cache = (dict(x=x, h0=h0, c0=c0, h_seq=h_buf, gates=gx, c_seq=c_seq, batch_first=batch_first)
                       if training else None)
        if spec.return_sequences:
            y = cupy.ascontiguousarray(h_buf.transpose(1, 0, 2)) if batch_first else h_buf
        else:
            y = h_last
        return y, (h_last, c_last)

    def _bias_sum(self):
        names = reference.BIAS_PARAMETERS[self.spec.bias]
        return sum(self.params[name] for name in names) if names else None

    def _batch_chunks(self, batch: int):
        """Launches of at most `batch_tile` rows: batch rows are independent sequences."""
        tile = self.kernels.plan.batch_tile
        for first in range(0, batch, tile):
            yield first, min(tile, batch - first)

    def _launch(self, kernel, args: tuple) -> None:
        plan = self.kernels.plan
        kernel((plan.num_blocks,), (plan.threads,), args, shared_mem=plan.smem_bytes)

    # ----------------------------------------------------------------- backward
    def backward(self, dy, dh_T=None, dc_T=None) -> dict:
        """Gradients of the last training forward, given dL/dy and optionally dL/dh_T, dL/dc_T.

        Returns a dict: dx, dW_ih, dW_hh, the bias gradients of the bias mode (db_ih and db_hh,
        or db), dh0, dc0. It consumes the forward cache (its gate buffer becomes dG).
        """
        import cupy

        if self._cache is None:
            raise InputError(
                "backward called without a cached forward pass: backward needs the activations of "
                "forward(..., training=True) and each forward can be backpropagated once; call "
                "forward with training=True right before backward"
            )
        spec, cache = self.spec, self._cache
        x, h_seq, gates = cache["x"], cache["h_seq"], cache["gates"]
        steps, batch = x.shape[:2]
        hidden = spec.hidden_size
        if spec.return_sequences:
            axes = "[B, T, hidden_size]" if cache["batch_first"] else "[T, B, hidden_size]"
            shape = (batch, steps, hidden) if cache["batch_first"] else (steps, batch, hidden)
            check_array("dy", dy, shape, spec.dtype, axes)
            if cache["batch_first"]:
                dy = cupy.ascontiguousarray(dy.transpose(1, 0, 2))
        else:
            check_array("dy", dy, (batch, hidden), spec.dtype, "[B, hidden_size] (y = h_T)")
        for name, grad in (("dh_T", dh_T), ("dc_T", dc_T)):
            if grad is not None:
                check_array(name, grad, (batch, hidden), spec.dtype, "[B, hidden_size]")
        if not spec.return_sequences:
            # y is h_T, so its gradient joins dL/dh_T.
            dh_T = dy if dh_T is None else dy + dh_T
            dy = None
        self._cache = None

        advice = "lower the batch size or the sequence length"
        dh0 = new_buffer((batch, hidden), spec.dtype, "dh0", advice)
        dc0 = new_buffer((batch, hidden), spec.dtype, "dc0", advice)
        c0 = cache["c0"]
        for first, rows in self._batch_chunks(batch):
            sl = slice(first, first + rows)
            self._launch(self.kernels.backward, (
                _pointer(self.params["W_hh"]), _pointer(gates[:, sl]), _pointer(cache["c_seq"][:, sl]),
                _pointer(None if c0 is None else c0[sl]), _pointer(None if dy is None else dy[:, sl]),
                _pointer(None if dh_T is None else dh_T[sl]), _pointer(None if dc_T is None else dc_T[sl]),
                _pointer(gates[:, sl]), _pointer(dh0[sl]), _pointer(dc0[sl]),
                np.int32(steps), np.int32(rows), np.int32(batch),
            ))

        d_gates = gates.reshape(steps * batch, 4 * hidden)
        dx = new_buffer((steps, batch, spec.input_size), spec.dtype, "dx", advice)
        cupy.matmul(d_gates, self.params["W_ih"], out=dx.reshape(steps * batch, spec.input_size))
        if cache["batch_first"]:
            dx = cupy.ascontiguousarray(dx.transpose(1, 0, 2))
        grads = {"dx": dx, "dW_ih": d_gates.T @ x.reshape(steps * batch, spec.input_size)}
        # dW_hh = sum_t dG[t]^T h_{t-1}: h_{t-1} is h_seq shifted by one step, with h0 first.
        dW_hh = cupy.zeros((4 * hidden, hidden), dtype=spec.dtype)
        if steps > 1:
            dW_hh += gates[1:].reshape(-1, 4 * hidden).T @ h_seq[:-1].reshape(-1, hidden)
        if cache["h0"] is not None:
            dW_hh += gates[0].T @ cache["h0"]
        grads["dW_hh"] = dW_hh
        db = d_gates.sum(axis=0)
        for name in reference.BIAS_PARAMETERS[spec.bias]:
            grads["d" + name] = db
        grads.update(dh0=dh0, dc0=dc0)
        return grads
