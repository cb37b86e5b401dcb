"""CPU tests of the float64 reference LSTM (lstmgen.reference).

The reference is the oracle for every GPU kernel, so it is checked two independent ways:
its backward against central finite differences of its own forward, and both passes
against torch.nn.LSTM (skipped where torch is not installed).
"""
import numpy as np
import pytest

from lstmgen import reference as ref

T, B, I, H = 3, 2, 3, 4
BIAS_MODES = tuple(ref.BIAS_PARAMETERS)
EPS = 1e-6
FD_TOL = 1e-7
TORCH_TOL = 1e-10


def uniform(rng, *shape):
    return rng.uniform(-1.0, 1.0, size=shape)


def make_params(rng, bias, input_size=I, hidden_size=H):
    shapes = {"W_ih": (4 * hidden_size, input_size), "W_hh": (4 * hidden_size, hidden_size)}
    return {name: uniform(rng, *shapes.get(name, (4 * hidden_size,)))
            for name in ref.parameter_names(bias)}


def loss_weights(rng, y_shape, hidden_size=H):
    """Wy, Wh, Wc of the test loss L = sum(y*Wy) + sum(h_T*Wh) + sum(c_T*Wc)."""
    return uniform(rng, *y_shape), uniform(rng, B, hidden_size), uniform(rng, B, hidden_size)


def loss(result, Wy, Wh, Wc):
    return np.sum(result.y * Wy) + np.sum(result.h_T * Wh) + np.sum(result.c_T * Wc)


def central_difference(f, arr):
    """dF/d(arr) by central differences, perturbing arr in place (f must read it)."""
    grad = np.empty_like(arr)
    for idx in np.ndindex(arr.shape):
        orig = arr[idx]
        arr[idx] = orig + EPS
        plus = f()
        arr[idx] = orig - EPS
        minus = f()
        arr[idx] = orig
        grad[idx] = (plus - minus) / (2 * EPS)
    return grad


def assert_close(actual, expected, tol, what):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale, err_msg=what)


def check_against_fd(f, grads, arrays):
    """Every analytic gradient grads["d"+name] against central differences of f in arrays[name]."""
    for name, arr in arrays.items():
        assert grads["d" + name].shape == arr.shape, name
        assert_close(grads["d" + name], central_difference(f, arr), FD_TOL, "d" + name)


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("bias", BIAS_MODES)
def test_backward_matches_finite_differences(bias, return_sequences, with_state):
    rng = np.random.default_rng(1234)
    params = make_params(rng, bias)
    x = uniform(rng, T, B, I)
    h0, c0 = (uniform(rng, B, H), uniform(rng, B, H)) if with_state else (None, None)
    Wy, Wh, Wc = loss_weights(rng, (T, B, H) if return_sequences else (B, H))

    def f():
        return loss(ref.forward(params, x, h0, c0, return_sequences=return_sequences), Wy, Wh, Wc)

    result = ref.forward(params, x, h0, c0, return_sequences=return_sequences)
    assert result.y.shape == ((T, B, H) if return_sequences else (B, H))
    grads = ref.backward(params, result.cache, Wy, Wh, Wc)
    assert list(grads) == (["dx", "dW_ih", "dW_hh"]
                           + ["d" + n for n in ref.BIAS_PARAMETERS[bias]] + ["dh0", "dc0"])
    arrays = {"x": x, **params}
    if with_state:
        arrays.update(h0=h0, c0=c0)
    check_against_fd(f, grads, arrays)
    assert grads["dh0"].shape == grads["dc0"].shape == (B, H)


def test_stack_backward_matches_finite_differences():
    # Different widths and bias modes per layer, so a mixed-up layer index cannot pass.
    rng = np.random.default_rng(99)
    H1, H2 = 4, 5
    layers = [make_params(rng, "double", I, H1), make_params(rng, "single", H1, H2)]
    seqs = [True, False]
    x = uniform(rng, T, B, I)
    states = [(uniform(rng, B, H1), uniform(rng, B, H1)), (uniform(rng, B, H2), uniform(rng, B, H2))]
    Wy = uniform(rng, B, H2)
    state_weights = [(uniform(rng, B, h), uniform(rng, B, h)) for h in (H1, H2)]

    def f():
        results = ref.stack_forward(layers, seqs, x, states)
        return np.sum(results[-1].y * Wy) + sum(
            np.sum(r.h_T * Wh) + np.sum(r.c_T * Wc) for r, (Wh, Wc) in zip(results, state_weights))

    results = ref.stack_forward(layers, seqs, x, states)
    assert results[0].y.shape == (T, B, H1) and results[1].y.shape == (B, H2)
    grads = ref.stack_backward(layers, results, Wy, state_weights)
    check_against_fd(f, grads[0], {"x": x, **layers[0], "h0": states[0][0], "c0": states[0][1]})
    check_against_fd(f, grads[1], {**layers[1], "h0": states[1][0], "c0": states[1][1]})
    assert grads[1]["dx"].shape == (T, B, H1)


def test_single_step_matches_closed_form():
    rng = np.random.default_rng(7)
    params = make_params(rng, "double")
    x, h0, c0 = uniform(rng, 1, B, I), uniform(rng, B, H), uniform(rng, B, H)
    result = ref.forward(params, x, h0, c0)
    z = x[0] @ params["W_ih"].T + h0 @ params["W_hh"].T + params["b_ih"] + params["b_hh"]
    i, f, o = (1.0 / (1.0 + np.exp(-z[:, k * H:(k + 1) * H])) for k in (0, 1, 3))
    c1 = f * c0 + i * np.tanh(z[:, 2 * H:3 * H])
    h1 = o * np.tanh(c1)
    np.testing.assert_allclose(result.c_T, c1, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(result.h_T, h1, rtol=1e-14, atol=1e-15)
    assert result.y.shape == (1, B, H)
    np.testing.assert_array_equal(result.y[0], result.h_T)

    Wy, Wh, Wc = loss_weights(rng, (1, B, H))
    grads = ref.backward(params, result.cache, Wy, Wh, Wc)
    check_against_fd(lambda: loss(ref.forward(params, x, h0, c0), Wy, Wh, Wc), grads,
                     {"x": x, **params, "h0": h0, "c0": c0})


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_absent_initial_state_equals_zeros(return_sequences):
    rng = np.random.default_rng(5)
    params = make_params(rng, "double")
    x = uniform(rng, T, B, I)
    zeros = np.zeros((B, H))
    absent = ref.forward(params, x, return_sequences=return_sequences)
    given = ref.forward(params, x, zeros, zeros, return_sequences=return_sequences)
    for field in ("y", "h_T", "c_T"):
        np.testing.assert_array_equal(getattr(absent, field), getattr(given, field))
    Wy, Wh, Wc = loss_weights(rng, absent.y.shape)
    grads_absent = ref.backward(params, absent.cache, Wy, Wh, Wc)
    grads_given = ref.backward(params, given.cache, Wy, Wh, Wc)
    for name in grads_given:
        np.testing.assert_array_equal(grads_absent[name], grads_given[name], err_msg=name)


# --- cross-check against torch.nn.LSTM ------------------------------------------------------

def _torch():
    return pytest.importorskip(
        "torch", reason="torch is not installed: the cross-check against torch.nn.LSTM needs it "
                        "(pip install torch)")


def _load_torch_layer(torch, lstm, layer, params):
    """Copy one layer's parameters into lstm's tensors for that layer, torch's way."""
    with torch.no_grad():
        getattr(lstm, f"weight_ih_l{layer}").copy_(torch.from_numpy(params["W_ih"]))
        getattr(lstm, f"weight_hh_l{layer}").copy_(torch.from_numpy(params["W_hh"]))
        if "b" in params:  # "single": torch always adds two biases, so the second is zero
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(params["b"]))
            getattr(lstm, f"bias_hh_l{layer}").zero_()
        elif "b_ih" in params:
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(params["b_ih"]))
            getattr(lstm, f"bias_hh_l{layer}").copy_(torch.from_numpy(params["b_hh"]))


def _torch_grads(lstm, layer, bias):
    g = {"dW_ih": getattr(lstm, f"weight_ih_l{layer}").grad,
         "dW_hh": getattr(lstm, f"weight_hh_l{layer}").grad}
    if bias == "double":
        g.update(db_ih=getattr(lstm, f"bias_ih_l{layer}").grad,
                 db_hh=getattr(lstm, f"bias_hh_l{layer}").grad)
    elif bias == "single":
        g["db"] = getattr(lstm, f"bias_ih_l{layer}").grad
    return {k: v.numpy() for k, v in g.items()}


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("bias", BIAS_MODES)
def test_matches_torch_lstm(bias, return_sequences, with_state):
    torch = _torch()
    rng = np.random.default_rng(2024)
    params = make_params(rng, bias)
    x = uniform(rng, T, B, I)
    h0, c0 = (uniform(rng, B, H), uniform(rng, B, H)) if with_state else (None, None)
    Wy, Wh, Wc = loss_weights(rng, (T, B, H) if return_sequences else (B, H))

    result = ref.forward(params, x, h0, c0, return_sequences=return_sequences)
    grads = ref.backward(params, result.cache, Wy, Wh, Wc)

    lstm = torch.nn.LSTM(I, H, bias=bias != "none", dtype=torch.float64)
    _load_torch_layer(torch, lstm, 0, params)
    tx = torch.tensor(x, requires_grad=True)
    if with_state:
        th0 = torch.tensor(h0[None], requires_grad=True)
        tc0 = torch.tensor(c0[None], requires_grad=True)
        out, (hn, cn) = lstm(tx, (th0, tc0))
    else:
        out, (hn, cn) = lstm(tx)
    ty = out if return_sequences else out[-1]
    tloss = (ty * torch.from_numpy(Wy)).sum() + (hn[0] * torch.from_numpy(Wh)).sum() \
        + (cn[0] * torch.from_numpy(Wc)).sum()
    tloss.backward()

    for mine, theirs, what in ((result.y, ty, "y"), (result.h_T, hn[0], "h_T"), (result.c_T, cn[0], "c_T")):
        assert_close(mine, theirs.detach().numpy(), TORCH_TOL, what)
    expected = {"dx": tx.grad.numpy(), **_torch_grads(lstm, 0, bias)}
    if with_state:
        expected.update(dh0=th0.grad[0].numpy(), dc0=tc0.grad[0].numpy())
    for name, value in expected.items():
        assert_close(grads[name], value, TORCH_TOL, name)


@pytest.mark.parametrize("last_returns_sequences", [True, False], ids=["seq", "last"])
def test_stack_matches_torch_two_layer_lstm(last_returns_sequences):
    torch = _torch()
    rng = np.random.default_rng(77)
    layers = [make_params(rng, "double", I, H), make_params(rng, "double", H, H)]
    seqs = [True, last_returns_sequences]
    x = uniform(rng, T, B, I)
    h0, c0 = uniform(rng, 2, B, H), uniform(rng, 2, B, H)
    Wy = uniform(rng, *((T, B, H) if last_returns_sequences else (B, H)))
    Wh, Wc = uniform(rng, 2, B, H), uniform(rng, 2, B, H)

    results = ref.stack_forward(layers, seqs, x, [(h0[k], c0[k]) for k in range(2)])
    grads = ref.stack_backward(layers, results, Wy, [(Wh[k], Wc[k]) for k in range(2)])

    lstm = torch.nn.LSTM(I, H, num_layers=2, dtype=torch.float64)
    for k, params in enumerate(layers):
        _load_torch_layer(torch, lstm, k, params)
    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    out, (hn, cn) = lstm(tx, (th0, tc0))
    ty = out if last_returns_sequences else out[-1]
    tloss = (ty * torch.from_numpy(Wy)).sum() + (hn * torch.from_numpy(Wh)).sum() \
        + (cn * torch.from_numpy(Wc)).sum()
    tloss.backward()

    assert_close(results[-1].y, ty.detach().numpy(), TORCH_TOL, "y")
    assert_close(grads[0]["dx"], tx.grad.numpy(), TORCH_TOL, "dx")
    for k in range(2):
        assert_close(results[k].h_T, hn[k].detach().numpy(), TORCH_TOL, f"h_T[{k}]")
        assert_close(results[k].c_T, cn[k].detach().numpy(), TORCH_TOL, f"c_T[{k}]")
        expected = {**_torch_grads(lstm, k, "double"),
                    "dh0": th0.grad[k].numpy(), "dc0": tc0.grad[k].numpy()}
        for name, value in expected.items():
            assert_close(grads[k][name], value, TORCH_TOL, f"{name}[{k}]")


@pytest.mark.parametrize("bias", BIAS_MODES)
def test_gradient_term_sizes_are_the_root_sum_square_of_each_sums_terms(bias):
    rng = np.random.default_rng(7)
    params = make_params(rng, bias)
    x, h0, c0 = uniform(rng, T, B, I), uniform(rng, B, H), uniform(rng, B, H)
    result = ref.forward(params, x, h0, c0)
    dz = ref.gate_gradients(params, result.cache, uniform(rng, T, B, H)).dz
    sizes = ref.gradient_term_sizes(params, result.cache, dz)
    assert sorted(sizes) == sorted(["dx", "dW_ih", "dW_hh", "dh0"] + ["d" + n for n in ref.BIAS_PARAMETERS[bias]])
    # Element by element, written out as the sums they bound.
    h_prev = np.concatenate([h0[None], result.y[:-1]])
    t, b, i, g, k = 2, 1, 0, 5, 3
    assert np.isclose(sizes["dx"][t, b, i], np.sqrt(np.sum((dz[t, b] * params["W_ih"][:, i]) ** 2)))
    assert np.isclose(sizes["dW_ih"][g, i], np.sqrt(np.sum((dz[:, :, g] * x[:, :, i]) ** 2)))
    assert np.isclose(sizes["dW_hh"][g, k], np.sqrt(np.sum((dz[:, :, g] * h_prev[:, :, k]) ** 2)))
    assert np.isclose(sizes["dh0"][b, k], np.sqrt(np.sum((dz[0, b] * params["W_hh"][:, k]) ** 2)))
    for name in ref.BIAS_PARAMETERS[bias]:
        assert np.isclose(sizes["d" + name][g], np.sqrt(np.sum(dz[:, :, g] ** 2)))


def test_gate_error_sizes_drop_the_activation_derivatives():
    rng = np.random.default_rng(8)
    params = make_params(rng, "double")
    result = ref.forward(params, uniform(rng, T, B, I), uniform(rng, B, H), uniform(rng, B, H))
    gate = ref.gate_gradients(params, result.cache, uniform(rng, T, B, H))
    i, f, g, o = np.split(result.cache.gates, 4, axis=2)
    derivatives = np.concatenate([i * (1 - i), f * (1 - f), 1 - g ** 2, o * (1 - o)], axis=2)
    # dz is each size times its derivative, up to sign.
    assert np.allclose(np.abs(gate.dz), gate.dz_error_sizes * derivatives)
