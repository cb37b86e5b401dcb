"""Hypothesis strategies for layer specs and problem shapes, shared by tests and `lstmgen verify`."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from lstmgen.codegen import BIAS_MODES, DTYPES, LSTMSpec

# Bound on T*B*H^2, the float64 reference's cost per example, so a property run takes minutes.
REFERENCE_COST_BOUND = 10**8


@dataclass(frozen=True)
class Problem:
    """One run of a layer: sizes, whether an initial state is given, and the data seed."""

    steps: int
    batch: int
    with_initial_state: bool     # h0, c0 given (else zeros)
    with_final_state_grads: bool  # dL/dh_T, dL/dc_T given (else zeros)
    seed: int


@st.composite
def layer_specs(draw, dtypes=tuple(DTYPES), max_hidden: int = 1024, max_input: int = 300):
    """Specs over every dtype, bias mode and return_sequences, hidden sizes 1..max_hidden,
    and TF32 on or off for float32."""
    dtype = draw(st.sampled_from(dtypes))
    return LSTMSpec(
        input_size=draw(st.integers(1, max_input)),
        hidden_size=draw(st.integers(1, max_hidden)),
        dtype=dtype,
        bias=draw(st.sampled_from(BIAS_MODES)),
        return_sequences=draw(st.booleans()),
        allow_tf32=dtype == "float32" and draw(st.booleans()),
    )


@st.composite
def problems(draw, spec: LSTMSpec, max_steps: int = 300, max_batch: int = 300):
    """Shapes for `spec` within REFERENCE_COST_BOUND; T and B start at 1."""
    per_step = max(1, spec.hidden_size * max(spec.hidden_size, spec.input_size))
    steps = draw(st.integers(1, max(1, min(max_steps, REFERENCE_COST_BOUND // per_step))))
    batch = draw(st.integers(1, max(1, min(max_batch, REFERENCE_COST_BOUND // (per_step * steps)))))
    return Problem(steps=steps, batch=batch, with_initial_state=draw(st.booleans()),
                   with_final_state_grads=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))
