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
