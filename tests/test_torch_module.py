"""lstmgen.torch.LSTM against torch.nn.LSTM on the CPU (through the opt-in float64 reference
kernels): constructor, parameters, state_dict, errors, outputs, gradients, the custom op's
registration (opcheck), torch.compile and meta tensors. The CUDA kernels behind the same op
are checked in tests/gpu/test_torch_module.py."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: lstmgen.torch needs it")

import lstmgen.torch as lt  # noqa: E402

lt.enable_cpu_reference()

CONFIGS = [dict(input_size=3, hidden_size=4), dict(input_size=5, hidden_size=2, num_layers=3, bias=False),
           dict(input_size=2, hidden_size=3, num_layers=2, batch_first=True)]


def pair(**config):
    """lstmgen's module and torch's, float64, with the same weights."""
    ours = lt.LSTM(**config, dtype=torch.float64)
    theirs = torch.nn.LSTM(**config, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("config", CONFIGS)
def test_parameters_and_state_dict_match_torch(config):
    ours, theirs = lt.LSTM(**config), torch.nn.LSTM(**config)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    theirs.load_state_dict(ours.state_dict())  # strict, both ways
    ours.load_state_dict(theirs.state_dict())
    assert repr(ours).replace("LSTM", "", 1) == repr(theirs).replace("LSTM", "", 1)


def test_initialisation_is_torchs():
    weights = torch.cat([p.flatten() for p in lt.LSTM(10, 64, num_layers=2).parameters()])
    bound = 1 / 8
    assert weights.abs().max() <= bound and abs(weights.std().item() - bound / 3**0.5) < 0.01 * bound


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_outputs_and_gradients_match_torch(config, batched, with_state):
    ours, theirs = pair(**config)
    torch.manual_seed(0)
    shape = ((2, 5) if config.get("batch_first") else (5, 2)) if batched else (5,)
    x = torch.rand(*shape, config["input_size"], dtype=torch.float64) * 2 - 1
    state_shape = (ours.num_layers, 2, ours.hidden_size) if batched else (ours.num_layers, ours.hidden_size)
    hx = tuple(torch.rand(state_shape, dtype=torch.float64) for _ in range(2)) if with_state else None
    results = []
    for module in (ours, theirs):
        inputs = [x.clone().requires_grad_()] + ([t.clone().requires_grad_() for t in hx] if hx else [])
        output, (h_n, c_n) = module(inputs[0], tuple(inputs[1:]) if hx else None)
        (output.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()).backward()
        results.append([output, h_n, c_n, *(t.grad for t in inputs), *(p.grad for p in module.parameters())])
    for mine, expected in zip(*results):
        assert mine.shape == expected.shape
        assert torch.allclose(mine, expected, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    module = lt.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    names = [name for name, _ in module.named_parameters()]
    x = torch.rand(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.rand(2, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(x, h0, c0, *weights):
        output, (h_n, c_n) = torch.func.functional_call(module, dict(zip(names, weights)), (x, (h0, c0)))
        return output, h_n, c_n

    assert torch.autograd.gradcheck(run, (x, h0, c0, *weights))


def test_custom_op_passes_opcheck():
    x, h0, c0 = torch.rand(3, 2, 4, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64)
    weights = [torch.rand(20, 4, dtype=torch.float64, requires_grad=True), torch.rand(20, 5, dtype=torch.float64, requires_grad=True),
               torch.rand(20, dtype=torch.float64, requires_grad=True), torch.rand(20, dtype=torch.float64, requires_grad=True)]
    torch.library.opcheck(lt.lstm_layer, (x.requires_grad_(), h0, c0, *weights))


def test_torch_compile_keeps_one_graph():
    ours, _ = pair(input_size=3, hidden_size=4, num_layers=2)
    x = torch.rand(6, 2, 3, dtype=torch.float64)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break raises
    expected, _ = ours(x)
    assert torch.allclose(compiled(x)[0], expected, rtol=0, atol=1e-14)


def test_meta_tensors_give_shapes_without_kernels():
    module = lt.LSTM(3, 7, num_layers=2, batch_first=True, device="meta", dtype=torch.float32)
    output, (h_n, c_n) = module(torch.empty(4, 9, 3, device="meta"))
    assert output.shape == (4, 9, 7) and h_n.shape == c_n.shape == (2, 4, 7)


def test_dropout_between_layers_as_torch():
    ours, theirs = pair(input_size=3, hidden_size=4, num_layers=3, dropout=0.5)
    x = torch.rand(5, 2, 3, dtype=torch.float64)
    torch.manual_seed(1)
    mine = ours(x)[0]
    torch.manual_seed(1)
    expected = theirs(x)[0]
    assert torch.allclose(mine, expected, rtol=1e-10, atol=1e-12)
    ours.eval()
    theirs.eval()
    assert torch.allclose(ours(x)[0], theirs(x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("argument, message", [
    (dict(bidirectional=True), r"bidirectional=True\) is not supported yet: the nearest supported setting is bidirectional=False"),
    (dict(proj_size=2), r"proj_size=2\) is not supported yet: the nearest supported setting is proj_size=0"),
    (dict(dtype=torch.float16), r"does not support torch.float16 yet: the nearest supported dtypes are torch.float32, torch.float64"),
    (dict(dtype=torch.bfloat16), r"does not support torch.bfloat16 yet: the nearest supported dtypes are torch.float32, torch.float64"),
])
def test_unsupported_arguments_raise_not_implemented(argument, message):
    with pytest.raises(NotImplementedError, match=message):
        lt.LSTM(3, 4, **argument)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_module_converted_to_16_bits_says_so_when_called(dtype):
    module = lt.LSTM(3, 4, device="meta").to(dtype)
    with pytest.raises(NotImplementedError, match=rf"does not support {dtype} yet: .* torch.float32"):
        module(torch.empty(5, 2, 3, device="meta", dtype=dtype))


@pytest.mark.parametrize("argument, message", [
    (dict(dropout=1.5), "dropout should be a number in range"),
    (dict(hidden_size=0), "hidden_size must be a positive integer, got 0"),
    (dict(num_layers=2.0), "num_layers must be a positive integer, got 2.0"),
])
def test_invalid_arguments_raise_value_error(argument, message):
    with pytest.raises(ValueError, match=message):
        lt.LSTM(**{"input_size": 3, "hidden_size": 4, **argument})


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lt.LSTM(3, 4, dropout=0.2)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.rand(2, 3, 4, 3)), "Expected input to be 2D or 3D, got 4D instead"),
    (lambda m: m(torch.rand(5, 2, 6)), "input.size\\(-1\\) must be equal to input_size. Expected 3, got 6"),
    (lambda m: m(torch.rand(5, 2, 3, dtype=torch.float64)), "input must have the type torch.float32, got type torch.float64"),
    (lambda m: m(torch.rand(5, 2, 3), (torch.rand(1, 3, 4), torch.rand(1, 3, 4))), r"Expected hidden state size \(1, 2, 4\)"),
])
def test_bad_calls_are_named(call, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        call(lt.LSTM(3, 4))


def test_cpu_tensors_need_the_opt_in():
    script = ("import torch, lstmgen.torch as lt\n"
              "try:\n    lt.LSTM(3, 4)(torch.rand(5, 2, 3))\n"
              "except RuntimeError as error:\n    print(error)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "lstmgen.torch.LSTM runs on CUDA tensors, got input on cpu: move the module and the input with .cuda()" in out
