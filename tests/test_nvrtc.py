"""Every generated kernel compiles for sm_90 with NVRTC exactly as the runtime would, no GPU needed."""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

pytest.importorskip("cupy", reason="NVRTC comes with CuPy: pip install 'lstmgen[cuda13]'")

from lstmgen.codegen import SM90_H200, LSTMSpec, Target, load_spec, render_kernel, render_layer, sized_plan  # noqa: E402
from lstmgen.errors import KernelCompileError  # noqa: E402
from lstmgen.runtime.compile import RAW_MODULE_OPTIONS, compile_for_arch  # noqa: E402
from lstmgen.strategies import layer_specs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _compile_all(spec: LSTMSpec) -> None:
    for direction, source in render_layer(spec).items():
        cubin = compile_for_arch(spec, direction, source.text, "sm_90")
        assert cubin[:4] == b"\x7fELF", f"{direction}: NVRTC returned no ELF cubin"


@pytest.mark.parametrize("spec_path", sorted((ROOT / "specs").glob("*.toml")), ids=lambda p: p.stem)
def test_spec_kernels_compile_for_sm90(spec_path):
    for spec in load_spec(spec_path).layers:
        _compile_all(spec)


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_specs())
def test_drawn_spec_kernels_compile_for_sm90(spec):
    _compile_all(spec)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_kernels_for_gpus_before_ampere_compile_without_cp_async(dtype):
    # sm_75 (T4) has no cp.async: the FMA kernels stage through registers there.
    turing = Target(arch="sm_75", sm_count=40, max_smem_per_block=65536)
    spec = LSTMSpec(input_size=8, hidden_size=300, dtype=dtype)
    sources = render_layer(spec, turing)
    assert sources["forward"].plan.math == "fma"
    assert all("cp.async" in sources[direction].text for direction in ("forward", "backward"))
    for direction, source in sources.items():
        cubin = compile_for_arch(spec, direction, source.text, "sm_75")
        assert cubin[:4] == b"\x7fELF", f"{direction}: NVRTC returned no ELF cubin"


def test_compiles_without_a_gpu_take_the_runtime_options():
    # cupy.RawModule (the runtime) compiles unannotated functions as device code; `lstmgen
    # compile` must too, or kernels that the runtime accepts fail there on some NVRTC versions.
    spec = LSTMSpec(input_size=1, hidden_size=1)
    source = 'int twice(int x) { return 2 * x; }\nextern "C" __global__ void k(int* p) { *p = twice(*p); }\n'
    assert compile_for_arch(spec, "forward", source, "sm_90")[:4] == b"\x7fELF"


def test_compile_failure_shows_log_spec_and_numbered_source():
    spec = LSTMSpec(input_size=2, hidden_size=3, dtype="float32", where="specs/x.toml, layer 1")
    broken = render_layer(spec)["forward"].text.replace("c = f * p.c_prev + i * g;", "c = f * p.c_prev + i * undefined_gate;")
    with pytest.raises(KernelCompileError) as caught:
        compile_for_arch(spec, "forward", broken, "sm_90")
    message = str(caught.value)
    assert "NVRTC could not compile the forward kernel for layer [input_size=2 hidden_size=3" in message
    assert "(specs/x.toml, layer 1)" in message
    assert 'identifier "undefined_gate" is undefined' in message
    number, line = next((n, text) for n, text in enumerate(broken.splitlines(), 1) if "undefined_gate" in text)
    assert f"\n{number:5d}  {line}\n" in message
    assert "fix:" in message


@pytest.mark.parametrize("dtype, hidden, allow_tf32", [
    ("float32", 1024, False), ("float16", 1056, False), ("bfloat16", 1056, False), ("float32", 576, True),
    ("float32", 1056, True)])
def test_weights_in_registers_do_not_spill_at_the_planners_limit(dtype, hidden, allow_tf32):
    # The planner keeps W_hh in registers up to these hidden sizes (FMA lanes' shares for
    # float32, tensor-core fragments for 16 bits and TF32); a spill would put the weights in local
    # memory and every step would reload them.
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    for direction, source in render_layer(spec).items():
        assert source.plan.weights_in == "registers"
        assert (source.plan.math == "mma") == (dtype != "float32" or allow_tf32)
        log = _ptxas_log(source.text, direction)
        assert "0 bytes spill stores, 0 bytes spill loads" in log, f"{direction}:\n{log}"


@pytest.mark.parametrize("hidden", [880, 1024])
def test_tf32_forward_with_both_m_tiles_a_warp_does_not_spill(hidden):
    # Each warp multiplies both m tiles (codegen/planner.py _cooperative_step), 9 of its 14 or
    # 16 k tiles in registers and the rest in shared memory.
    source = render_layer(LSTMSpec(input_size=8, hidden_size=hidden, allow_tf32=True))["forward"]
    step = source.plan.forward_step
    assert step.m_tiles_per_warp == 2 and step.k_tiles_in_registers < step.k_tiles_per_warp
    log = _ptxas_log(source.text, "forward")
    assert "0 bytes spill stores, 0 bytes spill loads" in log, log


_A100 = Target(arch="sm_80", sm_count=108, max_smem_per_block=166912)


@pytest.mark.parametrize("dtype, hidden, allow_tf32, target, spill_bound", [
    # One block (H <= 64 in 16 bits, 32 in TF32), clusters of 8 blocks (to H = 256; TF32's
    # backward keeps 14 of 32 k tiles a warp in shared memory there).
    ("float16", 64, False, SM90_H200, 0), ("bfloat16", 64, False, SM90_H200, 0), ("float32", 32, True, SM90_H200, 0),
    ("float16", 128, False, SM90_H200, 0), ("float16", 256, False, SM90_H200, 0), ("float32", 64, True, SM90_H200, 0),
    # Their forward kernels keep every k tile in registers: at TF32 H = 256 (wide, 24 rows) and
    # 16-bit H = 512 (8 rows) ptxas spills up to 80 bytes (nvcc 13.0's SASS of float16 H = 512:
    # every spill store in the setup, each reload once before the step loop; TF32's wide
    # forward loads 120 of its 80 bytes, its SASS not read).
    ("float32", 256, True, SM90_H200, 80), ("float16", 512, False, SM90_H200, 80),  # and of 16 blocks
    # Without clusters (before sm_90) one block holds H = 128 in 16 bits: 4 m tiles of 8 k
    # tiles a warp forward, all in registers. ptxas spills while the forward kernel loads its
    # fragments at the start, never in the step loop: NVRTC's ptxas spills 56 bytes for sm_90
    # (72 with 4 of the tiles in shared memory, 32 before the epilogue was split for
    # clusters; the backward 8); with 4 tiles in shared memory a newer ptxas spilled 132,
    # and its SASS (nvdisasm) had every spill store before the first block barrier and every
    # reload once, right after it. Far more would mean the step is short of registers too.
    ("float16", 128, False, _A100, 136), ("bfloat16", 128, False, _A100, 136),
    # Strict float32 as 3xTF32, two fragments a tile: clusters of 8 at H = 128, all in
    # registers; of 16 at H = 256, where the wide forward (48 rows, all 16 k tiles a warp
    # in 128 registers) spills 24 bytes.
    ("float32", 128, False, SM90_H200, 0), ("float32", 256, False, SM90_H200, 24),
    # At H = 144, 18 k tiles a warp forward, 16 in registers: the forward of 32 rows spills 140
    # bytes, that of 8 rows none (codegen/planner.py).
    ("float32", 144, False, SM90_H200, 140),
    # FMA clusters of float64 at 64 weights a thread (128 registers; one pass of up to 5 rows,
    # where 6 spilled 8 bytes), float64 H = 128's wide forward (3 items a thread of 64
    # registers of weights) and one pass of 8 rows, and one A100 block of float64 at H = 64
    # (2 items a thread).
    ("float64", 256, False, SM90_H200, 0), ("float64", 128, False, SM90_H200, 0), ("float64", 64, False, _A100, 0)])
def test_batch_sliced_kernels_keep_their_step_loop_in_registers_at_their_limit(dtype, hidden, allow_tf32, target,
                                                                               spill_bound):
    # The runtime also compiles each direction for the rows of its launch's groups
    # (sized_plan): at small batches one pass of rows, an n tile of 8 on tensor cores, 4 on
    # FMA, and on FMA up to one_pass_rows rows in one pass (the most chains of FMA at once).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    sources = render_layer(spec, target)
    plan = sources["forward"].plan
    for direction in ("forward", "backward"):
        for rows in {plan.rows_per_pass, plan.one_pass_rows} - {0}:
            sized = sized_plan(spec, plan, direction, rows)
            sources[f"{direction} for {rows} rows in passes of {sized.rows_per_pass}"] = render_kernel(spec, sized, direction)
    for name, source in sources.items():
        assert source.plan.batch_sliced
        log = _ptxas_log(source.text, source.direction)
        spilled = int(re.search(r"(\d+) bytes spill stores", log).group(1))
        assert spilled <= spill_bound, f"{name}:\n{log}"


@pytest.mark.parametrize("hidden", [1024, 1088])
def test_split_weights_spill_little_at_the_lanes_register_budget(hidden):
    # float64 H = 1024 keeps 11 k steps of each of its unit's 4 rows (forward) or 44 of its
    # column (backward) in a lane's registers, the whole budget (bench/NOTES.md v11: 28 B
    # spilled forward, and 1.7x faster at B = 1 than with W_hh in L2). Far more would mean
    # the products reload weights from local memory every step. The forward's staging of
    # tagged words holds 8 vectors a thread in flight: ptxas spills 300 B there (nvcc 13.0),
    # and it still ran 0.80-0.88 of the grid barrier's time at B = 1-4, as fast at 8 and 16
    # (bench/NOTES.md v27). H = 1088, the last with tagged words, keeps none in registers
    # and spills 296 B forward (H = 1040: 392; logs/ptxas-v27-float64-spills.txt).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype="float64")
    for direction, source in render_layer(spec).items():
        if direction == "cell":
            continue
        assert source.plan.weights_in == "split"
        log = _ptxas_log(source.text, direction)
        spilled = int(re.search(r"(\d+) bytes spill stores", log).group(1))
        assert spilled <= (320 if direction == "forward" else 64), f"{direction}:\n{log}"


@pytest.mark.parametrize("dtype, hidden", [("float32", 1400), ("float32", 4300), ("float64", 2000)])
def test_backward_kernels_with_weights_in_l2_keep_their_inputs_in_shared_memory(dtype, hidden):
    # Where the backward reads W_hh^T from L2 its passes copy their other inputs into shared
    # memory (Plan.pass_inputs_bytes). In registers they held up the weight loads, and ptxas
    # spilled float32 H = 4300's backward by 160 B (none with the slots).
    spec = LSTMSpec(input_size=8, hidden_size=hidden, dtype=dtype)
    source = render_layer(spec)["backward"]
    assert source.plan.pass_inputs_bytes and source.plan.backward_streams_weights
    log = _ptxas_log(source.text, "backward")
    spilled = int(re.search(r"(\d+) bytes spill stores", log).group(1))
    assert spilled <= 64, log


@pytest.mark.parametrize("dtype, allow_tf32, hidden", [
    ("float16", False, 1), ("bfloat16", False, 1), ("float32", True, 1), ("float64", False, 1),
    ("float32", False, 100),  # 3xTF32 clusters
    ("float64", False, 100),  # FMA clusters
    ("float64", False, 64),   # the stepwise forward's one-kernel DMMA step
])
def test_kernels_compile_without_warnings(dtype, allow_tf32, hidden):
    # H = 1: forward rows of one element, fewer than a 16-byte staging vector holds.
    spec = LSTMSpec(input_size=1, hidden_size=hidden, dtype=dtype, allow_tf32=allow_tf32)
    for direction, source in render_layer(spec).items():
        # Diagnostics on the source itself, e.g. "forward.cu(87): warning #39-D: division by
        # zero"; NVRTC's own notes on its precompiled headers are not about the kernel.
        log = _ptxas_log(source.text, direction)
        assert not re.search(rf"{direction}\.cu\(\d+\): warning", log), f"{direction}:\n{log}"


def _ptxas_log(text: str, direction: str) -> str:
    from cupy.cuda import nvrtc

    from lstmgen.runtime.compile import compile_options

    program = nvrtc.createProgram(text, f"{direction}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [*compile_options(), *RAW_MODULE_OPTIONS, "-arch=sm_90", "-Xptxas=-v"])
        return nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)
