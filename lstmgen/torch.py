"""lstmgen.torch.LSTM: a drop-in for torch.nn.LSTM that runs lstmgen's kernels.

Same constructor, parameter names, shapes, initialisation and call as torch.nn.LSTM, so
state_dicts move both ways. Each layer is one `torch.ops.lstmgen.lstm_layer`, a
torch.library custom op with a fake (shape) implementation and registered autograd, so
torch.compile keeps it in one graph and torch.library.opcheck passes. Tensors reach CuPy by
DLPack without copies and the kernels run on torch's current stream.

CUDA tensors only. `enable_cpu_reference()` opts in to running the float64 NumPy reference
on CPU tensors instead: exact and slow, for tests and debugging without a GPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from typing import Optional

import numpy as np
import torch

from lstmgen.codegen import LSTMSpec

_SUPPORTED_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
_devices = {"cuda", "meta"}


# --------------------------------------------------------------------------- the custom ops
@torch.library.custom_op("lstmgen::lstm_layer", mutates_args=(), device_types="cuda")
def lstm_layer(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
               b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer over x [T, B, I] from (h0, c0) [B, H]: returns y [T, B, H], h_T, c_T and
    the backward cache, activated gates [T, B, 4H] and cell states [T, B, H]."""
    with _on_torch_stream(x), _prepared_layer(x, w_ih, w_hh, b_ih, b_hh) as layer:
        y, (h_T, c_T) = layer.forward(*map(_cupy, (x, h0, c0)), training=True)
        cache = layer.take_cache()
        return tuple(torch.from_dlpack(a) for a in (y, h_T, c_T, cache["gates"], cache["c_seq"]))


@torch.library.custom_op("lstmgen::lstm_layer_backward", mutates_args=(), device_types="cuda")
def lstm_layer_backward(dy: torch.Tensor, dh_T: torch.Tensor, dc_T: torch.Tensor, x: torch.Tensor,
                        h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                        gates: torch.Tensor, c_seq: torch.Tensor, y: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dh0, dc0, dW_ih, dW_hh, db) of lstm_layer given those of y, h_T and c_T;
    db is the gradient of each bias vector (the caller drops it for a layer without bias)."""
    # Bias values play no part in backward; zeros select the layer that reports db.
    zeros = w_hh.new_zeros(w_hh.shape[0])
    with _on_torch_stream(x), _prepared_layer(x, w_ih, w_hh, zeros, zeros) as layer:
        # The kernel writes dG over the gate buffer; the graph's copy must survive (retain_graph).
        layer.restore_cache(dict(x=_cupy(x), h0=_cupy(h0), c0=_cupy(c0), h_seq=_cupy(y),
                                 gates=_cupy(gates.clone()), c_seq=_cupy(c_seq), batch_first=False))
        grads = layer.backward(*map(_cupy, (dy, dh_T, dc_T)))
        return tuple(torch.from_dlpack(grads[name]) for name in ("dx", "dh0", "dc0", "dW_ih", "dW_hh", "db_ih"))


@lstm_layer.register_fake
def _lstm_layer_shapes(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    steps, batch, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
    return (x.new_empty(steps, batch, hidden), x.new_empty(batch, hidden), x.new_empty(batch, hidden),
            x.new_empty(steps, batch, 4 * hidden), x.new_empty(steps, batch, hidden))


@lstm_layer_backward.register_fake
def _lstm_layer_backward_shapes(dy, dh_T, dc_T, x, h0, c0, w_ih, w_hh, gates, c_seq, y):
    return (torch.empty_like(x), torch.empty_like(h0), torch.empty_like(c0), torch.empty_like(w_ih),
            torch.empty_like(w_hh), w_hh.new_empty(w_hh.shape[0]))


def _setup_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, _ = inputs
    y, _, _, gates, c_seq = output
    ctx.has_bias = b_ih is not None
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, gates, c_seq, y)


def _backward(ctx, dy, dh_T, dc_T, _d_gates, _d_c_seq):
    x, h0, c0, w_ih, w_hh, gates, c_seq, y = ctx.saved_tensors
    dy, dh_T, dc_T = (torch.zeros_like(like) if grad is None else grad.contiguous()
                      for grad, like in ((dy, y), (dh_T, h0), (dc_T, c0)))
    dx, dh0, dc0, dw_ih, dw_hh, db = lstm_layer_backward(dy, dh_T, dc_T, x, h0, c0, w_ih, w_hh, gates, c_seq, y)
    db = db if ctx.has_bias else None
    return dx, dh0, dc0, dw_ih, dw_hh, db, db


lstm_layer.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- CUDA plumbing
def _cupy(tensor):
    import cupy

    return cupy.from_dlpack(tensor.detach().contiguous())


class _TorchBlock:
    """A block of torch's caching allocator, returned to it when CuPy drops the last reference."""

    def __init__(self, size: int, device: int, stream):
        self.ptr = torch.cuda.caching_allocator_alloc(size, device, stream)

    def __del__(self):
        torch.cuda.caching_allocator_delete(self.ptr)


def _torch_allocator(size: int):
    """CuPy allocations from torch's allocator on torch's current stream: the op's outputs and
    temporaries count in torch's memory statistics, torch can reuse the memory, and
    Tensor.record_stream works on the outputs."""
    import cupy

    device = cupy.cuda.Device().id
    block = _TorchBlock(size, device, torch.cuda.current_stream(device))
    return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(block.ptr, size, block, device), 0)


@contextlib.contextmanager
def _on_torch_stream(tensor):
    """Run CuPy work on the tensor's device, on torch's current stream, with torch's memory."""
    import cupy

    index = tensor.device.index
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index), stream, cupy.cuda.using_allocator(_torch_allocator):
        yield


_layers: dict = {}
# A Layer holds weights and a cache between calls; forward and backward (autograd's worker
# thread) and user threads must not interleave on one.
_layers_lock = threading.Lock()


@contextlib.contextmanager
def _prepared_layer(x, w_ih, w_hh, b_ih, b_hh):
    """The compiled lstmgen layer for these shapes, holding these weights (views, no copy)."""
    from lstmgen.runtime import Layer

    spec = LSTMSpec(input_size=w_ih.shape[1], hidden_size=w_hh.shape[1], dtype=_SUPPORTED_DTYPES[x.dtype],
                    bias="double" if b_ih is not None else "none", return_sequences=True)
    with _layers_lock:
        key = (spec, x.device.index)
        if key not in _layers:
            _layers[key] = Layer(spec)
        layer = _layers[key]
        params = {"W_ih": _cupy(w_ih), "W_hh": _cupy(w_hh)}
        if b_ih is not None:
            params.update(b_ih=_cupy(b_ih), b_hh=_cupy(b_hh))
        layer.set_parameters(params)  # contiguous CuPy views of the right dtype are kept as they are
        try:
            yield layer
        finally:
            layer.params = {}  # keep no reference to the caller's weights


# --------------------------------------------------------------------------- the CPU reference
def enable_cpu_reference() -> None:
    """Let CPU tensors run the float64 NumPy reference (lstmgen.reference): exact, slow."""
    from lstmgen import reference

    def as_numpy(tensor):
        return tensor.detach().to(torch.float64).numpy()

    def params(w_ih, w_hh, b_ih, b_hh):
        p = {"W_ih": as_numpy(w_ih), "W_hh": as_numpy(w_hh)}
        if b_ih is not None:
            p.update(b_ih=as_numpy(b_ih), b_hh=as_numpy(b_hh))
        return p

    @lstm_layer.register_kernel("cpu")
    def _forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        result = reference.forward(params(w_ih, w_hh, b_ih, b_hh), as_numpy(x), as_numpy(h0), as_numpy(c0))
        outputs = (result.y, result.h_T, result.c_T, result.cache.gates, result.cache.c[1:])
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(x.dtype) for a in outputs)

    @lstm_layer_backward.register_kernel("cpu")
    def _backward_kernel(dy, dh_T, dc_T, x, h0, c0, w_ih, w_hh, gates, c_seq, y):
        h = np.concatenate([as_numpy(h0)[None], as_numpy(y)])
        c = np.concatenate([as_numpy(c0)[None], as_numpy(c_seq)])
        cache = reference.ForwardCache(as_numpy(x), h, c, as_numpy(gates), True)
        zeros = w_hh.new_zeros(w_hh.shape[0])
        grads = reference.backward(params(w_ih, w_hh, zeros, zeros), cache, as_numpy(dy), as_numpy(dh_T),
                                   as_numpy(dc_T))
        outputs = (grads["dx"], grads["dh0"], grads["dc0"], grads["dW_ih"], grads["dW_hh"], grads["db_ih"])
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(x.dtype) for a in outputs)

    _devices.add("cpu")


# --------------------------------------------------------------------------- the module
def _check_dtype(dtype) -> None:
    if dtype not in _SUPPORTED_DTYPES:
        raise NotImplementedError(
            f"lstmgen.torch.LSTM does not support {dtype} yet: the nearest supported dtypes are "
            f"{', '.join(map(str, _SUPPORTED_DTYPES))} (16-bit training from torch needs float32 master weights, "
            f"which are not there yet; float16 and bfloat16 inference run in lstmgen's own runtime, "
            f"lstmgen.runtime.Layer)")


class LSTM(torch.nn.Module):
    """torch.nn.LSTM's interface on lstmgen's kernels. See torch.nn.LSTM for the arguments."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        if bidirectional:
            raise NotImplementedError(
                "lstmgen.torch.LSTM(bidirectional=True) is not supported yet: the nearest supported setting is "
                "bidirectional=False; for both directions run a second LSTM on input.flip(0) and concatenate")
        if proj_size != 0:
            raise NotImplementedError(
                f"lstmgen.torch.LSTM(proj_size={proj_size}) is not supported yet: the nearest supported setting is "
                f"proj_size=0 followed by torch.nn.Linear(hidden_size, {proj_size}) on the output")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1] representing the probability of an "
                             f"element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1")
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        _check_dtype(dtype)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = False, 0
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", torch.nn.Parameter(torch.empty(4 * hidden_size, layer_input, **factory)))
            self.register_parameter(f"weight_hh_l{layer}", torch.nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", torch.nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                self.register_parameter(f"bias_hh_l{layer}", torch.nn.Parameter(torch.empty(4 * hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) for every parameter, as torch.nn.LSTM."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        if input.device.type not in _devices:
            raise RuntimeError(
                f"lstmgen.torch.LSTM runs on CUDA tensors, got input on {input.device}: move the module and the "
                f"input with .cuda(), use torch.nn.LSTM on the CPU, or call lstmgen.torch.enable_cpu_reference() "
                f"to run the (slow, exact) float64 reference on CPU tensors")
        weight = self.weight_ih_l0
        _check_dtype(weight.dtype)  # e.g. after module.half()
        if input.dtype != weight.dtype:
            raise RuntimeError(f"input must have the type {weight.dtype}, got type {input.dtype}: convert the input "
                               f"with .to({weight.dtype}) or the module with .to({input.dtype})")
        x = input if batched else input.unsqueeze(1)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")
        x = x.contiguous()
        batch = x.shape[1]
        state_shape = (self.num_layers, batch, self.hidden_size)
        if hx is None:
            h0 = c0 = x.new_zeros(state_shape)
        else:
            h0, c0 = (state if batched else state.unsqueeze(1) for state in hx)
            for name, state in (("hidden state", h0), ("cell state", c0)):
                if tuple(state.shape) != state_shape:
                    raise RuntimeError(f"Expected {name} size {state_shape}, got {tuple(state.shape)}")
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            x, h, c, _, _ = lstm_layer(
                x, h0[layer].contiguous(), c0[layer].contiguous(), getattr(self, f"weight_ih_l{layer}"),
                getattr(self, f"weight_hh_l{layer}"), getattr(self, f"bias_ih_l{layer}", None),
                getattr(self, f"bias_hh_l{layer}", None))
            h_n.append(h)
            c_n.append(c)
            if self.dropout and self.training and layer + 1 < self.num_layers:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
        output, h_n, c_n = x, torch.stack(h_n), torch.stack(c_n)
        if self.batch_first and batched:
            output = output.transpose(0, 1)
        if not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)
