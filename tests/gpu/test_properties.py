"""GPU tier: Hypothesis draws specs and shapes and every output and gradient is compared
with the float64 reference (tolerances and their derivation: lstmgen/compare.py).

One test item per (dtype, bias, return_sequences) so that pytest-xdist can spread the
NVRTC compiles of the drawn hidden sizes over CPU cores; "tf32" stands for float32 with
allow_tf32 (tensor cores up to H = 1056, the FMA kernels above). Each example also draws
how the layer runs its recurrence: as planned for the batch ("auto", which at the drawn
batches is the persistent kernels) or stepwise (a cuBLAS GEMM and a cell kernel a step).
"""

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lstmgen.codegen import BIAS_MODES, DTYPES, LSTMSpec
from lstmgen.runtime import Layer
from lstmgen.strategies import problems
from lstmgen.verify import check_layer

pytestmark = pytest.mark.gpu

# $LSTMGEN_TIER_EXAMPLES lowers it where a device call's time limit demands.
EXAMPLES_PER_ITEM = int(os.environ.get("LSTMGEN_TIER_EXAMPLES", 30))


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("dtype", [*DTYPES, "tf32"])
# No shrinking: each shrink step of a hidden size is another NVRTC compile, and device time
# is scarce; the first failing example is reported as drawn.
@settings(max_examples=EXAMPLES_PER_ITEM, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data(), hidden=st.integers(1, 1024), input_size=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_layer_matches_reference(request, dtype, bias, return_sequences, data, hidden, input_size, seed):
    # Counted in the session summary (tests/conftest.py), also across pytest-xdist workers.
    request.node.user_properties.append(("hypothesis_example", 1))
    spec = LSTMSpec(input_size=input_size, hidden_size=hidden, dtype="float32" if dtype == "tf32" else dtype,
                    bias=bias, return_sequences=return_sequences, allow_tf32=dtype == "tf32")
    problem = data.draw(problems(spec), label="problem")
    recurrence = data.draw(st.sampled_from(["auto", "stepwise"]), label="recurrence")
    report = check_layer(Layer(spec, seed=seed, recurrence=recurrence), problem)
    assert not report, "\n".join(report)
