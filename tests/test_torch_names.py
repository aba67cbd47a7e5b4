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
