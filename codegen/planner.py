"""Planner: turns a layer spec and a target GPU into the launch shape of its kernels.

All arithmetic about tiles, threads and bytes lives here so the templates only print it.

Shape of the recurrence kernels (DESIGN.md section 4): a persistent cooperative grid in
which block k owns hidden units [k*U, (k+1)*U) with all four of their gates. A thread owns
one (unit, batch row) pair, so its cell state and its dh/dc stay in registers for the whole
sequence. One launch serves `batch_tile` batch rows; the runtime splits larger batches into
independent launches (rows of a batch never interact), which bounds the on-chip state.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstmgen.errors import SpecError
from lstmgen.codegen.spec import DTYPES, LSTMSpec

# Threads per block the planner aims for: enough warps to hide the latency of the h loads,
# few enough that one block per SM always fits, which a cooperative launch requires.
_TARGET_THREADS = 256


@dataclass(frozen=True)
class Target:
    """The GPU a kernel is rendered for."""

    arch: str                 # e.g. "sm_90"
    sm_count: int             # multiprocessors: one persistent block each at most
    max_smem_per_block: int   # bytes of dynamic shared memory a block may opt in to
    max_threads_per_block: int = 1024


# The H200 (and H100 SXM): what generated/ is rendered for.
SM90_H200 = Target(arch="sm_90", sm_count=132, max_smem_per_block=232448)


@dataclass(frozen=True)
class Plan:
    """Launch shape and on-chip layout of one layer's recurrence kernels."""

    target: Target
    storage_type: str        # C type of tensors in memory
    accumulate_type: str     # C type of dot products and the cell state
    units_per_block: int     # U: hidden units (each with 4 gates) a block owns
    num_blocks: int          # blocks in the cooperative grid
    batch_tile: int          # batch rows one launch handles
    threads: int             # threads per block = units_per_block * batch_tile
    weight_slice_elems: int  # 4 * U * H: the block's slice of W_hh
    weights_in_smem: bool    # slice held in shared memory, else streamed from L2
    smem_bytes: int          # dynamic shared memory per block

    def summary(self) -> str:
        where = "shared memory" if self.weights_in_smem else "global memory (L2)"
        return (f"{self.target.arch}: {self.num_blocks} blocks x {self.threads} threads, "
                f"{self.units_per_block} units/block, batch tile {self.batch_tile}, "
                f"W_hh slice in {where} ({self.smem_bytes} B smem)")


def plan_layer(spec: LSTMSpec, target: Target = SM90_H200) -> Plan:
    """Choose the launch shape of `spec`'s kernels on `target`."""
    hidden = spec.hidden_size
    units = -(-hidden // target.sm_count)
    if units > target.max_threads_per_block:
        largest = target.sm_count * target.max_threads_per_block
        raise SpecError(
            f"hidden_size {hidden} is too large for {target.arch} with {target.sm_count} SMs "
            f"({spec.where or 'layer'}): one thread per unit and block needs at most {largest} "
            f"units; lower hidden_size to {largest} or less"
        )
    num_blocks = -(-hidden // units)
    batch_tile = max(1, min(_TARGET_THREADS, target.max_threads_per_block) // units)
    types = DTYPES[spec.dtype]
    weight_slice_elems = 4 * units * hidden
    weight_bytes = weight_slice_elems * types["bytes"]
    weights_in_smem = weight_bytes <= target.max_smem_per_block
    return Plan(
        target=target,
        storage_type=types["storage"],
        accumulate_type=types["accumulate"],
        units_per_block=units,
        num_blocks=num_blocks,
        batch_tile=batch_tile,
        threads=units * batch_tile,
        weight_slice_elems=weight_slice_elems,
        weights_in_smem=weights_in_smem,
        smem_bytes=weight_bytes if weights_in_smem else 0,
    )
