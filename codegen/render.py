"""Renders a layer's CUDA source from the Jinja templates.

The text is a pure function of (spec, target): the same inputs always give byte-identical
source, which is what lets generated/ be checked in and compared in a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import jinja2

from lstmgen.codegen.planner import SM90_H200, Plan, Target, plan_layer, sized_plan
from lstmgen.codegen.spec import LSTMSpec

# Emitted file -> (template, its kernels' entry points). "cell" holds the stepwise
# recurrence's kernels, which large batches run (Plan.stepwise_from_batch), and where the plan
# has it float64's one-kernel step (Plan.dmma_step_until_batch); "forward_wide"
# the forward kernel at the most rows its wide step stages (sized_plan), emitted only where
# the plan has a wide forward step. (The runtime compiles each batch-sliced kernel for the
# passes of rows that hold its launch's groups, from the same templates.)
KERNELS = {
    "forward": ("forward.cu.j2", ("lstm_forward_recurrence",)),
    "backward": ("backward.cu.j2", ("lstm_backward_recurrence",)),
    "cell": ("cell.cu.j2", ("lstm_forward_cell", "lstm_backward_cell")),
    "forward_wide": ("forward.cu.j2", ("lstm_forward_recurrence",)),
}


@dataclass(frozen=True)
class KernelSource:
    """One emitted CUDA file."""

    direction: str   # "forward", "backward" or "cell"
    entries: tuple[str, ...]  # names of its __global__ functions
    text: str
    plan: Plan

    def filename(self, layer_index: int) -> str:
        return f"layer{layer_index}_{self.direction}.cu"


@cache
def _environment() -> jinja2.Environment:
    folder = resources.files("lstmgen.templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_layer(spec: LSTMSpec, target: Target = SM90_H200) -> dict[str, KernelSource]:
    """Kernel sources of one layer: the forward and backward recurrences, the cells of the
    stepwise recurrence and, where the plan has one, the wide forward, keyed by direction."""
    plan = plan_layer(spec, target)
    plans = {direction: plan for direction in KERNELS if direction != "forward_wide"}
    if plan.wide_forward_step:
        plans["forward_wide"] = sized_plan(spec, plan, "forward", plan.wide_forward_step.chunk_rows)
    return {direction: render_kernel(spec, kernel_plan, direction) for direction, kernel_plan in plans.items()}


def render_kernel(spec: LSTMSpec, plan: Plan, direction: str) -> KernelSource:
    """The source of one of KERNELS' files for `plan`, a plan of `spec` (plan_layer's, or one
    of its sized_plan()s)."""
    template, entries = KERNELS[direction]
    if direction == "cell" and plan.dmma_step_until_batch:
        entries += ("lstm_forward_step",)
    text = _environment().get_template(template).render(spec=spec, plan=plan)
    return KernelSource(direction=direction, entries=entries, text=text, plan=plan)
