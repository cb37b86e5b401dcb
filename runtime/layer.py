"""One LSTM layer on the GPU: parameters, forward, backward.

Forward: Gx = x W_ih^T for all steps as one cuBLAS GEMM, then the generated persistent
recurrence kernel, which adds the bias b (b_ih + b_hh) as it starts each step's sums.
Batch-sliced layers run, in each direction, the kernel compiled for the fewest whole passes of
rows that hold the batch's groups (Plan.staged_rows), compiled when a batch first needs it.
Backward: the generated reverse recurrence kernel produces the pre-activation gate gradients
dG, then cuBLAS GEMMs give dx, dW_ih, dW_hh and the bias gradient (a row of ones times dG).
The GEMMs run in the layer's math (runtime/gemm.py): TF32 where its plan runs TF32. Large
batches (Plan.stepwise_from_batch, per direction) run the recurrence stepwise instead: a
cuBLAS GEMM (strict float32's forward as three TF32 products) and a generated cell kernel a
step (runtime/stepwise.py), into the same buffers;
the cell kernel adds the bias as it reads Gx. A persistent forward on the buffers of an
earlier call replays that call's launches (projection, bias sum, fill of the tagged words,
recurrence) as one CUDA graph (runtime/replay.py): from Python, queueing them took longer
than the GPU took to run the projection, and the recurrence waited.

Memory (elements of the spec's dtype, T steps, B rows, H units, I inputs):
  inference: Gx 4*T*B*H, plus T*B*H for y when return_sequences (else 2*B*H ping-pong)
  training cache: T*B*(4H + H + H): activated gates (written over Gx in place), cell
  states and every h_t; backward writes dG over the gates and adds dx (T*B*I), the weight
  gradients, dh0, dc0, with a bias a row of T*B ones that the layer keeps (db's GEMM) and,
  where some of W_hh is read from L2 every step, its transposed copy (4H^2). float16 and bfloat16 add a
  float32 [B, H] running state per direction. Where the forward sends h as tagged words
  (Plan.tagged_exchange_batch) it adds 2*B*H words: 4 bytes in 16 bits, else the element's size. batch_first adds
  a time-major copy of x (and of y, dy, dx). The stepwise recurrence adds one step's
  products in the accumulation type: B*4H forward (none on float64's one-kernel step),
  B*H backward times the parts of 4H its
  GEMM runs in (runtime/stepwise.py: 4, 8 in TF32, 1 in strict float32). Where strict float32 runs
  the forward's step as three TF32 products (Plan.tf32x3_gemms, runtime/tf32_split.py), three
  times that (12*B*H), and W_hh and h_{t-1} as TF32 halves (12*H^2 and 3*B*H float32).
"""

from __future__ import annotations

import numpy as np

from lstmgen.codegen import BIAS_PARAMETERS, DTYPES, LSTMSpec, Plan
from lstmgen.errors import InputError
from lstmgen.parameters import initial_parameters, parameter_shapes
from lstmgen.runtime import replay, stepwise
from lstmgen.runtime.buffers import new_buffer
from lstmgen.runtime.compile import load_kernels, load_sized_kernel
from lstmgen.runtime.gemm import Gemms
from lstmgen.runtime.device import require_gpu
from lstmgen.runtime.validate import check_array

_FORWARD_ADVICE = ("lower the batch size or the sequence length, or run with training=False, "
                   "which keeps no backward cache")
_BACKWARD_ADVICE = "lower the batch size or the sequence length"
# How a layer runs its recurrence: "auto" by the batch (Plan.stepwise_from_batch and, for the
# backward, stepwise_backward_from_batch; stepwise only where the call replays a captured
# loop), or always the persistent kernels, or always stepwise (a cuBLAS GEMM and a cell
# kernel a step).
RECURRENCES = ("auto", "persistent", "stepwise")


def _argument_int(value) -> int:
    """A kernel argument as the int it passes: an array's device address (0 for an absent
    optional tensor), or a size itself."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    return 0 if value is None else value.data.ptr


def _kernel_arguments(values) -> tuple:
    """A recurrence kernel's arguments in its C types: arrays as pointers, sizes as int.
    Only launches need them: a replayed call's key holds the plain ints (_argument_int); the
    NumPy scalars took about 9 of a warm call's 60 host us (bench/NOTES.md v30)."""
    return tuple(np.int32(value) if isinstance(value, (int, np.integer)) else np.uint64(_argument_int(value))
                 for value in values)


def _host_array(value) -> np.ndarray:
    """A torch tensor or an array-like as a NumPy array. NumPy cannot hold torch.bfloat16, so
    such tensors come over as float32, which holds every bfloat16 value exactly."""
    if not hasattr(value, "detach"):
        return np.asarray(value)
    value = value.detach().cpu()
    return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()


def _swap_time_and_batch(array, what: str, advice: str):
    """[B, T, F] <-> [T, B, F] as a new C-contiguous buffer."""
    swapped = new_buffer((array.shape[1], array.shape[0], array.shape[2]), array.dtype, what, advice)
    swapped[...] = array.transpose(1, 0, 2)
    return swapped


class Layer:
    """A compiled LSTM layer with its parameters on the current GPU.

    The arrays forward returns are the layer's own buffers, and a training forward keeps
    y (the h sequence), x and h0 for backward: change them in place only after backward.
    """

    def __init__(self, spec: LSTMSpec, seed: int | None = None, *, recurrence: str = "auto"):
        if recurrence not in RECURRENCES:
            raise InputError(
                f"recurrence must be one of {', '.join(map(repr, RECURRENCES))}, got {recurrence!r}: leave it "
                f"\"auto\" to choose by the batch size, or force \"persistent\" or \"stepwise\" to compare them"
            )
        self.spec = spec
        self.recurrence = recurrence
        self.device_id = require_gpu()
        self.kernels = load_kernels(spec)
        self._sized = {}  # (direction, rows) -> (kernel, plan): batch-sliced kernels compiled for their groups (_kernel)
        import cupy

        self.params = {name: cupy.asarray(value) for name, value in initial_parameters(spec, seed).items()}
        self._cache = None
        self._summed_bias = None  # b_ih + b_hh, written on every forward (_sum_bias)
        # The layer's GEMMs, built once: their setup costs host time on every call otherwise.
        self._gemms = Gemms(spec)
        self._exact_gemms = Gemms(spec, tf32_allowed=False)  # db's, bound by memory
        self._row_of_ones = None  # db's GEMM (_ones)

    # ----------------------------------------------------------------- parameters

    def set_parameters(self, params: dict) -> None:
        """Replace every parameter from host or device arrays named W_ih, W_hh and the bias names.

        A pending forward cache is dropped: its backward would mix old and new weights.
        """
        import cupy

        expected = parameter_shapes(self.spec)
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
        self._cache = None

    def load_torch_state_dict(self, state_dict: dict, layer_index: int = 0) -> None:
        """Take weights from torch.nn.LSTM's state_dict (layer `layer_index` of it)."""
        suffix = f"_l{layer_index}"
        if any(key.endswith(suffix + "_reverse") for key in state_dict):
            raise InputError(
                "state_dict comes from a bidirectional torch.nn.LSTM, which lstmgen does not run yet: "
                "export a unidirectional LSTM (bidirectional=False)"
            )
        has_bias = f"bias_ih{suffix}" in state_dict
        if has_bias != (self.spec.bias != "none"):
            raise InputError(
                f"state_dict {'has' if has_bias else 'has no'} biases but this layer's bias mode is "
                f"{self.spec.bias!r}: use bias = \"double\" (or \"single\") for torch.nn.LSTM(bias=True) "
                f"and bias = \"none\" for bias=False"
            )

        def get(kind):
            key = f"{kind}{suffix}"
            if key not in state_dict:
                raise InputError(
                    f"state_dict has no {key!r} (keys: {sorted(state_dict)}): it must come from "
                    f"torch.nn.LSTM with at least {layer_index + 1} layer(s)"
                )
            return _host_array(state_dict[key])

        params = {"W_ih": get("weight_ih"), "W_hh": get("weight_hh")}
        if self.spec.bias == "double":
            params.update(b_ih=get("bias_ih"), b_hh=get("bias_hh"))
        elif self.spec.bias == "single":
            params["b"] = get("bias_ih") + get("bias_hh")
        self.set_parameters(params)

    def load_keras_weights(self, kernel, recurrent_kernel, bias=None) -> None:
        """Take weights from a Keras LSTM: kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]."""
        import cupy

        if (bias is None) != (self.spec.bias == "none"):
            raise InputError(
                f"Keras bias {'missing' if bias is None else 'given'} but this layer's bias mode is "
                f"{self.spec.bias!r}: Keras layers with use_bias=True map to bias = \"single\" "
                f"(or \"double\", with b_hh = 0), use_bias=False to bias = \"none\""
            )
        params = {"W_ih": cupy.asarray(kernel).T, "W_hh": cupy.asarray(recurrent_kernel).T}
        if self.spec.bias == "single":
            params["b"] = bias
        elif self.spec.bias == "double":
            params.update(b_ih=bias, b_hh=cupy.zeros_like(cupy.asarray(bias)))
        self.set_parameters(params)

    # ----------------------------------------------------------------- forward
    def forward(self, x, h0=None, c0=None, *, training: bool = True, batch_first: bool = False):
        """Run the layer over a sequence.

        x: [T, B, input_size] ([B, T, input_size] with batch_first); h0, c0: [B, H] or None
        (zeros). Returns y ([T, B, H] or [B, T, H] when return_sequences, else [B, H]) and
        (h_T, c_T). With training=True the activations the backward pass needs are kept.
        """
        import cupy

        spec = self.spec
        self._check_current_device()
        axes = "[B, T, input_size]" if batch_first else "[T, B, input_size]"
        # batch_first input is copied to time-major anyway, so it may be strided.
        check_array("x", x, (None, None, spec.input_size), spec.dtype, axes, self.device_id,
                    contiguous=not batch_first)
        if batch_first:
            x = _swap_time_and_batch(x, "a time-major copy of x", _FORWARD_ADVICE)
        steps, batch = x.shape[:2]
        for name, state in (("h0", h0), ("c0", c0)):
            if state is not None:
                check_array(name, state, (batch, spec.hidden_size), spec.dtype, "[B, hidden_size]", self.device_id)

        hidden, gates = spec.hidden_size, 4 * spec.hidden_size
        gx = self._buffer((steps, batch, gates), "the input projection Gx", _FORWARD_ADVICE)
        bias = self._bias_buffer()
        keep_sequence = spec.return_sequences or training
        h_buf = self._buffer((steps if keep_sequence else 2, batch, hidden), "the h sequence", _FORWARD_ADVICE)
        h_last = self._buffer((batch, hidden), "h_T", _FORWARD_ADVICE)
        c_last = self._buffer((batch, hidden), "c_T", _FORWARD_ADVICE)
        c_seq = self._buffer((steps, batch, hidden), "the cell-state cache", _FORWARD_ADVICE) if training else None
        # The running cell state is kept in the accumulation type (float32 for 16-bit storage).
        cell = c_last if self._accumulates_in_storage() else self._state_buffer(batch, "the cell state", _FORWARD_ADVICE)

        def project() -> None:
            """Gx = x W_ih^T, and the bias b_ih + b_hh, on the current stream, to which the GEMMs'
            handle is bound."""
            self._gemms.matmul(x.reshape(steps * batch, spec.input_size), self.params["W_ih"].T,
                               gx.reshape(steps * batch, gates), bind=False)
            self._sum_bias()

        # The stepwise recurrence replays a graph of its own, which starts from Gx: the
        # projection goes first. The persistent kernel's graph takes it in.
        projected = ran_stepwise = self._may_run_stepwise(batch, "forward")
        if projected:
            self._gemms.bind(cupy.cuda.get_current_stream())
            project()
            ran_stepwise = stepwise.forward(
                spec, self._gemms, self.params["W_hh"], gx, bias, h0, c0, h_buf, h_last, c_last, cell, training, c_seq,
                _FORWARD_ADVICE, replays_only=self.recurrence == "auto")
        if not ran_stepwise:
            # Held until the kernel is queued: freed before, its memory could go to another
            # allocation on the stream (torch's allocator serves other threads too), whose
            # writes would land between the fill and the kernel.
            exchange = self._exchange(batch)
            kernel, plan = self._kernel("forward", batch)
            arguments = (
                gx, bias, self.params["W_hh"], h0, c0, h_buf, h_buf.shape[0], h_last, c_last, cell,
                # Training writes the activated gates over Gx: each lane reads Gx[t] of its own
                # (unit, row) before writing the gates there, so nothing is lost.
                gx if training else None, c_seq, steps, batch, *exchange,
            ) + self._launch_tail(plan, batch)

            def issue(stream) -> None:
                with stream:
                    if not projected:
                        project()
                    for words in exchange:
                        if words is not None:  # all ones, a tag that no step takes for its own (_exchange)
                            cupy.cuda.runtime.memsetAsync(words.data.ptr, 0xFF, words.nbytes, stream.ptr)
                    self._launch(kernel, plan, arguments, batch)

            # The Python that queues a call's launches takes longer than the GPU needs for the
            # projection (bench/NOTES.md v13); a call on the buffers of an earlier one replays
            # them as one CUDA graph. Their addresses and sizes are all the launches depend on
            # (x and W_ih's too, though unread where the stepwise path has projected already).
            parameters = tuple(self.params[name].data.ptr for name in ("W_ih", *BIAS_PARAMETERS[spec.bias]))
            key = ("persistent forward", spec, x.data.ptr, parameters, projected, *map(_argument_int, arguments))
            replay.run(key, self._gemms.bind, issue)

        self._cache = (dict(x=x, h0=h0, c0=c0, h_seq=h_buf, gates=gx, c_seq=c_seq, batch_first=batch_first)
                       if training else None)
        if not spec.return_sequences:
            y = h_last
        elif batch_first:
            y = _swap_time_and_batch(h_buf, "a batch-first copy of y", _FORWARD_ADVICE)
        else:
            y = h_buf
        return y, (h_last, c_last)

    def take_cache(self) -> dict | None:
        """Hand over the pending forward cache (x, h0, c0, h_seq, gates, c_seq, batch_first).

        With restore_cache, a caller that keeps activations itself, such as an autograd graph
        holding several forwards of one layer, can run each backward later.
        """
        cache, self._cache = self._cache, None
        return cache

    def restore_cache(self, cache: dict) -> None:
        """Make `cache` (from take_cache) the one the next backward consumes."""
        self._cache = cache

    def _buffer(self, shape, what: str, advice: str):
        return new_buffer(shape, self.spec.dtype, what, advice)

    def _ones(self, count: int):
        """A [1, count] row of ones, from a buffer the layer keeps and grows: filled once, not
        on every backward."""
        if self._row_of_ones is None or self._row_of_ones.size < count:
            self._row_of_ones = self._buffer((count,), "a row of ones for the bias gradient", _BACKWARD_ADVICE)
            self._row_of_ones.fill(1)
        return self._row_of_ones[:count].reshape(1, count)

    def _exchange(self, batch: int) -> tuple:
        """The forward kernel's last argument where it can send h_t as words tagged with t
        (Plan.tagged_exchange), as a tuple of one: up to tagged_exchange_batch rows [2, B, H]
        words (16-bit values and their tags in 4 bytes; float32 and float64 with the tag in
        their last bit, the element's size), which the call fills with ones before the kernel,
        a tag that no step takes for its own words (templates/_exchange.j2); past it None (a
        grid barrier a step). Otherwise empty."""
        plan = self.kernels.plan
        if not plan.tagged_exchange:
            return ()
        if batch > plan.tagged_exchange_batch:
            return (None,)
        word = np.uint32 if DTYPES[self.spec.dtype]["bytes"] <= 4 else np.uint64
        words = new_buffer((2, batch, self.spec.hidden_size), word, "the exchange of h between blocks", _FORWARD_ADVICE)
        return (words,)

    def _check_current_device(self) -> None:
        import cupy

        current = cupy.cuda.Device().id
        if current != self.device_id:
            raise InputError(
                f"this layer lives on GPU {self.device_id} but the current device is GPU {current}: "
                f"call it inside `with cupy.cuda.Device({self.device_id}):`"
            )

    def _bias_buffer(self):
        """The bias the recurrence kernels add to Gx (None without one): the parameter itself,
        or the buffer that _sum_bias writes b_ih + b_hh into on every call (an optimizer may
        have changed either in place), the same buffer each time, so that captured launches
        replay."""
        names = BIAS_PARAMETERS[self.spec.bias]
        if len(names) < 2:
            return self.params[names[0]] if names else None
        if self._summed_bias is None:
            self._summed_bias = self._buffer((4 * self.spec.hidden_size,), "b_ih + b_hh", _FORWARD_ADVICE)
        return self._summed_bias

    def _sum_bias(self) -> None:
        """b_ih + b_hh into _bias_buffer() on the current stream, where the bias is two."""
        import cupy

        names = BIAS_PARAMETERS[self.spec.bias]
        if len(names) == 2:
            cupy.add(*(self.params[name] for name in names), out=self._bias_buffer())

    def _accumulates_in_storage(self) -> bool:
        return DTYPES[self.spec.dtype]["accumulate_dtype"] == self.spec.dtype

    def _state_buffer(self, batch: int, what: str, advice: str):
        return new_buffer((batch, self.spec.hidden_size), DTYPES[self.spec.dtype]["accumulate_dtype"], what, advice)

    def _may_run_stepwise(self, batch: int, direction: str) -> bool:
        """Forced, or "auto" at a batch where the direction's stepwise recurrence is faster
        when replayed (which "auto" then asks of it: a first call on new buffers runs the
        persistent kernels). Either backward consumes either forward."""
        if self.recurrence == "auto":
            plan = self.kernels.plan
            from_batch = plan.stepwise_from_batch if direction == "forward" else plan.stepwise_backward_from_batch
            return bool(from_batch) and batch >= from_batch
        return self.recurrence == "stepwise"

    def _kernel(self, direction: str, batch: int) -> tuple:
        """`direction`'s recurrence kernel for `batch` rows and the plan it was built with:
        batch-sliced, the one compiled for the rows of the batch's groups (Plan.staged_rows);
        but not for a call that the stepwise recurrence takes over once it is replayed,
        which would not repay a compile, nor for cooperative plans: the layer's own."""
        kernels = self.kernels
        if self._may_run_stepwise(batch, direction) or not kernels.plan.batch_sliced:
            return getattr(kernels, direction), kernels.plan
        key = (direction, kernels.plan.staged_rows(direction, batch, kernels.clusters))
        if key not in self._sized:
            self._sized[key] = load_sized_kernel(self.spec, *key)
        return self._sized[key]

    def _launch_tail(self, plan: Plan, batch: int) -> tuple:
        """The last argument of `plan`'s kernels where it slices the batch: rows a group takes."""
        return (plan.group_rows(batch, self.kernels.clusters),) if plan.batch_sliced else ()

    def _launch(self, kernel, plan: Plan, args: tuple, batch: int) -> None:
        """`plan`'s kernel on the current stream; `args` (arrays and sizes, _kernel_arguments) end
        with _launch_tail(plan, batch)."""
        kernel((plan.blocks(batch, self.kernels.clusters),), (plan.threads,), _kernel_arguments(args),
               shared_mem=plan.smem_bytes)

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
        self._check_current_device()
        spec, cache = self.spec, self._cache
        x, h_seq, gates = cache["x"], cache["h_seq"], cache["gates"]
        steps, batch = x.shape[:2]
        hidden, input_size = spec.hidden_size, spec.input_size
        batch_first = cache["batch_first"]
        if spec.return_sequences:
            axes = "[B, T, hidden_size]" if batch_first else "[T, B, hidden_size]"
            shape = (batch, steps, hidden) if batch_first else (steps, batch, hidden)
            check_array("dy", dy, shape, spec.dtype, axes, self.device_id, contiguous=not batch_first)
            if batch_first:
                dy = _swap_time_and_batch(dy, "a time-major copy of dy", _BACKWARD_ADVICE)
        else:
            check_array("dy", dy, (batch, hidden), spec.dtype, "[B, hidden_size] (y = h_T)", self.device_id)
        for name, grad in (("dh_T", dh_T), ("dc_T", dc_T)):
            if grad is not None:
                check_array(name, grad, (batch, hidden), spec.dtype, "[B, hidden_size]", self.device_id)
        if not spec.return_sequences:
            # y is h_T, so its gradient joins dL/dh_T.
            if dh_T is not None:
                dy = cupy.add(dy, dh_T, out=self._buffer((batch, hidden), "dL/dh_T", _BACKWARD_ADVICE))
            dh_T, dy = dy, None
        self._cache = None

        dh0 = self._buffer((batch, hidden), "dh0", _BACKWARD_ADVICE)
        dc0 = self._buffer((batch, hidden), "dc0", _BACKWARD_ADVICE)
        d_cell = dc0 if self._accumulates_in_storage() else self._state_buffer(batch, "dL/dc", _BACKWARD_ADVICE)
        ran_stepwise = self._may_run_stepwise(batch, "backward") and stepwise.backward(
            spec, self._gemms, self.params["W_hh"], gates, cache["c_seq"], cache["c0"], dy, dh_T, dc_T, dh0, dc0,
            d_cell, _BACKWARD_ADVICE, replays_only=self.recurrence == "auto")
        if not ran_stepwise:
            self._backward_recurrence(gates, cache, dy, dh_T, dc_T, dh0, dc0, d_cell, steps, batch)

        d_gates = gates.reshape(steps * batch, 4 * hidden)
        dx = self._buffer((steps, batch, input_size), "dx", _BACKWARD_ADVICE)
        gemms = self._gemms
        gemms.matmul(d_gates, self.params["W_ih"], dx.reshape(steps * batch, input_size))
        if batch_first:
            dx = _swap_time_and_batch(dx, "a batch-first copy of dx", _BACKWARD_ADVICE)
        dW_ih = self._buffer((4 * hidden, input_size), "dW_ih", _BACKWARD_ADVICE)
        gemms.matmul(d_gates.T, x.reshape(steps * batch, input_size), dW_ih)
        # dW_hh = sum_t dG[t]^T h_{t-1}: h_{t-1} is h_seq shifted by one step, with h0 first.
        dW_hh = self._buffer((4 * hidden, hidden), "dW_hh", _BACKWARD_ADVICE)
        if steps > 1:
            gemms.matmul(gates[1:].reshape(-1, 4 * hidden).T, h_seq[:-1].reshape(-1, hidden), dW_hh)
        else:
            dW_hh.fill(0)
        if cache["h0"] is not None:
            dW_hh += gates[0].T @ cache["h0"]
        grads = {"dx": dx, "dW_ih": dW_ih, "dW_hh": dW_hh}
        bias_names = BIAS_PARAMETERS[spec.bias]
        if bias_names:
            # db = sum over every (step, row) of dG, as a GEMM of a row of ones: cuBLAS reads dG
            # once at full bandwidth, where a column sum of [T*B, 4H] in CuPy took as long as
            # the backward recurrence itself at B = 256 (bench/NOTES.md v9).
            # It is bound by memory: TF32 would only round dG before the sum.
            db = self._buffer((4 * hidden,), "db", _BACKWARD_ADVICE)
            self._exact_gemms.matmul(self._ones(steps * batch), d_gates, db.reshape(1, 4 * hidden))
            # Separate arrays per bias, so that an in-place update of one leaves the other alone.
            grads.update({"d" + name: db if index == 0 else db.copy() for index, name in enumerate(bias_names)})
        grads.update(dh0=dh0, dc0=dc0)
        return grads

    def _backward_recurrence(self, gates, cache, dy, dh_T, dc_T, dh0, dc0, d_cell, steps: int, batch: int) -> None:
        """The persistent backward kernel: dG over the gates, dh0, dc0."""
        import cupy

        # Weights streamed from L2 are read as W_hh^T, so that the lanes gathering one unit's
        # dh read consecutive gate rows; all on chip they are loaded once, from W_hh itself.
        weights = self.params["W_hh"]
        kernel, plan = self._kernel("backward", batch)
        if plan.backward_streams_weights:
            weights = cupy.ascontiguousarray(weights.T)
        self._launch(kernel, plan, (
            weights, gates, cache["c_seq"], cache["c0"], dy, dh_T, dc_T, gates, dh0, dc0, d_cell, steps, batch,
        ) + self._launch_tail(plan, batch), batch)
        # The transposed copy goes back to CuPy's pool when this returns, for the gradients
        # after it: the pool hands it out again only to work queued after this launch on the
        # same stream.
