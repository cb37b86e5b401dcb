"""Errors lstmgen raises for a user's mistake or environment.

Each message says three things: what is wrong, why, and how to fix it (DESIGN.md 7).
"""


class LSTMGenError(Exception):
    """Base of all errors lstmgen raises on purpose."""


class SpecError(LSTMGenError, ValueError):
    """A spec file or LSTMSpec field is invalid."""


class InputError(LSTMGenError, ValueError):
    """An array passed to a layer has the wrong shape, dtype, device or layout."""


class NoGPUError(LSTMGenError, RuntimeError):
    """The runtime needs a CUDA GPU and none is usable."""


class KernelCompileError(LSTMGenError, RuntimeError):
    """NVRTC rejected generated source."""


class LaunchError(LSTMGenError, RuntimeError):
    """This GPU cannot run a generated kernel as planned."""


class GPUOutOfMemoryError(LSTMGenError, MemoryError):
    """A buffer did not fit in GPU memory."""
