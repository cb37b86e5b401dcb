"""The `lstmgen` command on a machine without a GPU (the CPU tier)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import gpu_unavailable_reason
from lstmgen.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "specs" / "seed.toml")
needs_no_gpu = pytest.mark.skipif(gpu_unavailable_reason() is None, reason="checks the behaviour without a GPU")


def test_generate_writes_the_golden_files(tmp_path, capsys):
    assert main(["generate", SEED, "-o", str(tmp_path)]) == 0
    golden = sorted((ROOT / "generated" / "seed").glob("*.cu"))
    assert [p.name for p in golden] == sorted(p.name for p in (tmp_path / "seed").iterdir())
    assert len(golden) == 6  # 2 layers: forward, backward, cell
    for path in golden:
        assert (tmp_path / "seed" / path.name).read_text() == path.read_text()
    assert f"wrote {tmp_path / 'seed' / 'layer2_backward.cu'}" in capsys.readouterr().out


def test_generate_reports_spec_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[layer]]\ninput_size = 3\nhidden_size = 0\n")
    assert main(["generate", str(bad), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lstmgen: error: LSTMSpec.hidden_size must be a positive integer, got 0")
    assert f"({bad}, layer 1)" in err
    assert not (tmp_path / "bad").exists()


def test_compile_reports_each_kernel(capsys):
    pytest.importorskip("cupy")
    assert main(["compile", SEED]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6  # 2 layers: forward, backward, cell
    assert out[0].startswith(f"{SEED}: layer 1 forward: ") and "bytes of sm_90 code" in out[0]


@needs_no_gpu
def test_demo_without_gpu_generates_compiles_and_says_why_it_stops(tmp_path, capsys):
    pytest.importorskip("cupy")
    assert main(["demo", SEED, "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2. compile with NVRTC for sm_90 (no GPU needed):" in out
    assert out.count("bytes of sm_90 code") == 6
    assert "3. verify and run: skipped, they need a CUDA GPU. no CUDA GPU is usable" in out
    assert (tmp_path / "seed" / "layer1_forward.cu").exists()


@needs_no_gpu
def test_verify_without_gpu_fails_with_the_reason(capsys):
    assert main(["verify", SEED]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is usable" in err and "run on a machine with one" in err


def test_console_script_is_installed():
    result = subprocess.run([Path(sys.executable).parent / "lstmgen", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("generate", "compile", "verify", "demo"):
        assert command in result.stdout
