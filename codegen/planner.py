"""Planner: turns a layer spec and a target GPU into the launch shape of its kernels.

All arithmetic about warps, tiles and bytes lives here so the templates only print it.

Shape of the recurrence kernels (DESIGN.md section 4; batch-sliced ones below): a
persistent cooperative grid, one block per SM, in which block k owns hidden units [k*U, (k+1)*U). Each step is a small
matrix product per block, out[b][o] = sum_k in[b][k] * W[o][k]: forward, `in` is h_{t-1}
and the outputs are the 4 gate rows of each owned unit (k over H); backward, `in` is
dG_{t+1} and the output is dh of each owned unit (k over the 4H gate rows, W transposed).
A warp owns one unit and up to 8 batch rows at a time: its 32 lanes split k, so each
lane's share of the weights can stay in registers for the whole sequence (else the block's
slice in shared memory; where neither holds it, each row is split by k between the two and
L2: WeightSplit), and a butterfly of shuffles sums the lanes. The block first copies `in` for a chunk of batch rows from L2
into shared memory with 16-byte loads, so every warp reads it at shared-memory speed.
Per-row state (c, dc) lives in a [B, H] buffer of the accumulation type (c_T and dc0
themselves where that is the storage type), so one launch serves any batch size; a thread
that finishes the same (unit, row) at every step carries it in registers instead.

16-bit layers, and float32 ones that allow TF32, run the same step on tensor cores where
their fragments fit (TensorCoreStep): the block's weights are the A operand of mma.sync,
held in registers, the staged rows its B operand, 8 batch rows per instruction.

Batch-sliced kernels: where one block holds all of W_hh as tensor-core fragments, in
registers and up to 64 KiB of shared memory (H <= 128 in 16 bits, 64 in TF32), each block
owns every unit and its own groups of batch rows,
so no step waits for another block: the grid barrier becomes a block barrier, and h_t (dG_t
backward) goes from the epilogue straight into the staged rows of the next step, never
through L2. Where that block's products would be long, or it is too small, a thread-block
cluster of up to 8 blocks takes its place (to H = 256; 16 blocks to H = 512 in 16 bits where
the GPU allows that many): the cluster owns every unit and its
groups of rows, each block a slice of the units as in the cooperative grid, and each block
writes h_t (dG_t) into the staged rows of every block of its cluster through distributed
shared memory, then meets them at the cluster's barrier (0.19 us to the grid's 1 us). The
launch sizes the grid and the rows of a group by the batch (Plan.group_rows, Plan.blocks),
and runs each direction's kernel compiled for the fewest whole passes of rows that hold them
(Plan.staged_rows, sized_plan): up to as many as the backward's rows of 4H leave room for in
both directions, and for the forward up to its wide step's (Plan.wide_forward_step), so that
batches the narrower step would take in more than one turn of the GPU's clusters take one.
Strict float32 (no TF32) runs the same batch-sliced kernels on tensor cores as three TF32
products of each tile's split halves (mma_type "tf32x3"), to H = 256 on the H200 in clusters
of up to 16 blocks; before sm_80, and float64 everywhere, on CUDA cores (FmaStep) where the
cluster's registers hold W_hh.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lstmgen.errors import SpecError
from lstmgen.codegen.spec import DTYPES, LSTMSpec

WARP = 32
# Consecutive float32 k a lane of the warp-per-unit FMA kernels takes at a time where its
# weights allow (WeightSplit.lane_k): one 16-byte load of a staged row's inputs.
_LANE_K_RUN = 4
# Batch rows a warp carries through one pass over its weights: 4 gates x 8 rows = 32
# partial sums, one per lane after the butterfly.
ROWS_PER_PASS = 8
# Warps per block the planner aims for: enough to hide shared-memory and shuffle latency,
# few enough that 255 registers per thread (the weights in registers) fit one block per SM.
_TARGET_WARPS = 8
# 32-bit registers per thread for the weight share, the 32 partial sums and a pass's 8
# inputs: what is left of 255 holds the rest. ptxas -v (tests/test_nvrtc.py) shows no spills
# for float32 up to the limit, H = 1024 (16-bit layers there run on tensor cores, except on
# GPUs without them); float64's forward spills from H = 232,
# 24 B there and 208 B at its limit, H = 352, which the H = 256 bench cells ran well with.
# Split plans (WeightSplit) fill it too: float64 H = 1024's forward spills 28 B, and ran
# 1.7x faster at B = 1 than with all of W_hh in L2 (bench/NOTES.md v11).
_LANE_REGISTER_BUDGET = 168
# Storage of at least this many bytes an element splits a slice that is too large for
# registers or shared memory between them and L2: with 16-bit storage (the FMA fallback,
# past H = 1848 on the H200) ptxas spills the backward's split product by kilobytes
# (bfloat16 H = 2000: 16 B with all of W_hh in L2, 1952), so there W_hh stays in L2.
_SPLIT_MIN_ELEMENT_BYTES = 4
# Batch rows staged in shared memory at once: more rows, fewer block-wide barriers.
_MAX_CHUNK_ROWS = 64
# What a backward warp-per-unit pass needs from global memory for each of its (unit, row)
# pairs besides the staged rows (the gates, c_t, c_{t-1}, dy and dh_T, and dL/dc) is this
# many elements of storage and one of the accumulation type. Where the pass reads part of
# W_hh^T from L2, cp.async copies them into a slot of shared memory a row of the pass while
# the dot products run (Plan.pass_inputs_bytes): from sm_80 on (cp.async), and for storage
# of at least 4 bytes, the least that cp.async copies (a 16-bit element's word could reach
# past the end of its array).
_PASS_INPUT_ELEMENTS = 8
_PASS_INPUTS_MIN_ELEMENT_BYTES = 4

# Tensor cores: mma.sync multiplies a 16 x K tile of weights by a K x 8 tile of staged
# inputs (8 batch rows) into float32; K is 16 for 16-bit inputs (m16n8k16) and 8 for TF32
# (m16n8k8), which float32 layers use when their spec allows TF32.
_MMA_M, _MMA_N = 16, 8
_MMA_K = {"f16": 16, "bf16": 16, "tf32": 8, "tf32x3": 8}
# Strict float32 on tensor cores ("tf32x3"): each float32 x splits into x_hi = tf32(x) and
# x_lo = tf32(x - x_hi), and a product a b into the three TF32 products a_lo b_hi + a_hi b_lo
# + a_hi b_hi, summed in float32 (the a_lo b_lo dropped is 2^-22 of a b). The result keeps
# float32's accuracy (CUTLASS's "3xTF32"); a tile of weights takes both halves: twice the
# registers or shared memory of a TF32 one. On the H200, batch-sliced, against the FMA step
# (bench/NOTES.md v19): forward 0.78x the time at H = 128 and 256 from B = 8, 1.1x at B = 1.
_SPLIT_MMA_TYPES = {"tf32x3": 2}
_MMA_TYPES = {"__half": "f16", "__nv_bfloat16": "bf16"}
_MMA_WARPS = 8
# Fragments past the register budget go to shared memory, up to this much, which every warp
# reads once per 8 staged rows (64 KiB at 128 B a clock is about 0.26 us): so batch-sliced
# blocks keep all of W_hh on chip, and TF32 layers their slices up to H = 1056.
_SHARED_FRAGMENT_BYTES = 64 * 1024
# Batch-sliced blocks take at most this many 16 x k tiles a warp, registers and shared memory together: up to
# H = 128 in 16 bits in one block (GPUs without clusters). From H = 116 the forward kernel
# (4 m tiles of 8 k tiles a warp) spills while it loads its fragments at the start
# (tests/test_nvrtc.py: the SASS has every spill store before the first block barrier and
# reads each spilled value once after it, none in the step loop). Past 32, the step itself
# would be short of registers.
_SLICED_TILES_PER_WARP = 32
# Blocks in a batch-sliced cluster, tried in this order: up to 8, the size every GPU with
# clusters (sm_90 on) must be able to schedule; 16 where the target allows more (H100 and
# H200, with the kernel's non-portable cluster size attribute), only where 8 are too few.
_CLUSTER_SIZES = (1, 2, 4, 8, 16)
PORTABLE_CLUSTER_BLOCKS = 8
# At small batches a batch-sliced step is bound by its critical path, and the products on
# it are each warp's chain of mma.sync (its m tiles times its k tiles, per 8 staged rows).
# Measured on the H200, forward at B = 8 (bench/NOTES.md v5, same run): float16 H = 128
# took 2.42 us a step in one block (32 tiles a warp), 2.10 in clusters of 4 (8) and 1.64 in
# clusters of 8 (4); TF32 H = 128 2.07 in clusters of 4 and 1.78 in clusters of 8; but
# bfloat16 H = 64, 8 tiles a warp in one block, took 1.36 there and 2.05 in clusters of 2:
# with a chain this short, a cluster's barrier and its stores to other blocks cost more
# than they save.
_SHORT_CHAIN = 8
# (unit, row) pairs a thread of a batch-sliced block finishes per step, at most: each holds
# its Gx and cell (forward) or gates, cells and gradients (backward) in registers meanwhile.
_SLICED_ITEMS_PER_THREAD = 4
# The wide forward step's items a thread (Plan.wide_forward_step), at most: at 4 it lost to
# the narrower step even at B = 256 (float16 H = 512: 32 rows a group in one turn took 11.2
# us a step, 16 rows in three turns 9.6; bench/NOTES.md v14).
_WIDE_ITEMS_PER_THREAD = 3
# 32-bit registers per lane for the weight fragments, kept for the whole launch. ptxas
# spends about one more per fragment on staged inputs it loads ahead, and the rest of the
# step needs about 60; past 72 the cooperative backward kernel spills (tests/test_nvrtc.py
# checks the limits: 16-bit layers up to 8 units per block, H = 1056 on the H200; TF32 to
# H = 576).
_MMA_FRAGMENT_REGISTERS = 72
# The batch-sliced forward step keeps its k tiles in registers, 4 a tile (8 for 3xTF32's two
# fragments): its step has fewer live values than the backward's, and the k tiles it read from
# shared memory took a third of the float16 H = 512 8-row step (bench/NOTES.md v17 5.). NVRTC's
# ptxas spills at most 80 bytes on the H200 (tests/test_nvrtc.py; nvcc's SASS of float16
# H = 512 has them all in the setup, before the step loop). Only 3xTF32 in clusters of 8 at
# H = 136 to 160 (17-20 k tiles a warp) keeps 16 in registers and the rest in shared memory;
# its forward of 32 or 40 rows spills up to 140 bytes, that of 8 rows none, which ran
# 1.40-1.65 us a step at B <= 8, between H = 128's and H = 192's (bench/NOTES.md v20).
_SLICED_FORWARD_FRAGMENT_REGISTERS = 4 * _SLICED_TILES_PER_WARP
# The batch-sliced backward step has fewer live values than the cooperative one, which
# spills at 96 (TF32 H = 1056: 148 bytes): at 96 NVRTC's ptxas spills none of the H200's
# sliced backward kernels (16-bit H = 512 keeps 24 of its 32 k tiles a warp, TF32 H = 256
# too), and 8 bytes in the A100's one block of 16-bit H = 128.
_SLICED_BACKWARD_FRAGMENT_REGISTERS = 96
# float64 (and strict float32 before sm_80, in one block) run batch-sliced on CUDA cores where
# their clusters' registers hold W_hh (FmaStep): up to this many weights a thread, in blocks of 256 threads.
# ptxas -v (tests/test_nvrtc.py): where the weights take more than 64 registers (float64:
# 128 of 255), no spills with one (unit, row) item a thread, or with the two that one pass
# of 8 rows gives one A100 block at float64 H = 64; but float64 H = 256's wide forward
# (32 rows) spilled 16 B with 2 items, and that A100 block with 4. (The cap binds only wide
# forward steps: the backward's staging holds every narrow plan below it.) With 128 float32
# weights H = 192 spills. The caps stay multiples of 8 rows, as measured; the kernels under
# them stage whole passes of 4 (_FMA_ROWS_AT_ONCE), or one pass of fewer (_FMA_ONE_PASS_ROWS).
_FMA_SLICED_WEIGHTS = 64
_FMA_HEAVY_WEIGHT_BYTES = 64 * 4
_FMA_HEAVY_ITEMS_PER_THREAD = 1
_FMA_THREADS = 256
# Parts of K, at most: a (unit, row) adds up one partial sum per part after the product.
_FMA_MAX_K_SPLIT = 16
# Staged rows are read 16 bytes at a time: parts of K are whole 16 bytes.
_FMA_VECTOR_BYTES = 16
# Staged rows a thread multiplies at once: as many independent chains of FMA.
_FMA_ROWS_AT_ONCE = 4
# A group of at most this many rows goes through in one pass of its own size instead
# (Plan.one_pass_rows; its kernels are compiled for its rows, Plan.pass_rows): a batch spreads over
# the clusters a row at a time, and no rows are multiplied only to be dropped. Measured on the
# H200, float64 (bench/NOTES.md v24): forward 0.69-0.79 of the time of groups rounded up to
# passes of 4 at B = 1 and 8 (H = 128, 256), 0.84 at H = 128 B = 64 (groups of 5, not 8); a
# pass of 8 rows took 0.99 of two passes of 4 at H = 128. Where a thread keeps more than
# _FMA_HEAVY_WEIGHT_BYTES of weights (float64 from H = 136), at most 5: at H = 256 (64 weights,
# 128 registers) ptxas spills the forward from 6 rows a pass (8 bytes; 12 at 8 rows, which
# took 1.02 of two passes of 4) and none at 5; at H = 192 none at 8, unmeasured.
_FMA_ONE_PASS_ROWS = 8
_FMA_HEAVY_ONE_PASS_ROWS = 5
# A cluster's blocks send each other the staged rows by st.async, which counts the bytes on
# an mbarrier per staged buffer in the receiving block: two of 8 bytes, last in shared memory.
_EXCHANGE_BARRIER_BYTES = 16
# The stepwise recurrence (_stepwise_from_batch) where python -m lstmgen.bench.crossover
# measured it faster than the persistent kernels on the H200 (bench/NOTES.md v8): float64
# from batch x H^2 = 4M (B = 64 at H = 256, 32 from H = 512; from v22 also below H = 256 where
# the one-kernel step below takes that batch: B = 256 at H = 128, where it and the backward in
# parts took 0.93 of the persistent kernels' time forward and 0.76 in training; larger batches
# there run the cuBLAS GEMM, which at B = 256 took 1.09 and 0.80 of it), the other dtypes from
# batch x H = 64K and H = 512 (B = 128 at H = 512, 64 at H = 1024; at H = 256 the
# clusters keep W_hh on chip: at B = 256 the two kinds tie there in float32, and the
# persistent kernels win in 16 bits). At least 32 rows: fewer leave cuBLAS's tiles idle.
# Tensor-core clusters (16 bits at H = 512) run only their backward stepwise (plan_layer).
_STEPWISE_FLOAT64_WORK = 4 * 2**20
_STEPWISE_FLOAT64_MIN_HIDDEN = 128       # below 256 only where the one-kernel step takes the batch
_STEPWISE_FLOAT64_GEMM_MIN_HIDDEN = 256
_STEPWISE_ROW_UNITS = 64 * 1024
_STEPWISE_MIN_HIDDEN = 512
_STEPWISE_MIN_BATCH = 32
# float32's backward (strict or TF32) goes stepwise at fewer rows than its forward: there
# the persistent backward is the slower half (crossover, bench/NOTES.md v9: stepwise faster
# backward from B = 32 at H = 512 and 1024, where its forward still loses, and at B = 256
# for H = 256, where the forward ties).
_STEPWISE_BACKWARD_FLOAT32_ROW_UNITS = 16 * 1024
_STEPWISE_BACKWARD_FLOAT32_NARROW = (256, 64 * 1024)  # (from H, batch x H) below _STEPWISE_MIN_HIDDEN
# Up to this batch x H^2 float64's one-kernel step (DMMA_STEP: its blocks read W_hh and h_{t-1}
# from L2, 16 rows x 8 units a block) beat cuBLAS's GEMM and the cell kernel on the H200
# (bench/NOTES.md v22): 0.86-0.92 of their time forward at 4M (H = 128 B = 256, H = 256 B = 64,
# H = 512 B = 16), 0.73-0.85 at 1-2M; 1.14-1.37 at 8M (H = 512 B = 32, H = 1024 B = 8), 1.44-2.27
# from 16M.
_DMMA_STEP_MAX_WORK = 4 * 2**20
# The cooperative forward kernels send h_t as words tagged with t, which readers wait on
# instead of a grid barrier (Plan.tagged_exchange_batch). A 16-bit value and its tag make a
# word twice the element's size; float32 and float64 carry the tag in h's last bit, words the
# element's size (templates/_exchange.j2). Up to 32 KiB of words a block copies a step (one
# round of loads at 256 threads), the tagged words won every A/B against the barrier in one
# process: 16-bit and float32's earlier 8-byte words (16 KiB more than the barrier's copy,
# bench/NOTES.md v10: 0.2-0.7 us a step; at 32 KiB more they went from 0.7 us faster to 0.4
# slower) and words in h's last bit (v27). Past the limit the kernel crosses the grid barrier
# and copies h_t itself. Rows whose words do not fill 16-byte vectors are not sent so: word
# by word, each load waited a trip through L2 of its own.
_TAGGED_WORD_BYTES = 32 * 1024
_TAGGED_VECTOR_BYTES = 16
# As the FMA path: a warp runs the chunk's n tiles one after another, so more rows cost no
# registers, only (unit, row) pairs per thread in the epilogue.
_MMA_MAX_CHUNK_ROWS = _MAX_CHUNK_ROWS


@dataclass(frozen=True)
class Target:
    """The GPU a kernel is rendered for."""

    arch: str                 # e.g. "sm_90"
    sm_count: int             # multiprocessors: one persistent block each at most
    max_smem_per_block: int   # bytes of dynamic shared memory a block may opt in to
    max_threads_per_block: int = 1024
    max_cluster_blocks: int = 8  # blocks a thread-block cluster may hold from sm_90 on (8: the
                                 # portable size; 1: no clusters); below sm_90 no clusters


# The H200 (and H100 SXM): what generated/ is rendered for.
SM90_H200 = Target(arch="sm_90", sm_count=132, max_smem_per_block=232448, max_cluster_blocks=16)


@dataclass(frozen=True)
class TensorCoreStep:
    """One direction's step on tensor cores: out[b][m] = sum_k in[b][k] * A[m][k], where A
    is the block's weights (forward: the 4 gate rows of each owned unit, m = 4 * unit + gate,
    k over H; backward: W_hh's column of each owned unit, m = unit, k over 4H), kept in
    registers as mma.sync fragments for the whole launch. The warps split A into 16-row
    tiles and each tile's K among `k_split` warps; every warp runs all staged batch rows
    (8 per tile) through its fragments and leaves float32 partial sums in shared memory,
    which the threads that finish a (unit, row) add up."""

    rows: int              # M: weight rows the block multiplies
    m_tiles: int           # 16-row tiles of them (zero-padded)
    m_tiles_per_warp: int  # consecutive m tiles a warp multiplies: batch-sliced, more than 1 where the
                           # block has more m tiles than warps; cooperative, 1, or both of 2 (_cooperative_step)
    k_split: int           # warps per group of m tiles; warp w takes the m tiles of group
                           # w % (m_tiles / m_tiles_per_warp) and k tiles w // that + j * k_split
    k_tiles: int           # tiles of K, 16 wide (8 for TF32), zero-padded
    k_tiles_per_warp: int  # fragments a warp keeps per m tile: 4 registers each (2 when rows <= 8)
    k_tiles_in_registers: int  # the first of them, in registers; the rest in shared memory
                               # after the partial sums, 16 bytes a lane each (8 when rows <= 8)
    chunk_rows: int        # batch rows staged at once, a multiple of 8 (whole n tiles)
    stage_stride: int      # elements from one staged row to the next: K padded to every
                           # warp's k tiles, plus 16 bytes, so that a fragment's 8 rows start
                           # in 8 different bank quads
    partial_stride: int    # floats from one row's partial sums to the next: rows padded, plus 4
    staged_bytes: int      # the staged rows; the partial sums follow them
    smem_bytes: int        # staged rows + k_split * chunk_rows * partial_stride floats
                           # + the fragments kept in shared memory
                           # (+ in clusters, the staged buffers' mbarriers, last)
    items_per_thread: int  # (unit, batch row) pairs of a chunk that each thread finishes
    stage_buffers: int     # 2 in clusters: blocks write step t's rows while others still read t - 1's
    async_exchange: bool = False  # clusters send the staged rows by st.async (_sends_by_st_async)


@dataclass(frozen=True)
class FmaStep:
    """One direction's batch-sliced step on CUDA cores (strict float32, float64): the same
    out[b][m] = sum_k in[b][k] * A[m][k] over staged rows as TensorCoreStep, into partial
    sums laid out the same way (in the accumulation type), by FMA. Thread (m, part) keeps row
    m's weights over part `part` of K in registers for the whole launch; m_threads
    consecutive threads share a part, so that a warp's loads of a staged row are one
    broadcast, and 4 staged rows go through at once, 16 bytes of each at a time."""

    rows: int              # M: weight rows the block multiplies
    m_threads: int         # threads per part of K: M rounded up to a power of two
    k_split: int           # parts of K: the block's threads / m_threads
    k_per_thread: int      # weights a thread keeps: K / k_split, rounded up to whole 16 bytes
    chunk_rows: int        # batch rows staged at once, whole passes of 4, or one pass of up to
                           # Plan.one_pass_rows
    stage_stride: int      # elements from one staged row to the next: every part, plus 16 bytes
    partial_stride: int    # elements from one row's partial sums to the next: m_threads, plus 4
    staged_bytes: int      # the staged rows; the partial sums follow them
    smem_bytes: int        # staged rows + k_split * chunk_rows * partial_stride elements
                           # (+ in clusters, the staged buffers' mbarriers, last)
    items_per_thread: int  # (unit, batch row) pairs of a chunk that each thread finishes
    stage_buffers: int     # 2 in clusters, as TensorCoreStep
    async_exchange: bool = False  # as TensorCoreStep


# Either kind of staged step: what the exchange and the epilogue need is common to both.
Step = TensorCoreStep | FmaStep
# A staged plan's steps: forward, backward, and the wide forward's (Plan.wide_forward_step) or None.
Steps = tuple[Step, Step, Step | None]


@dataclass(frozen=True)
class WeightSplit:
    """Where a warp-per-unit FMA kernel keeps one direction's weight rows (k_len long: H
    forward, 4H backward), by k: below in_registers in its lanes' registers (lane l keeps
    k = l + 32 j, or runs of lane_k consecutive k), then below on_chip in the block's shared
    memory, and past that in L2, read again on every pass. Both bounds are multiples of 32
    or k_len itself; with runs (lane_k > 1) every weight is in registers."""

    in_registers: int
    on_chip: int
    k_len: int
    shared_bytes: int  # the block's rows [U][outputs][on_chip - in_registers], 16-byte aligned; the
                       # staged rows follow them in shared memory
    lane_k: int = 1    # consecutive k a lane keeps and loads at a time (_lane_k)

    @property
    def streams(self) -> bool:
        """Part of each row is read from L2 on every pass."""
        return self.on_chip < self.k_len

    def describe(self) -> str:
        parts = [("registers", self.in_registers), ("shared memory", self.on_chip - self.in_registers),
                 ("L2", self.k_len - self.on_chip)]
        return " / ".join(f"{k} in {place}" for place, k in parts if k) + f" of {self.k_len}"


@dataclass(frozen=True)
class DmmaStep:
    """The block of float64's one-kernel step (templates/cell.cu.j2 lstm_forward_step):
    `row_tiles` 8-row m tiles of batch rows and `units` units (an n tile of 8 per gate),
    their products over H split among `k_warps` warps."""

    row_tiles: int
    units: int
    k_warps: int

    @property
    def rows(self) -> int:
        return 8 * self.row_tiles

    @property
    def threads(self) -> int:
        return WARP * self.k_warps


DMMA_STEP = DmmaStep(row_tiles=2, units=8, k_warps=8)


@dataclass(frozen=True)
class Plan:
    """Launch shape and on-chip layout of one layer's recurrence kernels."""

    target: Target
    storage_type: str        # C type of tensors in memory
    accumulate_type: str     # C type of dot products and the cell state
    units_per_block: int     # U: hidden units (each with 4 gates) a block owns
    num_blocks: int          # blocks in the cooperative grid (batch-sliced: at most; see blocks())
    warps: int               # warps per block: FMA, U x row groups, at most 32; tensor cores and
                             # batch-sliced FMA, 8
    threads: int             # threads per block = 32 * warps
    weights_in: str          # "registers", "shared" (block slice), "split" (registers and shared
                             # memory first, the rest of each row from L2) or "global" (all from L2)
    rows_per_pass: int       # batch rows a warp carries through one pass over its weights
                             # (FMA; on tensor cores, the 8 of an n tile; batch-sliced FMA,
                             # the rows a thread multiplies at once)
    forward_chunk_rows: int  # batch rows of h_{t-1} staged in shared memory at once
    backward_chunk_rows: int # batch rows of dG_{t+1} staged at once
    smem_bytes: int          # dynamic shared memory per block (weights + staging)
    math: str = "fma"        # "mma": tensor cores (16-bit storage, TF32, batch-sliced strict float32);
                             # "fma": CUDA cores (a warp per unit, or batch-sliced FmaStep)
    mma_type: str = ""       # the products when math == "mma": mma.sync's input type ("f16", "bf16",
                             # "tf32"), or "tf32x3", strict float32 as three TF32 products
    forward_step: Step | None = None   # the staged step (tensor cores, or batch-sliced FMA);
    backward_step: Step | None = None  # None: the warp-per-unit FMA kernels
    batch_sliced: bool = False  # each cluster of blocks owns every unit and groups of batch rows
    cluster_blocks: int = 1     # blocks of a batch-sliced cluster, each owning units_per_block units
    stepwise_from_batch: int = 0  # batches of at least this many rows run the stepwise recurrence
                                  # (a cuBLAS GEMM and the cell kernels a step); 0: never
    stepwise_backward_from_batch: int = 0  # the same for the backward recurrence
    dmma_step_until_batch: int = 0  # stepwise forward batches up to this many rows run a step as one
                                    # kernel on the FP64 tensor cores (_dmma_step_until_batch), not a
                                    # cuBLAS GEMM and a cell kernel; 0: never
    tagged_exchange_batch: int = 0  # forward batches up to this many rows send h_t as tagged
                                    # words instead of crossing a grid barrier; 0: never
    forward_weights: WeightSplit | None = None   # where the warp-per-unit FMA kernels keep
    backward_weights: WeightSplit | None = None  # their weights; None for staged steps
    wide_forward_step: Step | None = None  # batch-sliced: the forward step at the most rows it stages,
                                           # past what the backward leaves room for (staged_rows);
                                           # None where it would stage no more
    one_pass_rows: int = 0  # batch-sliced FMA: the kernels for groups of up to this many rows
                            # are compiled for them, one pass of their own (pass_rows); 0: none
                            # (tensor cores: passes are n tiles)
    pass_inputs_bytes: int = 0  # warp-per-unit FMA whose backward reads W_hh^T partly from L2: the
                                # slots, first in its shared memory, into which each backward pass
                                # copies what its rows need from global memory; 0: registers

    @property
    def mma_input_type(self) -> str:
        """The PTX type of mma.sync's inputs ("tf32" for both TF32 kinds of products)."""
        return "tf32" if self.mma_type in _SPLIT_MMA_TYPES else self.mma_type

    @property
    def activations(self) -> str:
        """How the recurrence kernels compute sigmoid and tanh: "hardware" (tanh.approx, about
        2^-11 off) where the products round their inputs to an 11-bit significand (16-bit
        storage, TF32); "fast" where the kernels otherwise accumulate in float32 (strict
        float32, and 16-bit storage on the FMA kernels): from __expf and __fdividef, a few
        1e-7 off at most, absolutely; "exact", the math library's, for float64."""
        if self.math == "mma" and self.mma_type not in _SPLIT_MMA_TYPES:
            return "hardware"
        return "fast" if self.accumulate_type == "float" else "exact"

    @property
    def tf32x3_gemms(self) -> bool:
        """Whether the stepwise forward's step GEMMs run strict float32 as three TF32 products
        on cuBLAS's tensor cores (runtime/tf32_split.py), and so its cell kernel splits h_t:
        strict float32 (storage float32, products not TF32) on a GPU with TF32, sm_80 on."""
        return self.storage_type == "float" and self.mma_type != "tf32" and _arch_number(self.target) >= 80

    @property
    def dmma_step(self) -> DmmaStep:
        """The block of float64's one-kernel step, where dmma_step_until_batch is nonzero."""
        return DMMA_STEP

    @property
    def fragment_parts(self) -> int:
        """Fragments per weight tile: 2 where float32 splits into TF32 halves, else 1."""
        return _SPLIT_MMA_TYPES.get(self.mma_type, 1)

    @property
    def non_portable_cluster(self) -> bool:
        """Clusters past the portable size, which launch only where the kernel allows them
        (CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED) and the GPU has them."""
        return self.cluster_blocks > PORTABLE_CLUSTER_BLOCKS

    @property
    def backward_streams_weights(self) -> bool:
        """The backward kernel reads part of W_hh from L2 on every pass: as W_hh^T [H, 4H],
        so that the lanes gathering one unit's dh read consecutive gate rows."""
        return bool(self.backward_weights and self.backward_weights.streams)

    @property
    def tagged_exchange(self) -> bool:
        """The forward kernel can hand h_t to step t + 1 as words tagged with t, which each
        block waits on as it copies them, instead of crossing a grid barrier every step: it
        takes a buffer of [2, B, H] such words last, or a null pointer for the barrier (the
        layer passes one up to tagged_exchange_batch rows)."""
        return self.tagged_exchange_batch > 0

    def staged_rows(self, direction: str, batch: int, clusters: int | None = None) -> int:
        """The rows `direction`'s batch-sliced kernel for `batch` rows is compiled for (sized_plan):
        the fewest whole passes (n tiles of 8 on tensor cores, 4 rows on FMA) that hold the rows
        of its groups, or on FMA up to one_pass_rows rows as they are, one pass of their own; at
        most what the direction stages (the forward: its wide step's rows, where it has one, so
        that a batch the narrow step would take in more than one turn takes one)."""
        most = self.backward_chunk_rows if direction == "backward" else (self.wide_forward_step or self.forward_step).chunk_rows
        rows = self._spread(batch, clusters)
        pass_rows = self.pass_rows(rows)
        return min(most, -(-rows // pass_rows) * pass_rows)

    def pass_rows(self, rows: int) -> int:
        """Rows of a pass of the kernel for groups of `rows` rows: all of them up to
        one_pass_rows, else rows_per_pass."""
        return rows if rows <= self.one_pass_rows else self.rows_per_pass

    def _running(self, clusters: int | None) -> int:
        """`clusters`, or by default as many as the plan's blocks make."""
        return clusters or self.num_blocks // self.cluster_blocks

    def _spread(self, batch: int, clusters: int | None) -> int:
        """The fewest rows a group that spread `batch` over the running clusters."""
        return -(-batch // self._running(clusters))

    def group_rows(self, batch: int, clusters: int | None = None) -> int:
        """Batch rows of a batch-sliced group: as few as spread the batch over the `clusters` the
        GPU runs at once (default num_blocks / cluster_blocks), at most chunk_rows; the kernel
        multiplies its passes in full (staged_rows) and finishes only the group's rows. Fewer
        rows a group, fewer (unit, row) items a step for each cluster to finish and send: on
        tensor cores groups of 2 rows (not n tiles of 8) took 0.69 of the forward's time at
        float16 H = 512 B = 8 in four clusters, not one (bench/NOTES.md v24)."""
        return min(self.forward_chunk_rows, self._spread(batch, clusters))

    def blocks(self, batch: int, clusters: int | None = None) -> int:
        """Blocks to launch for `batch` rows: num_blocks, or for batch-sliced kernels a
        cluster per group of rows, up to `clusters` of them (a cluster then takes several
        groups in turn)."""
        if not self.batch_sliced:
            return self.num_blocks
        clusters = self._running(clusters)
        groups = -(-batch // self.group_rows(batch, clusters))
        return min(clusters, groups) * self.cluster_blocks

    def summary(self) -> str:
        if self.weights_in == "split":
            where = self._split_summary()
        else:
            where = {"registers": "registers", "shared": "shared memory", "global": "global memory (L2)"}[self.weights_in]
        if any(isinstance(step, TensorCoreStep) and step.k_tiles_in_registers < step.k_tiles_per_warp
               for step in (self.forward_step, self.backward_step)):
            where = "registers and shared memory"
        how = {"mma": " as mma.sync fragments", "fma": " for FMA" if self.batch_sliced else ""}[self.math]
        runs = [name for name, split in (("forward", self.forward_weights), ("backward", self.backward_weights))
                if split and split.lane_k > 1]
        if runs:
            how += f", {' and '.join(runs)} in runs of {_LANE_K_RUN} k a lane"
        if self.fragment_parts > 1:
            how += " (3xTF32: hi and lo TF32 fragments)"
        sent = [name for name, step in (("forward", self.forward_step), ("backward", self.backward_step))
                if step and step.async_exchange]
        if sent:
            how += f", {' and '.join(sent)} rows sent by st.async"
        if self.tagged_exchange:
            how += f", forward h_t sent as words tagged with t up to B = {self.tagged_exchange_batch}"
        if self.batch_sliced and self.cluster_blocks > 1:
            blocks = (f"up to {self.num_blocks // self.cluster_blocks} clusters of {self.cluster_blocks} "
                      f"blocks of up to {self.forward_chunk_rows} batch rows")
        elif self.batch_sliced:
            blocks = f"up to {self.num_blocks} blocks of up to {self.forward_chunk_rows} batch rows"
        else:
            blocks = f"{self.num_blocks} blocks"
        wide = (f" (to {self.wide_forward_step.chunk_rows} where a batch would take the clusters more than one turn)"
                if self.wide_forward_step else "")
        return (f"{self.target.arch}: {blocks} x {self.threads} threads, "
                f"{self.units_per_block} units/block, W_hh slice in {where}{how}, staging "
                f"{self.forward_chunk_rows} rows forward{wide} / {self.backward_chunk_rows} backward "
                f"({self.smem_bytes} B smem){self.stepwise_summary()}")

    def _split_summary(self) -> str:
        splits = (self.forward_weights, self.backward_weights)
        places = [place for place, used in (("registers", any(split.in_registers for split in splits)),
                                            ("shared memory", any(split.on_chip > split.in_registers for split in splits)),
                                            ("L2", True)) if used]
        return (f"{', '.join(places[:-1])} and {places[-1]} by k (forward {self.forward_weights.describe()}, "
                f"backward {self.backward_weights.describe()})")

    def stepwise_summary(self) -> str:
        """From which batch each direction runs a cuBLAS GEMM and a cell kernel a step, and up to
        which batch float64's stepwise forward runs one kernel a step instead."""
        forward, backward = self.stepwise_from_batch, self.stepwise_backward_from_batch
        if forward == backward:
            batches = [f"from B = {forward}"] if forward else []
        else:
            batches = [f"{direction} from B = {rows}" for direction, rows in (("forward", forward),
                                                                            ("backward", backward)) if rows]
        parts = [f"{' and '.join(batches)} a cuBLAS GEMM and a cell kernel a step"] if batches else []
        if self.dmma_step_until_batch:
            parts.append(f"the stepwise forward's step up to B = {self.dmma_step_until_batch} one DMMA kernel instead")
        return "".join(f"; {part}" for part in parts)


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

    forward_row, backward_row = hidden * element, 4 * hidden * element
    if backward_row > target.max_smem_per_block:
        largest = target.max_smem_per_block // (4 * element)
        raise SpecError(
            f"hidden_size {hidden} is too large for {target.arch} ({spec.where or 'layer'}): the "
            f"backward pass stages one batch row of the 4*hidden_size gate gradients "
            f"({backward_row} B) in shared memory, which holds {target.max_smem_per_block} B; "
            f"lower hidden_size to {largest} or less"
            + (", or use float16" if element > 2 else "")
        )
    layout = dict(target=target, storage_type=types["storage"], accumulate_type=types["accumulate"],
                  stepwise_from_batch=_stepwise_from_batch(spec, target),
                  stepwise_backward_from_batch=_stepwise_backward_from_batch(spec, target),
                  dmma_step_until_batch=_dmma_step_until_batch(spec, target))
    mma_type = _tensor_core_type(spec, target)
    cluster, sliced = _plan_batch_sliced(spec, target, mma_type) if mma_type else (1, None)
    if mma_type in _SPLIT_MMA_TYPES and not sliced:
        # Cooperative, strict float32 stays on the FMA kernels: at H = 512 its three TF32
        # products a tile took 1.12x their time forward at B = 1 and 1.36x in training
        # (bench/NOTES.md v19); batch-sliced, they won from B = 8.
        mma_type = None
    fma_sliced = None if mma_type else _plan_fma_sliced(spec, target)
    if fma_sliced:
        cluster, steps = fma_sliced
        heavy = any(_heavy_weights(step.k_per_thread, element) for step in steps[:2])
        layout["one_pass_rows"] = _FMA_HEAVY_ONE_PASS_ROWS if heavy else _FMA_ONE_PASS_ROWS
        return _staged_plan(spec, layout, steps, cluster, sliced=True, units=units, num_blocks=num_blocks,
                            threads=_FMA_THREADS, rows_per_pass=_FMA_ROWS_AT_ONCE, math="fma")
    if sliced:
        # The clusters hold all of W_hh and the wide forward takes a large batch in one turn of
        # them: at float16 and bfloat16 H = 512 their forward beat the stepwise one at every
        # batch measured (0.59 of its time at B = 128, 0.95 at 256; bench/NOTES.md v18 5.),
        # their backward did not, and keeps its batch.
        layout["stepwise_from_batch"] = 0
    tensor_core = sliced or (mma_type and _plan_tensor_cores(spec, target, units, mma_type, sliced=False))
    if not sliced:  # cooperative, on tensor cores or FMA
        layout["tagged_exchange_batch"] = _tagged_exchange_batch(hidden, element)
    if tensor_core:
        return _staged_plan(spec, layout, tensor_core, cluster, sliced=bool(sliced), units=units, num_blocks=num_blocks,
                            threads=_MMA_WARPS * WARP, rows_per_pass=_MMA_N, math="mma", mma_type=mma_type)
    # Weights in registers: each warp keeps one unit for the whole launch (at most
    # _TARGET_WARPS units), and a lane's share of the 4*H*U slice fits the register budget.
    lane_weights = max(4 * -(-hidden // WARP), -(-4 * hidden // WARP))
    # A lane's weights past the pass's sums and inputs, in the register budget.
    lane_budget = _LANE_REGISTER_BUDGET * 4 // types["accumulate_bytes"] - 5 * ROWS_PER_PASS
    one_unit_a_warp = warps % units == 0 and units <= _TARGET_WARPS
    slice_bytes = _round16(4 * units * hidden * element)
    if one_unit_a_warp and lane_weights <= lane_budget:
        weights_in, lanes_keep = "registers", lane_weights
    elif slice_bytes + backward_row <= target.max_smem_per_block:
        weights_in, lanes_keep = "shared", 0
    elif element >= _SPLIT_MIN_ELEMENT_BYTES:
        # As much on chip as leaves each direction the staged rows it would have with none
        # there, up to a pass of them: the lanes' registers first, where each warp keeps one
        # unit, then shared memory; the rest of each row from L2.
        weights_in, lanes_keep = "split", lane_budget if one_unit_a_warp else 0
    else:
        weights_in, lanes_keep = "global", 0
    def placed(direction: str, reserved: int) -> tuple[WeightSplit, int]:
        """A direction's weights and staged rows in the shared memory left past `reserved`."""
        k_len, outputs, row = (hidden, 4, forward_row) if direction == "forward" else (4 * hidden, 1, backward_row)
        available = target.max_smem_per_block - reserved
        shared_budget = {"registers": 0, "global": 0, "shared": available,
                         "split": available - row * min(ROWS_PER_PASS, _chunk_rows(available // row))}[weights_in]
        split = _split_weights(k_len, outputs, units, element, lanes_keep, shared_budget)
        return split, _chunk_rows((available - split.shared_bytes) // row)

    placement = {direction: placed(direction, 0) for direction in ("forward", "backward")}
    # The backward's input slots where its passes read part of W_hh^T from L2, unless they
    # would cost it a staged row of a pass.
    pass_inputs, slots = 0, _pass_inputs_bytes(warps, element, types["accumulate_bytes"])
    if (placement["backward"][0].streams and element >= _PASS_INPUTS_MIN_ELEMENT_BYTES
            and _arch_number(target) >= 80 and backward_row + slots <= target.max_smem_per_block):
        with_slots = placed("backward", slots)
        if with_slots[1] >= min(ROWS_PER_PASS, placement["backward"][1]):
            placement["backward"], pass_inputs = with_slots, slots
    reserved = {"forward": 0, "backward": pass_inputs}
    splits = {direction: split for direction, (split, _) in placement.items()}
    chunks = {direction: rows for direction, (_, rows) in placement.items()}
    if weights_in == "split" and not any(split.on_chip for split in splits.values()):
        weights_in = "global"
    if element == 8 and 2 * splits["forward"].on_chip < hidden:
        # Most of each row from L2 (float64 past H = 1088 on the H200): the barrier is a small
        # share of the step, and the tagged words' staging took registers that ptxas found
        # by spilling (1964 bytes at H = 2000, 988 without): 1.02 of the barrier's time at
        # B = 1, and at B = 4, past the words' rows, the spilled kernel took 1.05 (bench/NOTES.md
        # v27). float64 H = 910-1088 spills 292-392 bytes with the words; H = 1024 was timed.
        layout["tagged_exchange_batch"] = 0
    return Plan(
        **layout,
        units_per_block=units,
        num_blocks=num_blocks,
        warps=warps,
        threads=threads,
        weights_in=weights_in,
        rows_per_pass=ROWS_PER_PASS,
        forward_chunk_rows=chunks["forward"],
        backward_chunk_rows=chunks["backward"],
        smem_bytes=max(reserved[direction] + splits[direction].shared_bytes + _round16(chunks[direction] * row)
                       for direction, row in (("forward", forward_row), ("backward", backward_row))),
        forward_weights=splits["forward"],
        backward_weights=splits["backward"],
        pass_inputs_bytes=pass_inputs,
    )


def sized_plan(spec: LSTMSpec, plan: Plan, direction: str, rows: int) -> Plan:
    """The plan of `direction`'s batch-sliced kernel compiled for `rows` staged rows, whole
    passes that hold a batch's groups (Plan.staged_rows): its step stages exactly `rows`, the
    forward's from its wide step's where they are past the backward's, and the launch
    reserves that step's shared memory.
    A kernel compiled for more rows than its groups have costs every step: at float16
    H = 256, B = 8, a forward staging 32 rows took 1.52 us a step and one staging 8 took 0.97,
    bitwise equal (bench/NOTES.md v15). On FMA, up to one_pass_rows rows go in one pass."""
    assert plan.batch_sliced, "sized_plan() of a plan that is not batch-sliced"
    units, buffers = plan.units_per_block, plan.forward_step.stage_buffers
    pass_rows = plan.pass_rows(rows)
    assert rows % pass_rows == 0, f"{rows} rows are not whole passes of {pass_rows}"
    if plan.math == "mma":
        forward, backward, wide = _plan_tensor_cores(spec, plan.target, units, plan.mma_type, sliced=True,
                                                     stage_buffers=buffers, max_rows=rows)
    else:
        forward, backward, wide = _fma_sliced_steps(spec, plan.target, units, buffers, max_rows=rows,
                                                    pass_rows=pass_rows)
    forward = replace(wide or forward, async_exchange=plan.forward_step.async_exchange)
    backward = replace(backward, async_exchange=plan.backward_step.async_exchange)
    step = forward if direction == "forward" else backward
    assert step.chunk_rows == rows, f"{direction} groups of {rows} rows, past what the plan stages"
    return replace(plan, rows_per_pass=pass_rows, forward_step=forward, backward_step=backward,
                   forward_chunk_rows=forward.chunk_rows, backward_chunk_rows=backward.chunk_rows,
                   wide_forward_step=None, smem_bytes=step.smem_bytes)


def _pass_inputs_bytes(warps: int, element: int, accumulate: int) -> int:
    """Plan.pass_inputs_bytes: a slot for each row of each warp's pass, holding
    _PASS_INPUT_ELEMENTS elements of storage and one of the accumulation type (the C
    struct's size: its elements end aligned for the accumulator)."""
    slot = -(-(_PASS_INPUT_ELEMENTS * element + accumulate) // max(element, accumulate)) * max(element, accumulate)
    return _round16(warps * ROWS_PER_PASS * slot)


def _split_weights(k_len: int, outputs: int, units: int, element: int, lane_weights: int,
                   shared_budget: int) -> WeightSplit:
    """One direction's WeightSplit: a lane keeps `lane_weights` weights at most (`outputs`
    per k it keeps), the block at most `shared_budget` bytes of its rows in shared memory,
    by k in steps of 32 (a warp's k at a time), the first k's in registers."""
    in_registers = min(k_len, lane_weights // outputs * WARP)
    k_shared = shared_budget // (units * outputs * element)
    # A row's end may come at any k; a bound before it, at a whole warp's k.
    on_chip = k_len if in_registers + k_shared >= k_len else in_registers + k_shared // WARP * WARP
    return WeightSplit(in_registers=in_registers, on_chip=on_chip, k_len=k_len,
                       shared_bytes=_round16((on_chip - in_registers) * outputs * units * element),
                       lane_k=_lane_k(k_len, in_registers, element))


def _lane_k(k_len: int, in_registers: int, element: int) -> int:
    """WeightSplit.lane_k: runs of 4 consecutive float32 k a lane, so that a pass loads a
    row's inputs from shared memory 16 bytes at a time, not 4 (2-4% faster steps at H = 384
    to 1024; bench/NOTES.md v25). Only where every weight is in registers and k_len is whole
    runs of the warp's lanes: weights read from shared memory or L2 keep one k a lane, which
    keeps their reads coalesced and free of bank conflicts. Other storage types, whose runs
    were never measured, keep one k a lane."""
    if element != 4:  # measured for float32 only
        return 1
    return _LANE_K_RUN if in_registers == k_len and k_len % (WARP * _LANE_K_RUN) == 0 else 1


def _staged_plan(spec: LSTMSpec, layout: dict, steps: Steps, cluster: int, sliced: bool, units: int,
                 num_blocks: int, threads: int, rows_per_pass: int, math: str, mma_type: str = "") -> Plan:
    """A plan whose blocks run a staged step each way (tensor cores, or batch-sliced FMA),
    with W_hh in registers; batch-sliced in clusters of `cluster` blocks that each own a
    slice of the units, else the cooperative grid's `num_blocks` of `units` units."""
    hidden = spec.hidden_size
    forward, backward, wide = steps
    units_per_block = -(-hidden // cluster) if sliced else units
    if cluster > 1:
        element = DTYPES[spec.dtype]["bytes"]
        forward, backward = _sends_by_st_async(forward, backward, hidden, units_per_block, element)
        wide = wide and replace(wide, async_exchange=forward.async_exchange)
    return Plan(
        **layout,
        units_per_block=units_per_block,
        num_blocks=layout["target"].sm_count // cluster * cluster if sliced else num_blocks,
        warps=threads // WARP,
        threads=threads,
        weights_in="registers",
        rows_per_pass=rows_per_pass,
        forward_chunk_rows=forward.chunk_rows,
        backward_chunk_rows=backward.chunk_rows,
        smem_bytes=max(forward.smem_bytes, backward.smem_bytes),
        math=math,
        mma_type=mma_type,
        forward_step=forward,
        backward_step=backward,
        wide_forward_step=wide,
        batch_sliced=sliced,
        cluster_blocks=cluster,
    )


def _tagged_exchange_batch(hidden: int, element: int) -> int:
    """Plan.tagged_exchange_batch of a cooperative forward: the rows whose words a block copies
    a step fill at most _TAGGED_WORD_BYTES, and at least one (past H = 8192 in float32 one row
    takes more); 0 where a row of words does not fill 16-byte vectors. A word is the element
    itself where it holds the tag in its last bit (4 and 8 bytes), else twice its size."""
    word = element if element >= 4 else 2 * element
    if hidden * word % _TAGGED_VECTOR_BYTES:
        return 0
    return max(1, _TAGGED_WORD_BYTES // (hidden * word))


def _dmma_step_until_batch(spec: LSTMSpec, target: Target) -> int:
    """The largest batch whose stepwise forward runs a step as one kernel, the product on the
    FP64 tensor cores and the cell on it (templates/cell.cu.j2 lstm_forward_step), 0 for
    none: float64 from sm_80 (mma.m8n8k4), H a multiple of its 8-unit tiles, up to
    _DMMA_STEP_MAX_WORK."""
    if spec.dtype != "float64" or _arch_number(target) < 80 or spec.hidden_size % DMMA_STEP.units:
        return 0
    return _DMMA_STEP_MAX_WORK // spec.hidden_size**2


def _stepwise_from_batch(spec: LSTMSpec, target: Target) -> int:
    """The smallest batch that runs the stepwise recurrence (runtime/stepwise.py), 0 for
    none: past where the persistent kernels are faster, and enough rows that cuBLAS's tiles
    fill the GPU. Below that, the persistent kernels' W_hh on chip and their single launch
    win; above it, their blocks each read all of h_{t-1} from L2 and run products tiled for
    few rows, while cuBLAS tiles the whole batch. The two launches a step cost about 17 us of
    CPU time, which only a replayed CUDA graph of the loop hides (runtime/replay.py): the
    thresholds are where it is replayed."""
    hidden = spec.hidden_size
    if DTYPES[spec.dtype]["bytes"] == 8:
        rows = -(-_STEPWISE_FLOAT64_WORK // hidden ** 2) if hidden >= _STEPWISE_FLOAT64_MIN_HIDDEN else 0
        if hidden < _STEPWISE_FLOAT64_GEMM_MIN_HIDDEN and _dmma_step_until_batch(spec, target) < rows:
            rows = 0
    else:
        rows = -(-_STEPWISE_ROW_UNITS // hidden) if hidden >= _STEPWISE_MIN_HIDDEN else 0
    return rows and max(_STEPWISE_MIN_BATCH, rows)


def _stepwise_backward_from_batch(spec: LSTMSpec, target: Target) -> int:
    """As _stepwise_from_batch, for the backward recurrence."""
    hidden = spec.hidden_size
    if spec.dtype != "float32":
        return _stepwise_from_batch(spec, target)
    if hidden >= _STEPWISE_MIN_HIDDEN:
        rows = -(-_STEPWISE_BACKWARD_FLOAT32_ROW_UNITS // hidden)
    else:
        narrow_from, row_units = _STEPWISE_BACKWARD_FLOAT32_NARROW
        rows = -(-row_units // hidden) if hidden >= narrow_from else 0
    return rows and max(_STEPWISE_MIN_BATCH, rows)


def _arch_number(target: Target) -> int:
    return int(target.arch.removeprefix("sm_"))


def _tensor_core_type(spec: LSTMSpec, target: Target) -> str | None:
    """The tensor-core products (Plan.mma_type) of `spec` on `target`, or None for the FMA
    kernels: float64, a GPU older than Ampere (sm_80 brought m16n8k16 and TF32), or blocks
    too small for the tensor-core step's 8 warps. float32 without TF32 takes "tf32x3" (which
    plan_layer keeps only for batch-sliced plans)."""
    if _arch_number(target) < 80 or _MMA_WARPS * WARP > target.max_threads_per_block:
        return None
    storage = DTYPES[spec.dtype]["storage"]
    if storage in _MMA_TYPES:
        return _MMA_TYPES[storage]
    if storage == "float":
        return "tf32" if spec.allow_tf32 else "tf32x3"
    return None


def _sends_by_st_async(forward: Step, backward: Step, hidden: int, units: int, element: int) -> tuple[Step, Step]:
    """The cluster's steps, marked where their blocks send each other the staged rows by
    st.async, a value a store (float32, float64; 16-bit values in pairs of adjacent units,
    where every block's slice starts at an even unit and H is even), instead of plain stores
    and a cluster barrier a step. Measured on the H200 (bench/NOTES.md v6), st.async made the forward step
    6% (16-bit) and 8% (TF32) faster and the TF32 training step 7%, but the 16-bit training
    step 3% slower: a 16-bit backward sends each item's four gates as four pairs, and keeps
    the plain stores."""
    words = element >= 4 or (units % 2 == 0 and hidden % 2 == 0)
    return replace(forward, async_exchange=words), replace(backward, async_exchange=words and element >= 4)


def _plan_batch_sliced(spec: LSTMSpec, target: Target, mma_type: str
                       ) -> tuple[int, Steps | None]:
    """Blocks per cluster and the Steps of a batch-sliced plan, or (1, None):
    one block where its warps' chains of mma.sync are short (_SHORT_CHAIN), else the largest
    cluster that fits."""
    fitting = _fitting_clusters(spec, target, lambda units, stage_buffers: _plan_tensor_cores(
        spec, target, units, mma_type, sliced=True, stage_buffers=stage_buffers))
    if not fitting:
        return 1, None
    if 1 in fitting and all(step.m_tiles_per_warp * step.k_tiles_per_warp <= _SHORT_CHAIN for step in fitting[1][:2]):
        return 1, fitting[1]
    return _largest_portable(fitting)


def _fitting_clusters(spec: LSTMSpec, target: Target, plan_steps) -> dict[int, Steps]:
    """The Steps for each cluster size the target has (one block below sm_90)
    in which every block owns a unit: plan_steps(units a block, staged buffers), None where
    they do not fit. Clusters double-buffer the staged rows: others write step t's while a
    block still reads t - 1's."""
    hidden = spec.hidden_size
    largest = min(target.sm_count, target.max_cluster_blocks) if _arch_number(target) >= 90 else 1
    fitting = {}
    for cluster in (size for size in _CLUSTER_SIZES if size <= largest):
        units = -(-hidden // cluster)
        if -(-hidden // units) < cluster:
            break  # some block of the cluster would own no unit
        steps = plan_steps(units, 1 if cluster == 1 else 2)
        if steps:
            fitting[cluster] = steps
    return fitting


def _largest_portable(fitting: dict[int, Steps]) -> tuple[int, Steps]:
    """The largest fitting cluster of at most the portable size, else the largest."""
    portable = [cluster for cluster in fitting if cluster <= PORTABLE_CLUSTER_BLOCKS]
    cluster = max(portable or fitting)
    return cluster, fitting[cluster]


def _plan_fma_sliced(spec: LSTMSpec, target: Target) -> tuple[int, Steps] | None:
    """Blocks per cluster and the FMA Steps of a batch-sliced plan for strict
    float32 or float64, or None: the largest portable cluster (or one block, below sm_90)
    whose threads keep their weights in registers, else a non-portable one where the target
    allows it."""
    if DTYPES[spec.dtype]["storage"] not in ("float", "double"):
        return None  # 16-bit storage runs batch-sliced on tensor cores, or not at all
    if _FMA_THREADS > target.max_threads_per_block:
        return None
    fitting = _fitting_clusters(spec, target, lambda units, stage_buffers: _fma_sliced_steps(
        spec, target, units, stage_buffers))
    return _largest_portable(fitting) if fitting else None


def _fma_sliced_steps(spec: LSTMSpec, target: Target, units: int, stage_buffers: int,
                      max_rows: int = _MAX_CHUNK_ROWS, pass_rows: int = _FMA_ROWS_AT_ONCE) -> Steps | None:
    """The FMA Steps for blocks of `units` units staging at most `max_rows` batch rows, whole
    passes of `pass_rows`, or None where they do not fit; both directions stage the same
    groups, and the wide forward more."""
    hidden, element = spec.hidden_size, DTYPES[spec.dtype]["bytes"]
    max_chunk = min(max_rows, _SLICED_ITEMS_PER_THREAD * _FMA_THREADS // units // _MMA_N * _MMA_N)
    shapes = ((4 * units, hidden), (units, 4 * hidden))  # (rows, k_len): forward, backward
    steps = [_fma_step(target, units, element, max_chunk, stage_buffers, pass_rows, m_rows, k_len)
             for m_rows, k_len in shapes]
    if None in steps:
        return None
    chunk = min(step.chunk_rows for step in steps)  # both directions stage the same groups
    forward, backward = (_fma_step(target, units, element, chunk, stage_buffers, pass_rows, m_rows, k_len)
                         for m_rows, k_len in shapes)
    wide = _fma_step(target, units, element, min(max_chunk, _wide_chunk(units, _FMA_THREADS)), stage_buffers,
                     pass_rows, *shapes[0])
    return forward, backward, _wider(wide, forward)


def _fma_step(target: Target, units: int, element: int, max_chunk: int, stage_buffers: int, pass_rows: int,
              rows: int, k_len: int) -> FmaStep | None:
    if max_chunk < pass_rows or rows > _FMA_THREADS:
        return None
    m_threads = 1 << (rows - 1).bit_length()
    k_split = _FMA_THREADS // m_threads
    if k_split > _FMA_MAX_K_SPLIT:
        return None
    vector = _FMA_VECTOR_BYTES // element
    per_part = -(-k_len // k_split)
    k_per_thread = -(-per_part // vector) * vector
    if k_per_thread > _FMA_SLICED_WEIGHTS:
        return None
    if _heavy_weights(k_per_thread, element):
        max_chunk = min(max_chunk, max(_MMA_N, _FMA_HEAVY_ITEMS_PER_THREAD * _FMA_THREADS // units // _MMA_N * _MMA_N))
    stage_stride = k_split * k_per_thread + vector  # whole vectors; the 16 bytes past K as TensorCoreStep's
    partial_stride = m_threads + 4  # m_threads >= 16 (k_split <= 16): 16-byte reads of 4 gate sums stay aligned

    fitted = _fit_staging(target, max_chunk, stage_buffers, stage_stride * element, k_split * partial_stride * element,
                          granularity=pass_rows)
    if fitted is None:
        return None
    chunk, staged_bytes, smem_bytes = fitted
    return FmaStep(
        rows=rows, m_threads=m_threads, k_split=k_split, k_per_thread=k_per_thread, chunk_rows=chunk,
        stage_stride=stage_stride, partial_stride=partial_stride, staged_bytes=staged_bytes, smem_bytes=smem_bytes,
        items_per_thread=-(-units * chunk // _FMA_THREADS), stage_buffers=stage_buffers,
    )


def _heavy_weights(k_per_thread: int, element: int) -> bool:
    """Whether a thread keeps more than _FMA_HEAVY_WEIGHT_BYTES of weights in registers."""
    return k_per_thread * element > _FMA_HEAVY_WEIGHT_BYTES


def _plan_tensor_cores(spec: LSTMSpec, target: Target, units: int, mma_type: str, sliced: bool,
                       stage_buffers: int = 1, max_rows: int = _MMA_MAX_CHUNK_ROWS
                       ) -> tuple[TensorCoreStep, TensorCoreStep, TensorCoreStep | None] | None:
    """The tensor-core Steps for blocks of `units` units staging at most `max_rows` batch rows (no wide
    forward unless batch-sliced), or None where they do not fit: m tiles that do not share
    out evenly over the warps, fragments beyond the
    register budget or not even 8 staged rows in shared memory. Batch-sliced (the block's
    units are its slice of all H in its cluster), both directions stage the same groups of
    rows, few enough for _SLICED_ITEMS_PER_THREAD, and a wide forward step (or None) more."""
    hidden, element = spec.hidden_size, DTYPES[spec.dtype]["bytes"]
    max_chunk = max_rows
    if sliced:
        max_chunk = min(max_chunk, _SLICED_ITEMS_PER_THREAD * _MMA_WARPS * WARP // units // _MMA_N * _MMA_N)
    forward_registers = _SLICED_FORWARD_FRAGMENT_REGISTERS if sliced else _MMA_FRAGMENT_REGISTERS
    backward_registers = _SLICED_BACKWARD_FRAGMENT_REGISTERS if sliced else _MMA_FRAGMENT_REGISTERS
    # (rows, k_len, fragment registers): forward, backward
    shapes = ((4 * units, hidden, forward_registers), (units, 4 * hidden, backward_registers))
    if not sliced:
        steps = [_cooperative_step(target, units, mma_type, element, max_chunk, stage_buffers, *shape) for shape in shapes]
        return None if None in steps else (steps[0], steps[1], None)
    steps = [_tensor_core_step(target, units, mma_type, element, sliced, max_chunk, stage_buffers, *shape)
             for shape in shapes]
    if None in steps:
        return None
    chunk = min(step.chunk_rows for step in steps)
    forward, backward = (_tensor_core_step(target, units, mma_type, element, sliced, chunk, stage_buffers, *shape)
                         for shape in shapes)
    wide = _tensor_core_step(target, units, mma_type, element, sliced, min(max_chunk, _wide_chunk(units, _MMA_WARPS * WARP)),
                             stage_buffers, *shapes[0])
    return forward, backward, _wider(wide, forward)


def _wide_chunk(units: int, threads: int) -> int:
    """Rows of the wide forward step, at most: _WIDE_ITEMS_PER_THREAD items a thread."""
    return _WIDE_ITEMS_PER_THREAD * threads // units // _MMA_N * _MMA_N


def _wider(wide: Step | None, forward: Step) -> Step | None:
    """`wide` where it stages more rows than the forward step, else None."""
    return wide if wide and wide.chunk_rows > forward.chunk_rows else None


def _cooperative_step(target: Target, units: int, mma_type: str, element: int, max_chunk: int,
                      stage_buffers: int, rows: int, k_len: int, fragment_registers: int) -> TensorCoreStep | None:
    """A cooperative block's step. Where the block has 2 m tiles (16-bit H = 529-1056 on the
    H200, TF32 from 529), each warp takes both over 1/8 of K, so that each B fragment it
    loads from shared memory feeds two products; one m tile a warp over 1/4 of K, the two
    warps of a k part had loaded the same fragments: at float16 H = 1024 B = 64, 256 KiB a
    step, 1.0 us at 128 bytes a clock, in a product of 1.43 us (1.27 without the duplicates).
    The forward took 0.97-0.99 of the time at float16 and bfloat16 H = 1024, TF32 0.94-0.96
    (bench/NOTES.md v28). Not where that stages fewer rows (its partial sums of 8 parts of K
    take twice the shared memory, and K padded to 8 warps' k tiles more): TF32 H = 577-864,
    897-960 and 1025-1056 on the H200. 4 m tiles a warp (smaller GPUs) were never measured."""
    args = (target, units, mma_type, element, False, max_chunk, stage_buffers, rows, k_len, fragment_registers)
    split = _tensor_core_step(*args)
    if split is None or split.m_tiles != 2:
        return split
    both = _tensor_core_step(*args, all_m_tiles=True)
    return both if both and both.chunk_rows >= split.chunk_rows else split


def _tensor_core_step(target: Target, units: int, mma_type: str, element: int, sliced: bool, max_chunk: int,
                      stage_buffers: int, rows: int, k_len: int, fragment_registers: int,
                      all_m_tiles: bool = False) -> TensorCoreStep | None:
    if max_chunk < _MMA_N:
        return None
    m_tiles = -(-rows // _MMA_M)
    if sliced:
        # Zero tiles pad the count to one that shares out over the warps (3 -> 4, 9 -> 16):
        # a little more arithmetic, no grid barrier.
        while not (_MMA_WARPS % m_tiles == 0 or m_tiles % _MMA_WARPS == 0):
            m_tiles += 1
    # Warps share each m tile's K, or (batch-sliced, where the block may have many units'
    # gate rows) split the m tiles, or each take every m tile and 1/8 of K (all_m_tiles).
    if sliced and m_tiles >= _MMA_WARPS and m_tiles % _MMA_WARPS == 0:
        m_tiles_per_warp, k_split = m_tiles // _MMA_WARPS, 1
    elif all_m_tiles and _MMA_WARPS % m_tiles == 0:
        m_tiles_per_warp, k_split = m_tiles, _MMA_WARPS
    elif _MMA_WARPS % m_tiles == 0:
        m_tiles_per_warp, k_split = 1, _MMA_WARPS // m_tiles
    else:
        return None
    k_tile = _MMA_K[mma_type]
    k_tiles = -(-k_len // k_tile)
    k_tiles_per_warp = -(-k_tiles // k_split)
    parts = _SPLIT_MMA_TYPES.get(mma_type, 1)
    registers_per_tile = m_tiles_per_warp * (4 if rows > _MMA_M // 2 else 2) * parts
    k_tiles_in_registers = min(k_tiles_per_warp, fragment_registers // registers_per_tile)
    # A lane keeps 16 bytes of each tile (a part) in shared memory, 8 when the tile's rows 8-15 are padding.
    lane_bytes = (16 if rows > _MMA_M // 2 else 8) * parts
    shared_fragment_bytes = _MMA_WARPS * m_tiles_per_warp * (k_tiles_per_warp - k_tiles_in_registers) * WARP * lane_bytes
    if k_tiles_in_registers == 0 or shared_fragment_bytes > _SHARED_FRAGMENT_BYTES:
        return None
    if sliced and m_tiles_per_warp * k_tiles_per_warp > _SLICED_TILES_PER_WARP:
        return None
    # Every warp's k tiles staged (zeros past K), so that no k tile needs a bounds check; then
    # 16 bytes of padding: 4 banks, so that the 8 rows of a fragment start 4 banks apart.
    stage_stride = k_tiles_per_warp * k_split * k_tile + 16 // element
    partial_stride = m_tiles * _MMA_M + 4

    fitted = _fit_staging(target, max_chunk, stage_buffers, stage_stride * element, k_split * partial_stride * 4,
                          shared_fragment_bytes)
    if fitted is None:
        return None
    chunk, staged_bytes, smem_bytes = fitted
    return TensorCoreStep(
        rows=rows, m_tiles=m_tiles, m_tiles_per_warp=m_tiles_per_warp, k_split=k_split, k_tiles=k_tiles,
        k_tiles_per_warp=k_tiles_per_warp, k_tiles_in_registers=k_tiles_in_registers, chunk_rows=chunk, stage_stride=stage_stride,
        partial_stride=partial_stride, staged_bytes=staged_bytes, smem_bytes=smem_bytes,
        items_per_thread=-(-units * chunk // (_MMA_WARPS * WARP)), stage_buffers=stage_buffers,
    )


def _fit_staging(target: Target, max_chunk: int, stage_buffers: int, row_bytes: int, partial_row_bytes: int,
                 other_bytes: int = 0, granularity: int = _MMA_N) -> tuple[int, int, int] | None:
    """The most staged rows, a multiple of `granularity` (the rows of a pass) up to max_chunk,
    whose shared memory fits the target: (rows, staged bytes, all bytes), or None below one
    pass. The layout: the staged buffers, each row's partial sums, `other_bytes` (fragments
    kept in shared memory), and in clusters (two buffers) their mbarriers last."""
    barriers = _EXCHANGE_BARRIER_BYTES if stage_buffers == 2 else 0

    def sizes(chunk: int) -> tuple[int, int]:
        staged = _round16(stage_buffers * chunk * row_bytes)
        return staged, staged + chunk * partial_row_bytes + other_bytes + barriers

    chunk = max_chunk
    while chunk >= granularity and sizes(chunk)[1] > target.max_smem_per_block:
        chunk -= granularity
    if chunk < granularity:
        return None
    return chunk, *sizes(chunk)


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
