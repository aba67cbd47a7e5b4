"""tl.func transforms and tl.autograd.grad(create_graph=True): closed forms, agreement between
the transforms (hvp = H v, jvp = J v, jacfwd = jacrev), finite differences of gradients, nesting
to third order, has_aux, and the errors a user meets first."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite import func
from tensorlite import functional as F
from tensorlite.testing import strategies as tst


def value(t):
    """A transform's result as a float64 array (it must be a Tensor)."""
    assert isinstance(t, tl.Tensor), type(t)
    return np.asarray(t.data, dtype=np.float64)


def cube(x):
    return x ** 3


# ---------------------------------------------------------------------------
# Closed forms: d/dx x^3 = 3x^2, d2 = 6x, d3 = 6
# ---------------------------------------------------------------------------

@given(x=st.floats(-3, 3))
def test_nested_func_grad_of_cube(x):
    x = np.float64(x)
    first = func.grad(cube)
    second = func.grad(func.grad(cube))
    third = func.grad(func.grad(func.grad(cube)))
    np.testing.assert_allclose(value(first(x)), 3 * x ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value(second(x)), 6 * x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value(third(x)), 6.0, rtol=1e-12)


def test_issue_example_second_derivative_of_cube_at_two_is_twelve():
    assert func.grad(func.grad(cube))(2.0).item() == pytest.approx(12.0)
    assert func.grad(func.grad(func.grad(cube)))(2.0).item() == pytest.approx(6.0)
    # a fourth derivative is exactly zero (x^3 has none), not an error
    assert func.grad(func.grad(func.grad(func.grad(cube))))(2.0).item() == 0.0


@given(x=tst.tensors(shape=(3,), min_value=-3, max_value=3))
def test_autograd_grad_with_create_graph_to_third_order(x):
    t = tl.Tensor(x, requires_grad=True)
    y = (t ** 3).sum()
    (g1,) = tl.autograd.grad(y, t, create_graph=True)
    np.testing.assert_allclose(value(g1), 3 * x ** 2, rtol=1e-12)
    (g2,) = tl.autograd.grad(g1.sum(), t, create_graph=True)
    np.testing.assert_allclose(value(g2), 6 * x, rtol=1e-12, atol=1e-12)
    (g3,) = tl.autograd.grad(g2.sum(), t)
    np.testing.assert_allclose(value(g3), np.full(3, 6.0), rtol=1e-12)


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = tl.Tensor(np.array([1.5, -2.0]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert isinstance(x.grad, tl.Tensor) and x.grad.requires_grad
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2)
    (second,) = tl.autograd.grad(x.grad.sum(), x)
    np.testing.assert_allclose(value(second), 6 * x.data)


# ---------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------

def test_hessian_of_quadratic_form_is_symmetric_part():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))  # not symmetric
    x = rng.standard_normal(4)

    def quadratic(t):
        return 0.5 * (t @ (tl.Tensor(A) @ t))

    np.testing.assert_allclose(value(func.hessian(quadratic)(x)), (A + A.T) / 2,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value(func.grad(quadratic)(x)), (A + A.T) / 2 @ x, rtol=1e-12)


MLP_SHAPES = {"w1": (4, 3), "b1": (4,), "w2": (3, 4), "b2": (3,)}  # Linear's (out, in)


def unpack(theta):
    """The MLP's parameters as views of one flat vector (so the Hessian is one matrix)."""
    params, start = {}, 0
    for name, shape in MLP_SHAPES.items():
        size = int(np.prod(shape))
        params[name] = theta[start:start + size].reshape(shape)
        start += size
    return params


N_MLP_PARAMS = sum(int(np.prod(s)) for s in MLP_SHAPES.values())


def mlp_loss(activation):
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((5, 3))
    targets = rng.integers(0, 3, size=5)

    def loss(theta):
        p = unpack(theta)
        hidden = activation(F.linear(tl.Tensor(inputs), p["w1"], p["b1"]))
        return F.cross_entropy(F.linear(hidden, p["w2"], p["b2"]), targets)
    return loss


@pytest.mark.parametrize("activation", [lambda h: h.tanh(), F.gelu], ids=["tanh", "gelu"])
def test_hessian_of_mlp_loss_equals_finite_differences_of_its_gradient(kernel_set, activation):
    loss = mlp_loss(activation)
    theta = np.random.default_rng(2).standard_normal(N_MLP_PARAMS) * 0.8
    hessian = value(func.hessian(loss)(theta))
    assert hessian.shape == (N_MLP_PARAMS, N_MLP_PARAMS)

    gradient = func.grad(loss)
    eps = 1e-5
    numeric = np.empty_like(hessian)
    for j in range(N_MLP_PARAMS):
        step = np.zeros(N_MLP_PARAMS)
        step[j] = eps
        numeric[:, j] = (value(gradient(theta + step)) - value(gradient(theta - step))) / (2 * eps)
    np.testing.assert_allclose(hessian, numeric, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-10, atol=1e-12)


def test_hvp_equals_hessian_times_vector():
    loss = mlp_loss(lambda h: h.tanh())
    rng = np.random.default_rng(3)
    theta, v = rng.standard_normal(N_MLP_PARAMS), rng.standard_normal(N_MLP_PARAMS)
    output, hessian_v = func.hvp(loss, (theta,), (v,))
    np.testing.assert_allclose(value(output), value(loss(tl.Tensor(theta))), rtol=1e-12)
    assert isinstance(hessian_v, tuple) and len(hessian_v) == 1
    expected = value(func.hessian(loss)(theta)) @ v
    np.testing.assert_allclose(value(hessian_v[0]), expected, rtol=1e-9, atol=1e-12)
    # a single Tensor primal gives a single Tensor back, as torch.autograd.functional.hvp
    _, single = func.hvp(loss, tl.Tensor(theta), tl.Tensor(v))
    np.testing.assert_allclose(value(single), expected, rtol=1e-9, atol=1e-12)


def test_hvp_with_several_primals():
    rng = np.random.default_rng(4)
    a, b, va, vb = (rng.standard_normal(3) for _ in range(4))

    def f(x, y):
        return (x * x * y).sum() + (x * y).tanh().sum()

    _, (ha, hb) = func.hvp(f, (a, b), (va, vb))
    # the full Hessian of f over the concatenation [x, y]
    def joint(z):
        return f(z[:3], z[3:])

    full = value(func.hessian(joint)(np.concatenate([a, b])))
    expected = full @ np.concatenate([va, vb])
    np.testing.assert_allclose(np.concatenate([value(ha), value(hb)]), expected, rtol=1e-10,
                               atol=1e-12)


# ---------------------------------------------------------------------------
# Jacobians, vjp and jvp against NumPy closed forms
# ---------------------------------------------------------------------------

def layer(w, x):
    return (w @ x).tanh()


def layer_jacobians(w, x):
    """d tanh(W x) / dx = diag(1 - y^2) W and d / dW[i, j] = (1 - y_i^2) x_j on row i."""
    slope = 1 - np.tanh(w @ x) ** 2
    d_x = slope[:, None] * w
    d_w = np.zeros((w.shape[0],) + w.shape)
    for i in range(w.shape[0]):
        d_w[i, i, :] = slope[i] * x
    return d_w, d_x


@pytest.fixture
def layer_inputs():
    rng = np.random.default_rng(5)
    return rng.standard_normal((3, 4)), rng.standard_normal(4)


@pytest.mark.parametrize("jacobian", [func.jacrev, func.jacfwd], ids=["jacrev", "jacfwd"])
def test_jacobians_of_a_layer(jacobian, layer_inputs):
    w, x = layer_inputs
    d_w, d_x = layer_jacobians(w, x)
    np.testing.assert_allclose(value(jacobian(layer, argnums=1)(w, x)), d_x, rtol=1e-12)
    np.testing.assert_allclose(value(jacobian(layer)(w, x)), d_w, rtol=1e-12, atol=1e-15)
    both = jacobian(layer, argnums=(0, 1))(w, x)
    assert isinstance(both, tuple) and len(both) == 2
    np.testing.assert_allclose(value(both[0]), d_w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(value(both[1]), d_x, rtol=1e-12)
    np.testing.assert_allclose(value(jacobian(layer, argnums=-1)(w, x)), d_x, rtol=1e-12)


def test_jacobian_shapes_are_output_shape_plus_input_shape():
    x = np.random.default_rng(6).standard_normal((2, 3))
    for jacobian in (func.jacrev, func.jacfwd):
        jac = value(jacobian(lambda t: t.T.exp())(x))
        assert jac.shape == (3, 2, 2, 3)
        expected = np.zeros((3, 2, 2, 3))
        for i in range(2):
            for j in range(3):
                expected[j, i, i, j] = np.exp(x[i, j])
        np.testing.assert_allclose(jac, expected, rtol=1e-12)


def test_vjp_against_closed_form(layer_inputs):
    w, x = layer_inputs
    d_w, d_x = layer_jacobians(w, x)
    v = np.random.default_rng(7).standard_normal(3)
    output, vjp_fn = func.vjp(layer, w, x)
    np.testing.assert_allclose(value(output), np.tanh(w @ x), rtol=1e-12)
    grad_w, grad_x = vjp_fn(v)
    np.testing.assert_allclose(value(grad_x), v @ d_x, rtol=1e-12)
    np.testing.assert_allclose(value(grad_w), np.tensordot(v, d_w, axes=1), rtol=1e-12)
    # vjp_fn may be called again with another cotangent
    (grad_w_again, grad_x_again) = vjp_fn(2 * v)
    np.testing.assert_allclose(value(grad_x_again), 2 * v @ d_x, rtol=1e-12)


def test_vjp_of_several_outputs_and_unused_primals():
    x, unused = np.array([1.0, 2.0]), np.array([3.0])
    (a, b), vjp_fn = func.vjp(lambda s, u: (s * 2.0, s.sum() ** 2), x, unused)
    grad_x, grad_unused = vjp_fn((np.array([1.0, -1.0]), np.array(0.5)))
    np.testing.assert_allclose(value(grad_x), [2.0 + 3.0, -2.0 + 3.0])
    np.testing.assert_array_equal(value(grad_unused), [0.0])  # zeros, as torch.func


def test_jvp_equals_jacrev_times_vector(layer_inputs):
    w, x = layer_inputs
    rng = np.random.default_rng(8)
    tangent_w, tangent_x = rng.standard_normal(w.shape), rng.standard_normal(x.shape)
    output, jvp_out = func.jvp(layer, (w, x), (tangent_w, tangent_x))
    np.testing.assert_allclose(value(output), np.tanh(w @ x), rtol=1e-12)
    jac_w, jac_x = (value(j) for j in func.jacrev(layer, argnums=(0, 1))(w, x))
    expected = jac_x @ tangent_x + np.tensordot(jac_w, tangent_w, axes=2)
    np.testing.assert_allclose(value(jvp_out), expected, rtol=1e-12, atol=1e-14)
    # a single primal needs no tuple
    _, only_x = func.jvp(lambda t: layer(w, t), x, tangent_x)
    np.testing.assert_allclose(value(only_x), jac_x @ tangent_x, rtol=1e-12)


@given(data=st.data())
def test_jacfwd_equals_jacrev_on_broadcasting_functions(data):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2, max_dims=2, max_side=3))
    a = data.draw(tst.tensors(shape_a, min_value=-2, max_value=2))
    b = data.draw(tst.tensors(shape_b, min_value=0.5, max_value=2))

    def f(x, y):
        return (x * y).sin() if hasattr(tl.Tensor, "sin") else (x * y).tanh() / y

    for argnums in (0, 1, (0, 1)):
        reverse = func.jacrev(f, argnums=argnums)(a, b)
        forward = func.jacfwd(f, argnums=argnums)(a, b)
        for r, fw in zip(*((reverse, forward) if isinstance(argnums, tuple)
                           else ((reverse,), (forward,)))):
            np.testing.assert_allclose(value(fw), value(r), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# Nesting: levels kept apart, closures, graphs reaching outer tensors
# ---------------------------------------------------------------------------

def test_levels_do_not_confuse_their_perturbations():
    # d/dx [x * d/dy (x y)] = d/dx [x * x] = 2 x (a shared node would give d/dx (x * 2x) = 4x)
    result = func.grad(lambda x: x * func.grad(lambda y: x * y)(x))(3.0)
    assert result.item() == pytest.approx(6.0)


def test_inner_transform_of_a_constant_still_differentiates_the_closure():
    # inner: d/dy (x y^2) at y = 3 is 6 x; outer: d/dx 6 x = 6
    result = func.grad(lambda x: func.grad(lambda y: x * y ** 2)(3.0))(2.0)
    assert result.item() == pytest.approx(6.0)


def test_gradient_penalty_flows_to_captured_parameters():
    """A gradient-penalty style loss: the input gradient's graph reaches the weights."""
    rng = np.random.default_rng(9)
    w = tl.Tensor(rng.standard_normal(3), requires_grad=True)
    x = rng.standard_normal(3)
    input_gradient = func.grad(lambda t: (w * t).tanh().sum())(x)  # w * (1 - tanh^2(w x))
    assert input_gradient.requires_grad
    (input_gradient ** 2).sum().backward()
    y = np.tanh(w.data * x)
    s = 1 - y ** 2
    # d/dw [w s]^2 = 2 w s (s + w ds/dw), ds/dw = -2 y s x
    expected = 2 * w.data * s * (s - 2 * w.data * y * s * x)
    np.testing.assert_allclose(w.grad, expected, rtol=1e-10)


def test_results_without_an_outer_level_are_constants():
    x = np.array([1.0, 2.0])
    gradient, loss = func.grad_and_value(lambda t: (t ** 2).sum())(x)
    assert not gradient.requires_grad and not loss.requires_grad
    output, vjp_fn = func.vjp(lambda t: t.exp(), x)
    assert not output.requires_grad and not vjp_fn(np.ones(2))[0].requires_grad


def test_hessian_nested_in_grad_gives_third_derivatives():
    # f = sum x^4: H = diag(12 x^2); d/dx sum(H) = 24 x
    x = np.array([0.5, -1.5, 2.0])
    result = func.grad(lambda t: func.hessian(lambda s: (s ** 4).sum())(t).sum())(x)
    np.testing.assert_allclose(value(result), 24 * x, rtol=1e-12)


def test_hvp_and_jvp_nest_inside_grad():
    x = np.array([0.3, -0.7])
    v = np.array([1.0, 2.0])
    # hvp of sum x^3 is 6 x v; its sum's gradient is 6 v
    result = func.grad(lambda t: func.hvp(lambda s: (s ** 3).sum(), t, v)[1].sum())(x)
    np.testing.assert_allclose(value(result), 6 * v, rtol=1e-12)
    # jvp of exp is exp(x) v; d/dx sum = exp(x) v
    result = func.grad(lambda t: func.jvp(lambda s: s.exp(), (t,), (v,))[1].sum())(x)
    np.testing.assert_allclose(value(result), np.exp(x) * v, rtol=1e-12)


# ---------------------------------------------------------------------------
# argnums, has_aux, input conversion
# ---------------------------------------------------------------------------

def test_argnums_tuple_and_negative():
    def f(a, b, c):
        return (a * b * b * c).sum()

    a, b, c = np.array([1.0, 2.0]), np.array([3.0, -1.0]), 0.5
    grad_a, grad_c = func.grad(f, argnums=(0, 2))(a, b, c)
    np.testing.assert_allclose(value(grad_a), b * b * c)
    np.testing.assert_allclose(value(grad_c), np.sum(a * b * b), rtol=1e-6)
    np.testing.assert_allclose(value(func.grad(f, argnums=-2)(a, b, c)), 2 * a * b * c)


def test_has_aux():
    def f(x):
        loss = (x ** 2).sum()
        return loss, {"norm": float(np.sqrt(loss.item()))}

    x = np.array([3.0, 4.0])
    gradient, aux = func.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(value(gradient), 2 * x)
    assert aux == {"norm": 5.0}
    gradient, (loss, aux) = func.grad_and_value(f, has_aux=True)(x)
    assert loss.item() == 25.0 and aux["norm"] == 5.0
    output, vjp_fn, aux = func.vjp(lambda t: (t * 2.0, "extra"), x, has_aux=True)
    assert aux == "extra"
    np.testing.assert_allclose(value(vjp_fn(np.ones(2))[0]), [2.0, 2.0])


def test_arrays_numbers_and_tensors_are_accepted_alike():
    f = func.grad(lambda t: (t * t).sum())
    for x in (np.array([1.0, -2.0]), tl.Tensor(np.array([1.0, -2.0])),
              tl.Tensor(np.array([1.0, -2.0]), requires_grad=True)):
        np.testing.assert_allclose(value(f(x)), [2.0, -4.0])
    assert func.grad(cube)(2).item() == 12.0  # an int becomes a float tensor
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    f(x)
    assert x.grad is None  # the transform never writes into the caller's .grad


def test_float32_in_float32_out():
    x = np.array([0.5, 1.5], dtype=np.float32)
    assert func.grad(lambda t: t.tanh().sum())(x).dtype == np.float32
    assert func.hessian(lambda t: (t ** 3).sum())(x).dtype == np.float32


# ---------------------------------------------------------------------------
# Errors: one clear line that says what to do
# ---------------------------------------------------------------------------

def test_grad_of_non_scalar_output_is_an_error():
    with pytest.raises(ValueError, match=r"one-element.*shape \(2,\).*jacrev"):
        func.grad(lambda t: t * 2.0)(np.ones(2))
    with pytest.raises(TypeError, match="must return a Tensor"):
        func.grad(lambda t: 3.0)(np.ones(2))


def test_non_tensor_input_is_an_error():
    with pytest.raises(TypeError, match="tl.func.grad: argument 0 must be a Tensor.*got str"):
        func.grad(lambda t: t.sum())("1.0")
    with pytest.raises(TypeError, match="tl.func.jacrev: argument 0 .*got set"):
        func.jacrev(lambda t: t)({1.0, 2.0})
    # in a pytree the message names the leaf
    with pytest.raises(TypeError, match=r"tl.func.grad: argument 0\['b'\]\[1\] must be .*got str"):
        func.grad(lambda p: p["a"].sum())({"a": np.ones(2), "b": [np.ones(1), "x"]})
    with pytest.raises(TypeError, match="tl.func.vjp: argument 1 .*got NoneType"):
        func.vjp(lambda a, b: a, np.ones(1), None)


def test_argnums_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="argnums=2 is out of range for f called with 2"):
        func.grad(lambda a, b: (a * b).sum(), argnums=2)(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="argnums=-3"):
        func.jacrev(lambda a, b: a * b, argnums=(0, -3))(np.ones(1), np.ones(1))
    with pytest.raises(TypeError, match="argnums must be an int"):
        func.grad(lambda a: a.sum(), argnums=0.0)(np.ones(1))


def test_shape_mismatches_are_errors():
    with pytest.raises(ValueError, match=r"tl.func.jvp: tangents 0 has shape \(3,\)"):
        func.jvp(lambda t: t * 2.0, (np.ones(2),), (np.ones(3),))
    with pytest.raises(ValueError, match=r"tl.func.vjp: cotangents 0 has shape"):
        func.vjp(lambda t: t * 2.0, np.ones(2))[1](np.ones(3))
    with pytest.raises(ValueError, match="2 tangents for 1 primals"):
        func.hvp(lambda t: t.sum(), (np.ones(2),), (np.ones(2), np.ones(2)))


def test_has_aux_without_a_pair_is_an_error():
    with pytest.raises(TypeError, match=r"has_aux=True.*pair"):
        func.grad(lambda t: t.sum(), has_aux=True)(np.ones(2))


# ---------------------------------------------------------------------------
# Pytrees of parameters (dicts, lists, tuples), against torch.func in float64
# ---------------------------------------------------------------------------

def _tree_map(fn, tree):
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tree_map(fn, v) for v in tree)
    return fn(tree)


def _assert_same_tree(ours, theirs):
    """Same nesting, same keys and order, and the same values (float64, tight)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), (ours, theirs)
        for k in theirs:
            _assert_same_tree(ours[k], theirs[k])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            _assert_same_tree(a, b)
    else:
        np.testing.assert_allclose(value(ours), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def _params(rng):
    return {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2),
            "extra": [rng.standard_normal(2), (rng.standard_normal(()),)]}


def _loss(lib, params, x):
    h = (x @ params["w"] + params["b"]).tanh()
    scale, = params["extra"][1]
    return ((h * params["extra"][0]).sum() * scale) ** 2


def _both(params_np):
    import torch
    return (_tree_map(lambda a: tl.tensor(a, dtype=tl.float64), params_np),
            _tree_map(lambda a: torch.tensor(a, dtype=torch.float64), params_np))


def test_grad_and_vjp_of_a_dict_of_parameters_match_torch_func():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours, theirs = _both(_params(rng))
    x = rng.standard_normal((4, 3))
    xt = torch.tensor(x)
    _assert_same_tree(func.grad(lambda p: _loss(tl, p, tl.tensor(x)))(ours),
                      torch.func.grad(lambda p: _loss(torch, p, xt))(theirs))
    g, v = func.grad_and_value(lambda p, s: _loss(tl, p, tl.tensor(x)) * s, argnums=(0, 1))(
        ours, tl.tensor(2.0, dtype=tl.float64))
    g_t, v_t = torch.func.grad_and_value(lambda p, s: _loss(torch, p, xt) * s, argnums=(0, 1))(
        theirs, torch.tensor(2.0, dtype=torch.float64))
    _assert_same_tree(g, g_t)
    _assert_same_tree(v, v_t)
    # vjp with a dict output and a dict of cotangents
    out, vjp_fn = func.vjp(lambda p: {"h": p["w"].tanh(), "s": p["b"] * 3.0}, ours)
    out_t, vjp_fn_t = torch.func.vjp(lambda p: {"h": p["w"].tanh(), "s": p["b"] * 3.0}, theirs)
    _assert_same_tree(out, out_t)
    cot = {"h": rng.standard_normal((3, 2)), "s": rng.standard_normal(2)}
    ours_cot, theirs_cot = _both(cot)
    _assert_same_tree(vjp_fn(ours_cot), vjp_fn_t(theirs_cot))


def test_model_parameters_as_a_dict_through_functional_call():
    torch = pytest.importorskip("torch")
    tl.manual_seed(0)
    model = tl.nn.Linear(3, 2).double()
    params = dict(model.named_parameters())
    x = tl.tensor(np.random.default_rng(1).standard_normal((5, 3)))

    def loss(p):
        return (func.functional_call(model, p, (x,)) ** 2).mean()

    grads = func.grad(loss)(params)
    assert list(grads) == ["weight", "bias"]
    reference = torch.nn.Linear(3, 2).double()
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in params.items()})
    theirs = torch.func.grad(lambda p: (torch.func.functional_call(
        reference, p, (torch.tensor(x.numpy()),)) ** 2).mean())(dict(reference.named_parameters()))
    _assert_same_tree(grads, theirs)
    # the module's own parameters are untouched
    assert model.weight is params["weight"] and model.weight.grad is None


def test_jvp_jacobians_hessian_and_hvp_of_pytrees_match_torch_func():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p_np = {"a": rng.standard_normal(2), "b": [rng.standard_normal(3)]}
    t_np = {"a": rng.standard_normal(2), "b": [rng.standard_normal(3)]}
    (p, t), (p_t, t_t) = zip(_both(p_np), _both(t_np))

    def f(lib, q):
        return {"u": (q["a"] * q["b"][0][:2]).sin(), "v": (q["b"][0] ** 2).sum()}

    def scalar(lib, q):
        return (q["a"].sin() * q["b"][0][1:]).sum() * q["b"][0].exp().sum()

    _assert_same_tree(func.jvp(lambda q: f(tl, q), (p,), (t,)),
                      torch.func.jvp(lambda q: f(torch, q), (p_t,), (t_t,)))
    _assert_same_tree(func.jacrev(lambda q: f(tl, q))(p), torch.func.jacrev(lambda q: f(torch, q))(p_t))
    _assert_same_tree(func.jacfwd(lambda q: f(tl, q))(p), torch.func.jacrev(lambda q: f(torch, q))(p_t))
    _assert_same_tree(func.hessian(lambda q: scalar(tl, q))(p),
                      torch.func.hessian(lambda q: scalar(torch, q))(p_t))
    value_, hv = func.hvp(lambda q: scalar(tl, q), p, t)
    _, hv_t = torch.func.jvp(torch.func.grad(lambda q: scalar(torch, q)), (p_t,), (t_t,))
    _assert_same_tree(hv, hv_t)
    with pytest.raises(ValueError, match="tangents 0 must have the structure of primal 0"):
        func.jvp(lambda q: f(tl, q), (p,), ({"a": t["a"]},))


def test_a_list_argument_is_a_pytree_and_argnums_tuples_keep_each_structure():
    a, b = np.array([1.0, 2.0]), np.array([3.0])
    grads = func.grad(lambda xs, y: (xs[0] * xs[1][0].sum() * y).sum(), argnums=(0, 1))(
        [tl.tensor(a), (tl.tensor(b),)], tl.tensor(2.0, dtype=tl.float64))
    assert isinstance(grads, tuple) and isinstance(grads[0], list) and isinstance(grads[0][1], tuple)
    np.testing.assert_allclose(value(grads[0][0]), [6.0, 6.0])
    np.testing.assert_allclose(value(grads[0][1][0]), [6.0])
    np.testing.assert_allclose(value(grads[1]), 9.0)
    with pytest.raises(ValueError, match="argument 0 holds no tensor"):
        func.grad(lambda d: tl.tensor(1.0))({})
