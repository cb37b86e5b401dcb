"""lstmgen: spec-specialised fused LSTM kernels, generated as CUDA and run through CuPy.

    model = lstmgen.load("specs/seed.toml")
    y, (h, c) = model.layers[0].forward(x, h0, c0)
    grads = model.layers[0].backward(dy, dh_T, dc_T)

The runtime (and so CuPy) is imported only when first used, so the generator works on
machines without CuPy or a GPU.
"""

from lstmgen.codegen import LSTMSpec, ModelSpec, load_spec
from lstmgen.errors import LSTMGenError

__all__ = ["LSTMSpec", "ModelSpec", "load_spec", "LSTMGenError", "load", "Layer", "Model"]


def __getattr__(name):
    if name in ("load", "Layer", "Model"):
        from lstmgen import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'lstmgen' has no attribute {name!r}")
