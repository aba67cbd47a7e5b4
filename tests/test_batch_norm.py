"""Batch normalization: F.batch_norm.

* kernels: Numba (tensorlite/kernels/numba/batch_norm.py) and the NumPy reference against the
  exact result (float64 from the same inputs) within a rounding bound propagated through the
  computation, as tests/test_kernels.py does for layer norm, on Hypothesis-drawn (N, C, L)
  shapes (size 1, odd lengths, the short rows that are regrouped, non-contiguous inputs) in
  float32 and float64; and the same bytes on a second call (fixed summation order);
* the op against torch in float64, training and evaluation, with gradients, and the running
  statistics after several training steps; gradcheck and gradgradcheck in training mode;
* the argument checks.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, strategies as st

import tensorlite as tl
from tensorlite import functional as F
from tensorlite.kernels import numba as jitted, numpy as reference
from tensorlite.testing import assert_within_rounding, gradcheck, gradgradcheck
from tensorlite.testing import strategies as tst

FLOATS = [np.float32, np.float64]


# ----------------------------------------------------------------------------
# kernels against the exact result

@st.composite
def cases(draw):
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 40)))
    if shape[0] * shape[2] == 1:
        shape = (2,) + shape[1:]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng, shape, draw(st.sampled_from(FLOATS)),
            draw(st.sampled_from(["contiguous", "strided", "transposed"])), draw(st.booleans()))


def make(rng, shape, dtype, layout, scale=1.0, offset=0.0):
    N, C, L = shape
    if layout == "strided":
        return (scale * rng.standard_normal((N, C, 2 * L)) + offset).astype(dtype)[..., ::2]
    if layout == "transposed":
        return (scale * rng.standard_normal((C, N, L)) + offset).astype(dtype).swapaxes(0, 1)
    return (scale * rng.standard_normal(shape) + offset).astype(dtype)


def batch_norm_exact(x, weight, bias, bn_eps, dtype):
    """(y, mean, invstd, var) with bounds for kernels that sum in float64 and round each result
    once to dtype (rounding unit e): over the M = N * L values of each channel the float64 mean
    is within (M + 2) e64 mean|x|; var = mean((x - mean)^2) within (M + 6) e64 var plus the
    mean's error squared (the cross term vanishes); invstd's relative error is half var + eps's
    plus two roundings; y = (x - mean) * (invstd * weight) + bias adds the mean's error and three
    roundings in float64; then each output's rounding to dtype, e |value|."""
    e, e64, tiny = float(np.finfo(dtype).eps), float(np.finfo(np.float64).eps), \
        float(np.finfo(dtype).tiny)
    x, weight, bias = (None if a is None else np.asarray(a, np.float64) for a in (x, weight, bias))
    N, C, L = x.shape
    M = N * L
    weight = np.ones(C) if weight is None else weight
    bias = np.zeros(C) if bias is None else bias
    mean = x.mean(axis=(0, 2))
    centered = x - mean[:, None]
    var = (centered * centered).mean(axis=(0, 2))
    invstd = 1.0 / np.sqrt(var + bn_eps)
    y = centered * (invstd * weight)[:, None] + bias[:, None]
    mean_error = e64 * (M + 2) * np.abs(x).mean(axis=(0, 2))
    var_error = e64 * (M + 6) * var + mean_error ** 2
    relative = 0.5 * (var_error + e64 * bn_eps) / (var + bn_eps) + 2 * e64
    y_bound = ((np.abs(weight) * invstd)[:, None] * (mean_error[:, None] + np.abs(centered)
                                                     * (relative[:, None] + 3 * e64))
               + e64 * (np.abs(y) + np.abs(bias)[:, None]) + e * np.abs(y) + tiny)
    return ((y, y_bound), (mean, e * np.abs(mean) + mean_error + tiny),
            (invstd, invstd * (relative + e) + tiny), (var, e * var + var_error + tiny))


def batch_norm_backward_exact(grad_y, x, weight, mean, invstd, dtype):
    """(grad_x, grad_weight, grad_bias) with bounds, from the given mean and invstd, for
    kernels that work in float64 and round each result once to dtype: each float64 sum over a
    channel is within (M + 4) e64 of its |terms| (x - mean and the scaling add two);
    grad_x = weight invstd (g - mean(g) - xhat mean(g xhat)) adds a few per term; then the
    rounding to dtype, e |value|."""
    e, e64, tiny = float(np.finfo(dtype).eps), float(np.finfo(np.float64).eps), \
        float(np.finfo(dtype).tiny)
    grad_y, x, weight, mean, invstd = (None if a is None else np.asarray(a, np.float64)
                                       for a in (grad_y, x, weight, mean, invstd))
    N, C, L = x.shape
    M = N * L
    scale = invstd if weight is None else invstd * weight
    xhat = (x - mean[:, None]) * invstd[:, None]
    g_mean = grad_y.mean(axis=(0, 2))[:, None]
    gx_mean = (grad_y * xhat).mean(axis=(0, 2))[:, None]
    grad_x = scale[:, None] * (grad_y - g_mean - xhat * gx_mean)
    g_mean_error = e64 * (M + 4) * np.abs(grad_y).mean(axis=(0, 2))[:, None]
    gx_mean_error = e64 * (M + 8) * np.abs(grad_y * xhat).mean(axis=(0, 2))[:, None]
    grad_x_bound = (np.abs(scale)[:, None] * (
        g_mean_error + np.abs(xhat) * gx_mean_error
        + 4 * e64 * (np.abs(grad_y) + np.abs(g_mean) + np.abs(xhat * gx_mean)))
        + 2 * e64 * np.abs(grad_x) + e * np.abs(grad_x) + tiny)
    grad_weight = (grad_y * xhat).sum(axis=(0, 2))
    grad_bias = grad_y.sum(axis=(0, 2))
    return ((grad_x, grad_x_bound),
            (grad_weight, e64 * (M + 5) * np.abs(grad_y * xhat).sum(axis=(0, 2))
             + e * np.abs(grad_weight) + tiny),
            (grad_bias, e64 * (M + 2) * np.abs(grad_y).sum(axis=(0, 2))
             + e * np.abs(grad_bias) + tiny))


# (scale, offset) of x: spread about eps, a spread far below eps (the variance ~1e-8 against
# eps = 1e-5, where var must not be recovered from invstd), and a mean large against the spread
DISTRIBUTIONS = [(3.0, 1.5), (1e-4, 0.0), (1e-4, 3.0), (1e-2, 3.0)]


@given(cases(), st.sampled_from(DISTRIBUTIONS))
def test_batch_norm_kernels_within_rounding(case, distribution):
    rng, shape, dtype, layout, affine = case
    x = make(rng, shape, dtype, layout, *distribution)
    C = shape[1]
    weight = make(rng, (1, 1, C), dtype, "strided").reshape(C) if affine else None
    bias = make(rng, (1, 1, C), dtype, "contiguous").reshape(C) if affine else None
    grad = make(rng, shape, dtype, layout)
    forward = batch_norm_exact(x, weight, bias, 1e-5, dtype)
    _, mean, invstd, _ = reference.batch_norm(x, weight, bias, 1e-5)  # the backward's inputs
    backward = batch_norm_backward_exact(grad, x, weight, mean, invstd, dtype)
    for module in (reference, jitted):
        results = module.batch_norm(x, weight, bias, 1e-5)
        assert len(results) == 4
        for actual, (exact, bound), name in zip(results, forward, ("y", "mean", "invstd", "var")):
            assert actual.dtype == dtype, name
            assert_within_rounding(actual, exact, bound, f"{module.__name__} {name}")
        results = module.batch_norm_backward(grad, x, weight, mean, invstd)
        if not affine:
            assert results[1] is None and results[2] is None
            results = results[:1]
        for actual, (exact, bound), name in zip(results, backward,
                                                ("grad_x", "grad_weight", "grad_bias")):
            assert actual.dtype == dtype, name
            assert_within_rounding(actual, exact, bound, f"{module.__name__} {name}")


def test_batch_norm_bound_catches_the_unbiased_variance():
    rng = np.random.default_rng(5)
    x = make(rng, (8, 3, 20), np.float32, "contiguous", scale=3.0, offset=1.5)
    (exact, bound), _, _, _ = batch_norm_exact(x, None, None, 1e-5, np.float32)
    centered = x - x.mean(axis=(0, 2), keepdims=True)
    unbiased = centered / np.sqrt((centered * centered).sum(axis=(0, 2), keepdims=True) / 159
                                  + 1e-5)
    with pytest.raises(AssertionError, match="rounding-error bound"):
        assert_within_rounding(unbiased, exact, bound)


@pytest.mark.parametrize("shape", [(64, 32, 256), (33, 5, 1), (7, 3, 9)])
def test_batch_norm_kernels_give_the_same_bytes_twice(shape):
    rng = np.random.default_rng(2)
    x, grad = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    weight, bias = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    first = jitted.batch_norm(x, weight, bias, 1e-5)
    again = jitted.batch_norm(x.copy(), weight, bias, 1e-5)
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()
    backward = [jitted.batch_norm_backward(grad, x, weight, first[1], first[2]) for _ in range(2)]
    for a, b in zip(*backward):
        assert a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------
# the op against torch (float64)

SHAPES = st.sampled_from([(4, 3), (2, 3, 5), (3, 2, 4, 3), (1, 2, 3, 1), (5, 1, 2)])


@given(shape=SHAPES, affine=st.booleans(), seed=st.integers(0, 2**32 - 1),
       momentum=st.sampled_from([0.1, 0.5, 1.0]))
def test_batch_norm_training_matches_torch(kernel_set, shape, affine, seed, momentum):
    """Outputs and gradients, and the running statistics after three steps."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    weight = rng.standard_normal(C) if affine else None
    bias = rng.standard_normal(C) if affine else None
    ours_stats = [tl.Tensor(np.zeros(C)), tl.Tensor(np.ones(C))]
    theirs_stats = [torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)]
    for _ in range(3):
        x = 2.0 * rng.standard_normal(shape) + 0.5
        grad = rng.standard_normal(shape)
        ours_params = [tl.Tensor(p, requires_grad=True) if p is not None else None
                       for p in (x, weight, bias)]
        theirs_params = [torch.tensor(p, requires_grad=True) if p is not None else None
                         for p in (x, weight, bias)]
        ours = F.batch_norm(ours_params[0], *ours_stats, ours_params[1], ours_params[2],
                            training=True, momentum=momentum, eps=1e-5)
        theirs = TF.batch_norm(theirs_params[0], *theirs_stats, theirs_params[1],
                               theirs_params[2], training=True, momentum=momentum, eps=1e-5)
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
        ours.backward(grad)
        theirs.backward(torch.from_numpy(grad))
        for o, t in zip(ours_params, theirs_params):
            if t is not None:
                np.testing.assert_allclose(o.grad.data, t.grad.numpy(), rtol=1e-9, atol=1e-10)
        for o, t in zip(ours_stats, theirs_stats):
            np.testing.assert_allclose(o.data, t.numpy(), rtol=1e-10, atol=1e-12)


@given(shape=SHAPES, affine=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batch_norm_eval_matches_torch(shape, affine, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.standard_normal(shape)
    mean, var = rng.standard_normal(C), rng.random(C) + 0.5
    weight, bias = rng.standard_normal(C), rng.standard_normal(C)
    ours_x = tl.Tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x, requires_grad=True)
    ours_w, ours_b = (tl.Tensor(p, requires_grad=True) for p in (weight, bias))
    theirs_w, theirs_b = (torch.tensor(p, requires_grad=True) for p in (weight, bias))
    ours = F.batch_norm(ours_x, tl.Tensor(mean), tl.Tensor(var), ours_w if affine else None,
                        ours_b if affine else None, training=False)
    theirs = TF.batch_norm(theirs_x, torch.tensor(mean), torch.tensor(var),
                           theirs_w if affine else None, theirs_b if affine else None,
                           training=False)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    grad = rng.standard_normal(shape)
    ours.backward(grad)
    theirs.backward(torch.from_numpy(grad))
    pairs = [(ours_x, theirs_x)] + ([(ours_w, theirs_w), (ours_b, theirs_b)] if affine else [])
    for o, t in pairs:
        np.testing.assert_allclose(o.grad.data, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_batch_norm_float32_running_stats_and_version(kernel_set):
    rng = np.random.default_rng(0)
    running_mean = tl.Tensor(np.zeros(4, np.float32))
    running_var = tl.Tensor(np.ones(4, np.float32))
    torch_mean, torch_var = torch.zeros(4), torch.ones(4)
    for _ in range(4):
        x = (rng.standard_normal((8, 4, 3, 3)) * 2 + 1).astype(np.float32)
        y = F.batch_norm(tl.Tensor(x), running_mean, running_var, training=True)
        expected = TF.batch_norm(torch.from_numpy(x), torch_mean, torch_var, training=True)
        assert y.dtype == np.float32 and running_mean.dtype == np.float32
        np.testing.assert_allclose(y.data, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(running_mean.data, torch_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(running_var.data, torch_var.numpy(), rtol=1e-5, atol=1e-6)
    assert running_mean._version == 4


@pytest.mark.parametrize("scale, offset", [(1e-4, 0.0), (1e-4, 3.0), (3.0, 1.5)])
def test_batch_norm_running_stats_within_rounding(kernel_set, scale, offset):
    # a variance far below eps: the running variance comes from the kernel's variance, not
    # from invstd (1 / invstd^2 - eps cancels to about float32's eps * eps / var relative)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 4, 8, 8)) * scale + offset).astype(np.float32)
    running_mean, running_var = np.zeros(4, np.float32), np.ones(4, np.float32)
    F.batch_norm(tl.Tensor(x), running_mean, running_var, training=True, momentum=1.0)
    x64 = x.astype(np.float64)
    M = x.size // 4
    mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3), ddof=1)
    e, e64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    # the kernel's float64 statistics (tests' batch_norm_exact), rounded to float32 by the
    # kernel, scaled by M / (M - 1) in float64 and rounded into the float32 running buffers
    mean_error = e64 * (M + 2) * np.abs(x64).mean(axis=(0, 2, 3))
    assert_within_rounding(running_mean, mean, 2 * e * np.abs(mean) + mean_error)
    var_error = e64 * (M + 8) * var + mean_error ** 2
    assert_within_rounding(running_var, var, 2 * e * var + var_error)


# ----------------------------------------------------------------------------
# gradcheck and gradgradcheck (float64, random upstream gradient)

@given(x=tst.tensors(st.sampled_from([(3, 2), (2, 2, 3), (2, 2, 2, 2)]), min_value=-3,
                     max_value=3),
       affine=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_gradcheck_and_gradgradcheck(x, affine, seed):
    # values spread enough that the variance is not tiny against eps (finite differences)
    x = x + np.arange(x.size).reshape(x.shape) * 0.7
    rng = np.random.default_rng(seed)
    C = x.shape[1]
    inputs = [x] + ([rng.standard_normal(C), rng.standard_normal(C)] if affine else [])

    def fn(t, *params):
        return F.batch_norm(t, None, None, *params, training=True)

    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


def test_batch_norm_eval_gradgradcheck():
    rng = np.random.default_rng(1)
    mean, var = tl.Tensor(rng.standard_normal(3)), tl.Tensor(rng.random(3) + 0.5)

    def fn(t, w, b):
        return F.batch_norm(t, mean, var, w, b, training=False) ** 2

    inputs = [rng.standard_normal((2, 3, 2)), rng.standard_normal(3), rng.standard_normal(3)]
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


# ----------------------------------------------------------------------------
# argument checks

@pytest.mark.parametrize("call, message", [
    (lambda: F.batch_norm(tl.Tensor(np.zeros((1, 3))), None, None, training=True),
     "more than 1 value per channel when training, got input of shape \\(1, 3\\)"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros((1, 3, 1, 1))), None, None, training=True),
     "more than 1 value per channel"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros((2, 3))), tl.Tensor(np.zeros(4)),
                          tl.Tensor(np.ones(3)), training=True),
     "batch_norm: running_mean of shape \\(4,\\) does not match the 3 channels"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros((2, 3))), None, None,
                          weight=tl.Tensor(np.ones(4)), training=True),
     "batch_norm: weight of shape \\(4,\\)"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros((2, 3))), None, None,
                          bias=tl.Tensor(np.ones((3, 1))), training=True),
     "batch_norm: bias of shape \\(3, 1\\)"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros((2, 3))), None, None, training=False),
     "running_mean and running_var are required"),
    (lambda: F.batch_norm(tl.Tensor(np.zeros(3)), None, None, training=True),
     "expected an input of shape \\(N, C, ...\\)"),
])
def test_batch_norm_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _zeros(shape, dtype=np.float32):
    return tl.Tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call, message", [
    (lambda: F.batch_norm(_zeros((2, 3), np.int64), None, None, training=True),
     "batch_norm: expected a floating input, got int64"),
    (lambda: F.batch_norm(_zeros((2, 3), np.int32), _zeros(3), _zeros(3), training=False),
     "batch_norm: expected a floating input, got int32"),
    (lambda: F.batch_norm(_zeros((2, 3)), None, None, _zeros(3, np.float64), training=True),
     "batch_norm: input, weight, bias, running_mean and running_var must share one floating "
     "dtype, got input float32, weight float64"),
    (lambda: F.batch_norm(_zeros((2, 3), np.float64), None, None, None, _zeros(3),
                          training=True),
     "got input float64, bias float32"),
    (lambda: F.batch_norm(_zeros((2, 3)), _zeros(3, np.float64), _zeros(3, np.float64),
                          training=False),
     "got input float32, running_mean float64, running_var float64"),
])
def test_batch_norm_dtype_errors(call, message):
    """As torch, which refuses integer inputs and mixed dtypes: an integer input normalised
    to zeros, and float64 statistics turned a float32 output float64."""
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_empty_batch_matches_torch(kernel_set, training):
    """N = 0: torch returns an empty output, leaves the running statistics unchanged and
    gives zero weight and bias gradients."""
    x = np.zeros((0, 3, 5, 5), np.float32)
    weight, bias = np.full(3, 2.0, np.float32), np.ones(3, np.float32)
    stats = (np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32))
    ours = [tl.Tensor(a, requires_grad=True) for a in (x, weight, bias)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    ours_stats = [s.copy() for s in stats]
    theirs_stats = [torch.tensor(s) for s in stats]
    y = F.batch_norm(ours[0], *ours_stats, ours[1], ours[2], training=training)
    y_t = TF.batch_norm(theirs[0], *theirs_stats, theirs[1], theirs[2], training=training)
    assert y.shape == tuple(y_t.shape) and y.dtype == np.float32
    y.sum().backward()
    y_t.sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())
    for s, t in zip(ours_stats, theirs_stats):
        np.testing.assert_array_equal(s, t.numpy())
