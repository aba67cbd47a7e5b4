"""PyTorch's names and meanings on the public surface (API.md), compared with torch itself
where it is installed."""

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.nn.functional as F


def _torch():
    return pytest.importorskip("torch")


# ---- size() / dim() ------------------------------------------------------------------------

def test_size_is_torchs_method():
    torch = _torch()
    t = tl.zeros(2, 3, 4)
    reference = torch.zeros(2, 3, 4)
    assert t.size() == tuple(reference.size()) == (2, 3, 4)
    for dim in (0, 1, 2, -1, -3):
        assert t.size(dim) == reference.size(dim)
    assert t.dim() == reference.dim() == 3
    assert t.numel() == reference.numel() == 24
    with pytest.raises(IndexError):
        t.size(3)


# ---- F.gelu, F.layer_norm, F.scaled_dot_product_attention: torch's signatures ------------------

def test_gelu_defaults_to_the_exact_form_as_torch():
    torch = _torch()
    x = np.linspace(-6, 6, 49)
    for approximate in ("none", "tanh"):
        ours = F.gelu(tl.tensor(x), approximate=approximate).numpy()
        theirs = torch.nn.functional.gelu(torch.tensor(x), approximate=approximate).numpy()
        # torch computes 0.5 x (1 + erf(x / sqrt 2)), which cancels in the far left tail, and the
        # tanh kernel arranges its polynomial differently: equal to rounding, with an atol
        rtol = 1e-12 if approximate == "none" else 1e-7
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-14)
    np.testing.assert_allclose(F.gelu(tl.tensor(x)).numpy(),
                               torch.nn.functional.gelu(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-14)
    module = tl.nn.GELU()
    np.testing.assert_allclose(module(tl.tensor(x)).numpy(),
                               torch.nn.GELU()(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-14)
    assert repr(tl.nn.GELU(approximate="tanh")).startswith(repr(torch.nn.GELU(approximate="tanh")))
    y = F.gelu(tl.tensor(x.astype(np.float32)))
    assert y.dtype == np.float32
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(tl.tensor(x), approximate="erf")


def test_exact_gelu_first_and_second_derivatives():
    torch = _torch()
    x = np.linspace(-4, 4, 17) + 0.01
    assert tl.testing.gradcheck(F.gelu, [x])
    assert tl.testing.gradgradcheck(F.gelu, [x])
    t = tl.tensor(x, requires_grad=True)
    (g,) = tl.autograd.grad(F.gelu(t).sum(), [t], create_graph=True)
    (gg,) = tl.autograd.grad(g.sum(), [t])
    r = torch.tensor(x, requires_grad=True)
    (rg,) = torch.autograd.grad(torch.nn.functional.gelu(r).sum(), [r], create_graph=True)
    (rgg,) = torch.autograd.grad(rg.sum(), [r])
    np.testing.assert_allclose(np.asarray(g.detach()), rg.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(gg), rgg.numpy(), rtol=1e-10, atol=1e-14)


def test_layer_norm_takes_normalized_shape():
    torch = _torch()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    for shape in (5, (5,), (4, 5), [3, 4, 5]):
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        w, b = rng.standard_normal(dims), rng.standard_normal(dims)
        theirs = torch.nn.functional.layer_norm(torch.tensor(x), dims, torch.tensor(w),
                                                torch.tensor(b), eps=1e-3).numpy()
        ours = F.layer_norm(tl.tensor(x), shape, tl.tensor(w), tl.tensor(b), eps=1e-3)
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10, atol=1e-12)
        plain = F.layer_norm(input=tl.tensor(x), normalized_shape=shape)
        np.testing.assert_allclose(
            plain.numpy(), torch.nn.functional.layer_norm(torch.tensor(x), dims).numpy(),
            rtol=1e-10, atol=1e-12)
    assert tl.testing.gradcheck(lambda t, w: F.layer_norm(t, (4, 5), w), [x, w[0]])
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(tl.tensor(x), (3,))


def test_scaled_dot_product_attention_has_torchs_signature():
    torch = _torch()
    tF = torch.nn.functional
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 4, 8)) for _ in range(3))
    bool_mask = rng.random((4, 4)) < 0.7
    np.fill_diagonal(bool_mask, True)  # no row masked out entirely
    float_mask = rng.standard_normal((1, 3, 4, 4))
    tq, tk, tv = (torch.tensor(a) for a in (q, k, v))
    cases = [dict(), dict(is_causal=True), dict(scale=0.3), dict(attn_mask=bool_mask),
             dict(attn_mask=float_mask, scale=0.5)]
    for kwargs in cases:
        theirs_kwargs = {key: (torch.tensor(val) if key == "attn_mask" else val)
                         for key, val in kwargs.items()}
        ours = F.scaled_dot_product_attention(query=tl.tensor(q), key=tl.tensor(k),
                                              value=tl.tensor(v), **kwargs)
        theirs = tF.scaled_dot_product_attention(tq, tk, tv, **theirs_kwargs)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    # positional as torch: (query, key, value, attn_mask, dropout_p, is_causal, scale)
    ours = F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v), None, 0.0, True)
    np.testing.assert_allclose(ours.numpy(), tF.scaled_dot_product_attention(
        tq, tk, tv, None, 0.0, True).numpy(), rtol=1e-10, atol=1e-12)
    masked = tl.tensor(bool_mask)
    assert tl.testing.gradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=masked), [q, k, v])
    # dropout: at p=1 nothing is kept, the output is zero
    dropped = F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v),
                                             dropout_p=1.0)
    assert np.all(dropped.numpy() == 0)


# ---- names: methods, dtypes, devices, constructors -------------------------------------------

def test_methods_with_torchs_names_match_torch():
    torch = _torch()
    x = np.random.default_rng(2).standard_normal((3, 4))
    ours, theirs = tl.tensor(x), torch.tensor(x)
    pairs = [
        (ours.pow(2), theirs.pow(2)), (ours.abs().pow(ours), theirs.abs().pow(theirs)),
        (tl.pow(ours, 3), torch.pow(theirs, 3)), (tl.pow(2.0, ours), torch.pow(2.0, theirs)),
        (ours.clone(), theirs.clone()), (ours.t(), theirs.t()),
        (ours.softmax(0), theirs.softmax(0)), (ours.log_softmax(dim=1), theirs.log_softmax(dim=1)),
        (ours.t().contiguous(), theirs.t().contiguous()),
        (ours.tril(), theirs.tril()), (ours.triu(1), theirs.triu(1)),
        (tl.tril(ours, -1), torch.tril(theirs, -1)), (tl.triu(ours), torch.triu(theirs)),
        (tl.matmul(input=ours, other=ours.t()), torch.matmul(input=theirs, other=theirs.t())),
    ]
    for mine, reference in pairs:
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-12, atol=1e-12)
    assert ours.dim() == theirs.dim() == 2
    assert ours.t().contiguous().numpy().flags.c_contiguous
    assert ours.clone().numpy() is not ours.numpy()
    v = tl.tensor([1.0, 2.0])
    assert v.t() is v  # a vector's t() is itself, as torch
    with pytest.raises(RuntimeError):
        tl.zeros(2, 2, 2).t()


def test_clone_tril_and_t_pass_gradients():
    x = np.random.default_rng(3).standard_normal((3, 3))
    assert tl.testing.gradcheck(lambda t: (t.clone() * t).t().tril(-1) + t.triu(), [x])
    assert tl.testing.gradgradcheck(lambda t: (t.clone() * t).t().tril(-1) + t.triu(), [x])


def test_dtype_names():
    torch = _torch()
    for name in ("float32", "float64", "float", "double", "int64", "long", "bool", "int32",
                 "int"):
        ours = tl.zeros(2, dtype=getattr(tl, name))
        theirs = torch.zeros(2, dtype=getattr(torch, name))
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", "")), name


def test_device_is_the_cpu_and_other_devices_raise():
    torch = _torch()
    assert str(tl.device("cpu")) == str(torch.device("cpu")) == "cpu"
    assert repr(tl.device("cpu")) == repr(torch.device("cpu"))
    assert tl.device(torch.device("cpu")) == tl.device("cpu") == "cpu"
    x = tl.ones(2, 3)
    assert x.device == tl.device("cpu") and x.device.type == "cpu"
    assert x.cpu() is x and x.to("cpu") is x and x.to(tl.device("cpu")) is x
    assert x.to(torch.device("cpu")) is x
    assert x.to(tl.float64).dtype == np.float64
    assert x.to("cpu", tl.double).dtype == np.float64
    assert x.to(device="cpu", dtype=tl.long).dtype == np.int64
    assert x.to("cpu", copy=True) is not x
    tl.set_default_device("cpu")
    tl.set_default_device(None)
    for bad in ("cuda", "cuda:0", "mps"):
        for attempt in (lambda: tl.device(bad), lambda: x.to(bad), lambda: tl.zeros(2, device=bad),
                        lambda: tl.set_default_device(bad), lambda: tl.tensor([1.0], device=bad)):
            with pytest.raises(RuntimeError) as raised:
                attempt()
            assert "\n" not in str(raised.value) and "CPU" in str(raised.value)


def test_every_constructor_takes_dtype_and_device():
    makers = {
        "tensor": lambda **kw: tl.tensor([[1.0, 2.0]], **kw),
        "zeros": lambda **kw: tl.zeros(2, 3, **kw), "ones": lambda **kw: tl.ones((2, 3), **kw),
        "randn": lambda **kw: tl.randn(2, 3, **kw), "rand": lambda **kw: tl.rand(2, 3, **kw),
        "arange": lambda **kw: tl.arange(0, 6, 1, **kw), "full": lambda **kw: tl.full((2, 3), 7.0, **kw),
        "eye": lambda **kw: tl.eye(3, **kw), "empty": lambda **kw: tl.empty(2, 3, **kw),
        "linspace": lambda **kw: tl.linspace(0, 1, 5, **kw),
        "zeros_like": lambda **kw: tl.zeros_like(tl.ones(2), **kw),
        "ones_like": lambda **kw: tl.ones_like(tl.ones(2), **kw),
        "full_like": lambda **kw: tl.full_like(tl.ones(2), 3.0, **kw),
        "rand_like": lambda **kw: tl.rand_like(tl.ones(2), **kw),
        "randn_like": lambda **kw: tl.randn_like(tl.ones(2), **kw),
    }
    for name, make in makers.items():
        for where in ("cpu", tl.device("cpu"), None):
            assert make(dtype=tl.float64, device=where).dtype == np.float64, name
        with pytest.raises(RuntimeError, match="CPU"):
            make(device="cuda")
    assert tl.zeros(2).dtype == tl.ones(2).dtype == tl.randn(2).dtype == np.float32
    assert tl.zeros(2, dtype=tl.long).dtype == np.int64


def test_multinomial_draws_from_tensorlites_generator():
    torch = _torch()
    probs = tl.tensor([0.1, 0.0, 0.6, 0.3])
    tl.manual_seed(0)
    first = tl.multinomial(probs, 4000, replacement=True)
    tl.manual_seed(0)
    assert np.array_equal(first.numpy(), tl.multinomial(probs, 4000, replacement=True).numpy())
    assert first.dtype == np.int64 and first.shape == (4000,)
    frequencies = np.bincount(first.numpy(), minlength=4) / 4000
    np.testing.assert_allclose(frequencies, [0.1, 0.0, 0.6, 0.3], atol=0.04)
    rows = tl.multinomial(tl.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 5.0]]), 2)
    assert rows.shape == tuple(torch.multinomial(torch.tensor([[1.0, 1.0, 0.0]] * 2), 2).shape)
    assert sorted(rows.numpy()[0]) == [0, 1] and sorted(rows.numpy()[1]) == [1, 2]
    generator = np.random.default_rng(5)
    assert tl.multinomial(probs, 3, generator=generator).shape == (3,)
    with pytest.raises(RuntimeError):
        tl.multinomial(probs, 4)  # three categories with weight, four draws without replacement


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "**"])
def test_type_promotion_follows_torch(op):
    torch = _torch()
    import operator
    function = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                "/": operator.truediv, "**": operator.pow}[op]
    values = {"f32": ([1.5, 2.0], "float32"), "f64": ([1.5, 2.0], "float64"),
              "i64": ([1, 2], "int64"), "i32": ([1, 2], "int32"), "b": ([True, False], "bool")}
    operands = [(tl.tensor(v, dtype=getattr(tl, d)), torch.tensor(v, dtype=getattr(torch, d)))
                for v, d in values.values()]
    operands += [(tl.tensor(3.0, dtype=tl.float64), torch.tensor(3.0, dtype=torch.float64)),
                 (tl.tensor(2), torch.tensor(2)), (2, 2), (2.5, 2.5), (True, True)]
    checked = 0
    for a, ta in operands:
        for b, tb in operands:
            if not isinstance(a, tl.Tensor) and not isinstance(b, tl.Tensor):
                continue
            try:
                expected = function(ta, tb)
            except RuntimeError:
                continue  # e.g. bool - bool, int ** negative int
            if op in ("-", "**") and expected.dtype == torch.bool:  # NumPy: an error, or int8
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                result = function(a, b)
            assert str(result.dtype) == str(expected.dtype).replace("torch.", ""), (a, b)
            np.testing.assert_allclose(result.numpy().astype(np.float64),
                                       expected.numpy().astype(np.float64), rtol=1e-6)
            checked += 1
    assert checked > 40


def test_float32_with_integer_keeps_float32_and_its_gradient():
    x = tl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    n = tl.arange(3)
    y = (x ** n + x * n - n / x) / n.float().clamp(min=1) + x ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    assert np.asarray(x.grad).dtype == np.float32


# ---- tl.autograd.Function in PyTorch's form ------------------------------------------------------

def _custom_functions(base):
    """The same custom ops written against torch.autograd.Function or tl.autograd.Function."""

    class ScaledCube(base):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_backward(x)
            ctx.scale = scale
            return x ** 3 * scale

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return grad * 3 * x ** 2 * ctx.scale, None

    class ExpAndSquare(base):  # two outputs, one of them saved for backward
        @staticmethod
        def forward(ctx, x, y):
            out = x.exp() * y
            ctx.save_for_backward(x, y, out)
            return out, y * y

        @staticmethod
        def backward(ctx, grad_out, grad_square):
            x, y, out = ctx.saved_tensors
            grad_x = grad_out * out if ctx.needs_input_grad[0] else None
            grad_y = grad_out * x.exp() + 2 * y * grad_square if ctx.needs_input_grad[1] else None
            return grad_x, grad_y

    return ScaledCube, ExpAndSquare


def test_custom_function_matches_torchs_custom_function():
    torch = _torch()
    ours, theirs = _custom_functions(tl.autograd.Function), _custom_functions(torch.autograd.Function)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    tx, ty = tl.tensor(x, requires_grad=True), tl.tensor(y, requires_grad=True)
    rx, ry = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    a = ours[0].apply(tx, 1.5)
    b1, b2 = ours[1].apply(a, ty)
    loss = (b1 * b2.sin()).sum()
    ra = theirs[0].apply(rx, 1.5)
    rb1, rb2 = theirs[1].apply(ra, ry)
    rloss = (rb1 * rb2.sin()).sum()
    np.testing.assert_allclose(loss.item(), rloss.item(), rtol=1e-12)
    grads = tl.autograd.grad(loss, [tx, ty], create_graph=True)
    rgrads = torch.autograd.grad(rloss, [rx, ry], create_graph=True)
    for g, rg in zip(grads, rgrads):
        np.testing.assert_allclose(np.asarray(g.detach()), rg.detach().numpy(), rtol=1e-10)
    # second order: the backwards are Tensor code, recorded under create_graph
    second = tl.autograd.grad(sum(g.sum() for g in grads), [tx, ty])
    rsecond = torch.autograd.grad(sum(g.sum() for g in rgrads), [rx, ry])
    for g, rg in zip(second, rsecond):
        np.testing.assert_allclose(np.asarray(g), rg.numpy(), rtol=1e-9, atol=1e-12)


def test_custom_function_gradcheck_and_gradgradcheck():
    cube, exp_and_square = _custom_functions(tl.autograd.Function)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3,)), rng.standard_normal((3,))
    assert tl.testing.gradcheck(lambda t: cube.apply(t, 0.5), [x])
    assert tl.testing.gradgradcheck(lambda t: cube.apply(t, 0.5), [x])
    assert tl.testing.gradcheck(lambda a, b: exp_and_square.apply(a, b), [x, y])
    assert tl.testing.gradgradcheck(lambda a, b: exp_and_square.apply(a, b), [x, y])


def test_custom_function_ctx():
    seen = {}

    class ArgMaxAndMax(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x, label):
            seen["needs"] = ctx.needs_input_grad
            index = tl.tensor(np.argmax(x.numpy(), axis=-1))
            ctx.mark_non_differentiable(index)
            ctx.save_for_backward(x, index)
            ctx.label = label
            return x.max(dim=-1)[0], index

        @staticmethod
        def backward(ctx, grad, grad_index):
            x, index = ctx.saved_tensors
            seen["grad_index"] = grad_index
            mask = tl.tensor(np.arange(x.shape[-1]) == index.numpy()[..., None])
            return grad.unsqueeze(-1) * mask.to(x.dtype), None

    x = tl.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]], requires_grad=True)
    values, index = ArgMaxAndMax.apply(x, "label")
    assert seen["needs"] == (True, False)
    assert not index.requires_grad and index.dtype == np.int64
    assert values.requires_grad
    values.sum().backward()
    np.testing.assert_array_equal(np.asarray(x.grad), [[0, 1, 0], [0, 0, 1]])
    assert np.all(np.asarray(seen["grad_index"]) == 0)  # zeros for the output without gradient
    with tl.no_grad():
        plain, _ = ArgMaxAndMax.apply(x, "label")
    assert not plain.requires_grad
    with pytest.raises(RuntimeError, match="apply"):
        ArgMaxAndMax()
    with pytest.raises(TypeError, match="save_for_backward"):
        class Bad(tl.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(np.ones(2))
                return x
        Bad.apply(x)


def test_engine_function_base_keeps_its_name():
    from tensorlite.autograd.function import Function as EngineFunction
    assert tl.Function is EngineFunction and tl.autograd.Function is not EngineFunction
    assert issubclass(tl.ops.Add, tl.Function)
