"""CuPy side of lstmgen: compile and cache generated kernels, run layers and models on a GPU."""

from lstmgen.runtime.layer import Layer
from lstmgen.runtime.model import Model, load

__all__ = ["Layer", "Model", "load"]
