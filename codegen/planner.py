"""Planner: turns a layer spec and a target GPU into the launch shape of its kernels.

All arithmetic about warps, tiles and bytes lives here so the templates only print it.

Shape of the recurrence kernels (DESIGN.md section 4): a persistent cooperative grid, one
block per SM, in which block k owns hidden units [k*U, (k+1)*U). Each step is a small
matrix product per block, out[b][o] = sum_k in[b][k] * W[o][k]: forward, `in` is h_{t-1}
and the outputs are the 4 gate rows of each owned unit (k over H); backward, `in` is
dG_{t+1} and the output is dh of each owned unit (k over the 4H gate rows, W transposed).
A warp owns one unit and up to 8 batch rows at a time: its 32 lanes split k, so each
lane's share of the weights can stay in registers for the whole sequence, and a butterfly
of shuffles sums the lanes. The block first copies `in` for a chunk of batch rows from L2
into shared memory with 16-byte loads, so every warp reads it at shared-memory speed.
Per-row state (c, dc) lives in a [B, H] buffer of the accumulation type (c_T and dc0
themselves where that is the storage type), so one launch serves any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstmgen.errors import SpecError
from lstmgen.codegen.spec import DTYPES, LSTMSpec

WARP = 32
# Batch rows a warp carries through one pass over its weights: 4 gates x 8 rows = 32
# partial sums, one per lane after the butterfly.
ROWS_PER_PASS = 8
# Warps per block the planner aims for: enough to hide shared-memory and shuffle latency,
# few enough that 255 registers per thread (the weights in registers) fit one block per SM.
_TARGET_WARPS = 8
# 32-bit registers per thread for the weight share, the 32 partial sums and a pass's 8
# inputs: what is left of 255 holds the rest. ptxas -v (tests/test_nvrtc.py) shows no spills
# for float32 and float16 up to the limit, H = 1024; float64's forward spills from H = 232,
# 24 B there and 208 B at its limit, H = 352, which the H = 256 bench cells ran well with.
_LANE_REGISTER_BUDGET = 168
# Batch rows staged in shared memory at once: more rows, fewer block-wide barriers.
_MAX_CHUNK_ROWS = 64


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
    warps: int               # warps per block: U x row groups, at most 32
    threads: int             # threads per block = 32 * warps
    weights_in: str          # "registers", "shared" (block slice) or "global" (streamed from L2)
    weight_smem_bytes: int   # the block's 4*U*H slice when weights_in == "shared", else 0
    rows_per_pass: int       # batch rows a warp carries through one pass over its weights
    forward_chunk_rows: int  # batch rows of h_{t-1} staged in shared memory at once
    backward_chunk_rows: int # batch rows of dG_{t+1} staged at once
    smem_bytes: int          # dynamic shared memory per block (weights + staging)

    def summary(self) -> str:
        where = {"registers": "registers", "shared": "shared memory",
                 "global": "global memory (L2)"}[self.weights_in]
        return (f"{self.target.arch}: {self.num_blocks} blocks x {self.threads} threads, "
                f"{self.units_per_block} units/block, W_hh slice in {where}, staging "
                f"{self.forward_chunk_rows} rows forward / {self.backward_chunk_rows} backward "
                f"({self.smem_bytes} B smem)")


def plan_layer(spec: LSTMSpec, target: Target = SM90_H200) -> Plan:
    """Choose the launch shape of `spec`'s kernels on `target`."""
    hidden = spec.hidden_size
    types = DTYPES[spec.dtype]
    element = types["bytes"]
    units = -(-hidden // target.sm_count)
    num_blocks = -(-hidden // units)
    max_warps = target.max_threads_per_block // WARP
    # Warps beyond one per unit take other batch rows; past 32 units a warp takes several units.
    warps = min(max_warps, max(units, _TARGET_WARPS // units * units))
    threads = warps * WARP

    # Weights in registers: each warp keeps one unit for the whole launch (at most
    # _TARGET_WARPS units), and a lane's share of the 4*H*U slice fits the register budget.
    lane_weights = max(4 * -(-hidden // WARP), -(-4 * hidden // WARP))
    register_words = (lane_weights + 5 * ROWS_PER_PASS) * types["accumulate_bytes"] // 4
    forward_row, backward_row = hidden * element, 4 * hidden * element
    slice_bytes = _round16(4 * units * hidden * element)
    if warps % units == 0 and units <= _TARGET_WARPS and register_words <= _LANE_REGISTER_BUDGET:
        weights_in, weight_smem = "registers", 0
    elif slice_bytes + backward_row <= target.max_smem_per_block:
        weights_in, weight_smem = "shared", slice_bytes
    else:
        weights_in, weight_smem = "global", 0
    staging = target.max_smem_per_block - weight_smem
    if backward_row > staging:
        largest = target.max_smem_per_block // (4 * element)
        raise SpecError(
            f"hidden_size {hidden} is too large for {target.arch} ({spec.where or 'layer'}): the "
            f"backward pass stages one batch row of the 4*hidden_size gate gradients "
            f"({backward_row} B) in shared memory, which holds {target.max_smem_per_block} B; "
            f"lower hidden_size to {largest} or less"
            + (", or use float16" if element > 2 else "")
        )
    forward_chunk = _chunk_rows(staging // forward_row)
    backward_chunk = _chunk_rows(staging // backward_row)
    return Plan(
        target=target,
        storage_type=types["storage"],
        accumulate_type=types["accumulate"],
        units_per_block=units,
        num_blocks=num_blocks,
        warps=warps,
        threads=threads,
        weights_in=weights_in,
        weight_smem_bytes=weight_smem,
        rows_per_pass=ROWS_PER_PASS,
        forward_chunk_rows=forward_chunk,
        backward_chunk_rows=backward_chunk,
        smem_bytes=weight_smem + _round16(max(forward_chunk * forward_row, backward_chunk * backward_row)),
    )


def _chunk_rows(fitting: int) -> int:
    """Rows per staged chunk: a whole number of warp passes when more than one pass fits,
    else a power of two, which one pass covers (7 rows would take passes of 4, 2 and 1)."""
    rows = min(fitting, _MAX_CHUNK_ROWS)
    if rows >= ROWS_PER_PASS:
        return rows - rows % ROWS_PER_PASS
    return 1 << (rows.bit_length() - 1)


def _round16(size: int) -> int:
    """Bytes rounded up to 16, so what follows in shared memory is aligned for 16-byte copies."""
    return -(-size // 16) * 16
