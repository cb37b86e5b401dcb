"""Environment and input errors that can be checked without a GPU."""

from pathlib import Path

import numpy as np
import pytest

from conftest import gpu_unavailable_reason
from lstmgen.errors import InputError, NoGPUError


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="checks the behaviour without a GPU")
def test_loading_a_model_without_gpu_names_cause_and_fix():
    import lstmgen

    with pytest.raises(NoGPUError, match=r"no CUDA GPU is usable \(.+\): lstmgen runs its kernels on an NVIDIA GPU; "
                                          r"run on a machine with one .* or use `lstmgen generate`, which needs no GPU"):
        lstmgen.load(Path(__file__).resolve().parent.parent / "specs" / "seed.toml")


def test_host_arrays_are_refused():
    pytest.importorskip("cupy")
    from lstmgen.runtime.validate import check_array

    with pytest.raises(InputError, match=r"x is a numpy.ndarray, not a CuPy array: the kernels read GPU memory; "
                                         r"move it with cupy.asarray\(x\)"):
        check_array("x", np.zeros((2, 3, 4), dtype=np.float32), (None, None, 4), "float32", "[T, B, input_size]", 0)



def test_clusters_that_no_gpc_holds_are_named_with_a_way_out():
    pytest.importorskip("cupy")
    from lstmgen.codegen import SM90_H200, LSTMSpec, plan_layer
    from lstmgen.errors import LaunchError
    from lstmgen.runtime.compile import running_clusters

    spec = LSTMSpec(input_size=8, hidden_size=256, dtype="float16")
    plan = plan_layer(spec, SM90_H200)
    # The fewest clusters any of the layer's kernels runs at once; None where the driver cannot say.
    assert running_clusters(spec, plan, [15, 14]) == 14
    assert running_clusters(spec, plan, [None, 15]) == 15
    assert running_clusters(spec, plan, [None, None]) is None
    with pytest.raises(LaunchError, match=r"this GPU cannot run the kernels of layer \[.*hidden_size=256.*\]: they need "
                                          r"clusters of 8 blocks of 256 threads and \d+ B of shared memory each, and the "
                                          r"driver reports that none fits; use hidden_size above 256"):
        running_clusters(spec, plan, [15, 0])


def test_an_unknown_recurrence_names_the_choices():
    from lstmgen.codegen import LSTMSpec
    from lstmgen.runtime import Layer

    with pytest.raises(InputError, match=r"recurrence must be one of 'auto', 'persistent', 'stepwise', got 'fast': "
                                         r"leave it \"auto\" to choose by the batch size"):
        Layer(LSTMSpec(input_size=2, hidden_size=3), recurrence="fast")
