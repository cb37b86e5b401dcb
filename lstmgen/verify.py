"""Checks a compiled layer against the float64 NumPy reference, output by output.

`check_layer` runs one problem: random data, GPU forward and backward into NaN-poisoned
buffers, the reference on the very same (rounded) values, and a comparison of y, h_T, c_T
and every gradient. `verify_spec` drives it with Hypothesis for `lstmgen verify`.
"""

from __future__ import annotations

import numpy as np

from lstmgen import reference
from lstmgen.compare import mismatches, tolerance_key
from lstmgen.dtypes import numpy_dtype
from lstmgen.errors import LSTMGenError
from lstmgen.strategies import Problem


def check_layer(layer, problem: Problem) -> list[str]:
    """Mismatch lines of one forward + backward of `layer` on `problem` (empty: all agree)."""
    import cupy

    from lstmgen.runtime.buffers import poisoned_buffers

    spec = layer.spec
    rng = np.random.default_rng(problem.seed)
    batch, hidden = problem.batch, spec.hidden_size
    storage = numpy_dtype(spec.dtype)
    precision = tolerance_key(spec.dtype, layer.kernels.plan.mma_type)

    def draw(*shape):
        # Uniform in [-1, 1], rounded to the layer's dtype once: both sides see the same values.
        return rng.uniform(-1.0, 1.0, shape).astype(storage)

    x = draw(problem.steps, batch, spec.input_size)
    h0, c0 = (draw(batch, hidden), draw(batch, hidden)) if problem.with_initial_state else (None, None)
    dy = draw(problem.steps, batch, hidden) if spec.return_sequences else draw(batch, hidden)
    dh_T, dc_T = (draw(batch, hidden), draw(batch, hidden)) if problem.with_final_state_grads else (None, None)
    params = {name: value.get() for name, value in layer.params.items()}

    expected = reference.forward(params, x, h0, c0, return_sequences=spec.return_sequences)
    gate = reference.gate_gradients(params, expected.cache, dy, dh_T, dc_T)
    expected_grads = reference.gradients(params, expected.cache, gate.dz, gate.dh0, gate.dc0)
    # Sized without the activations' derivatives, which kernels form from rounded
    # activations: in 16 bits that is most of the error; in float32 and float64 it loosens
    # the gradients' yardstick by up to 1/sigmoid'(0) = 4, far below a wrong gate's O(1).
    term_sizes = reference.gradient_term_sizes(params, expected.cache, gate.dz_error_sizes)

    def device(array):
        return None if array is None else cupy.asarray(array)

    with poisoned_buffers():
        y, (h_T, c_T) = layer.forward(device(x), device(h0), device(c0), training=True)
        grads = layer.backward(device(dy), device(dh_T), device(dc_T))
    report = []
    for name, actual, wanted in (("y", y, expected.y), ("h_T", h_T, expected.h_T), ("c_T", c_T, expected.c_T)):
        report += mismatches(name, actual.get(), wanted, precision)
    if set(grads) != set(expected_grads):
        report.append(f"gradients {sorted(grads)}, expected {sorted(expected_grads)}")
    for name in expected_grads:
        if name in grads:
            report += mismatches(name, grads[name].get(), expected_grads[name], precision,
                                 term_sizes.get(name))
    return report


def verify_spec(model_spec, examples: int, log=print) -> bool:
    """Hypothesis property run of every layer of `model_spec`; True when all examples agree."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import HypothesisException

    from lstmgen.runtime import Layer
    from lstmgen.strategies import problems

    all_passed = True
    for index, spec in enumerate(model_spec.layers, start=1):
        layer = Layer(spec, seed=index)
        runs = []

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(problems(spec, max_steps=200, max_batch=64))
        def agrees(problem):
            runs.append(problem)
            report = check_layer(layer, problem)
            assert not report, "\n".join(report)

        try:
            agrees()
        except AssertionError as failure:
            all_passed = False
            log(f"layer {index} [{spec.describe()}]: MISMATCH after {len(runs)} examples; "
                f"smallest failing problem {runs[-1]}:\n{failure}")
        except (HypothesisException, LSTMGenError) as failure:
            all_passed = False
            log(f"layer {index} [{spec.describe()}]: property run failed: {failure}")
        else:
            log(f"layer {index} [{spec.describe()}]: {len(runs)} examples, every output and gradient "
                f"within tolerance")
    return all_passed
