"""Spec -> plan -> CUDA source. Pure Python: never imports cupy, runs without a GPU."""

from lstmgen.codegen.spec import (
    BIAS_MODES, BIAS_PARAMETERS, DTYPES, HEAD_ACTIVATIONS, HeadSpec, LSTMSpec, ModelSpec, load_spec, parse_spec,
)
from lstmgen.codegen.planner import PORTABLE_CLUSTER_BLOCKS, SM90_H200, Plan, Target, plan_layer, sized_plan
from lstmgen.codegen.render import KernelSource, render_kernel, render_layer

__all__ = [
    "BIAS_MODES", "BIAS_PARAMETERS", "DTYPES", "HEAD_ACTIVATIONS", "HeadSpec", "LSTMSpec", "ModelSpec", "load_spec", "parse_spec",
    "PORTABLE_CLUSTER_BLOCKS", "SM90_H200", "Plan", "Target", "plan_layer", "sized_plan", "KernelSource", "render_kernel",
    "render_layer",
]
