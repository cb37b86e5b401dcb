"""GPU tier for lstmgen.torch.LSTM: the CUDA kernels behind the custom op against autograd's
numerical gradients (float64) and cuDNN (float32), opcheck and torch.compile on CUDA, torch's
current stream, and DDP over two GPUs."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import lstmgen.torch as lt  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")]


def test_gradcheck_float64_on_cuda():
    module = lt.LSTM(3, 5, num_layers=2, device="cuda", dtype=torch.float64)
    names = [name for name, _ in module.named_parameters()]
    x = torch.rand(4, 3, 3, device="cuda", dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.rand(2, 3, 5, device="cuda", dtype=torch.float64, requires_grad=True) for _ in range(2))
    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(x, h0, c0, *weights):
        output, (h_n, c_n) = torch.func.functional_call(module, dict(zip(names, weights)), (x, (h0, c0)))
        return output, h_n, c_n

    assert torch.autograd.gradcheck(run, (x, h0, c0, *weights))


@pytest.mark.parametrize("batch_first", [False, True])
def test_float32_matches_cudnn(batch_first, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ours = lt.LSTM(16, 64, num_layers=2, batch_first=batch_first, device="cuda")
    theirs = torch.nn.LSTM(16, 64, num_layers=2, batch_first=batch_first, device="cuda")
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(8, 30, 16, device="cuda") * 2 - 1
    results = []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_()
        output, (h_n, c_n) = module(xi)
        (output.sum() + h_n.sum() + c_n.sum()).backward()
        results.append([output, h_n, c_n, xi.grad, *(p.grad for p in module.parameters())])
    for mine, expected in zip(*results):
        scale = expected.abs().max()
        assert (mine - expected).abs().max() <= 1e-4 * scale


def test_opcheck_and_compile_on_cuda():
    x, h0, c0 = (torch.rand(*shape, device="cuda", dtype=torch.float64) for shape in ((3, 2, 4), (2, 5), (2, 5)))
    weights = [torch.rand(*shape, device="cuda", dtype=torch.float64, requires_grad=True)
               for shape in ((20, 4), (20, 5), (20,), (20,))]
    torch.library.opcheck(lt.lstm_layer, (x.requires_grad_(), h0, c0, *weights))
    module = lt.LSTM(4, 5, device="cuda")
    compiled = torch.compile(module, fullgraph=True)
    xs = torch.rand(7, 3, 4, device="cuda")
    assert torch.allclose(compiled(xs)[0], module(xs)[0], rtol=0, atol=1e-6)


def test_runs_on_torchs_current_stream():
    module = lt.LSTM(4, 8, device="cuda")
    x = torch.rand(6, 2, 4, device="cuda")
    expected = module(x)[0]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        side.wait_stream(torch.cuda.current_stream())
        torch.cuda._sleep(100_000_000)  # x_late is written late on `side`: the wrong stream would read it early
        x_late = x * 1
        result = module(x_late)[0] * 1
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP comparison needs two GPUs")
def test_ddp_on_two_gpus_follows_the_one_gpu_curve(tmp_path):
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    curves = {}
    for gpus in (1, 2):
        out = tmp_path / f"{gpus}.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                        "-m", "lstmgen.bench.ddp_example", "--steps", "60", "--out", str(out)],
                       env=env, check=True, timeout=600)
        curves[gpus] = json.loads(out.read_text())
    one, two = curves[1]["losses"], curves[2]["losses"]
    difference = max(abs(a - b) for a, b in zip(one, two))
    # The figures for the record (pytest -rP shows them).
    print(f"DDP: median step {1e3 * curves[1]['step_seconds']:.2f} ms on 1 GPU, "
          f"{1e3 * curves[2]['step_seconds']:.2f} ms on 2 GPUs; loss curves differ by at most "
          f"{difference:.3g} (largest loss {max(one):.3g}) over {len(one)} steps")
    assert difference <= 1e-4 * max(one)


def test_outputs_live_in_torchs_memory():
    module = lt.LSTM(32, 256, device="cuda")
    x = torch.rand(100, 16, 32, device="cuda")
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        output, state = module(x)
    output_bytes = output.numel() * output.element_size()
    assert torch.cuda.memory_allocated() - before >= output_bytes
    del output, state
    # Back to torch (a library workspace may stay, but not the output and the op's temporaries).
    assert torch.cuda.memory_allocated() - before < output_bytes
