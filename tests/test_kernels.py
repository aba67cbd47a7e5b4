"""Both kernel sets compute the math they state, to within rounding.

Every kernel of tensorlite/kernels/numba/ and its twin in tensorlite/kernels/numpy/ are checked on
Hypothesis-drawn shapes (odd sizes, size 1), both float dtypes and non-contiguous inputs
(strided slices, transposed views), plus the edge cases each kernel is known for. Each
result is compared with the exact result, the reference math evaluated in float64 on the
same inputs, within a bound on its rounding error derived from the computation
(tensorlite.testing.rounding_bound): it grows with the length of each sum and the
magnitudes of its terms, and is propagated through the steps of softmax, attention and
layer norm, so no valid draw can exceed it, whatever the sizes, scales and cancellations.
A fixed tolerance did not hold: a float32 attention output drawn in CI was off by 5.8e-5
relative against an rtol of 2e-5. The reference kernels themselves are checked against
hand-written loops where their meaning is not a one-line NumPy identity (AdamW, the causal
mask, embedding scatter).
"""

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tensorlite import kernels
from tensorlite.kernels import numba as jitted, numpy as reference
from tensorlite.testing import assert_within_rounding, rounding_bound

# The module whose globals linear_backward reads (the package's `matmul` is the function)
jitted_matmul = importlib.import_module("tensorlite.kernels.numba.matmul")

FLOATS = [np.float32, np.float64]
LAYOUTS = ["contiguous", "strided", "transposed"]


# ----------------------------------------------------------------------------
# helpers

def make_array(rng, shape, dtype, layout, scale=1.0):
    """A standard-normal array of `shape` and `dtype`, stored in the given layout:
    contiguous, every other element of a wider array ('strided'), or a view whose
    last two axes are swapped ('transposed'; needs ndim >= 2)."""
    shape = tuple(shape)
    if layout == "strided":
        wide = shape[:-1] + (2 * shape[-1],)
        return (scale * rng.standard_normal(wide)).astype(dtype)[..., ::2]
    if layout == "transposed" and len(shape) >= 2:
        swapped = shape[:-2] + (shape[-1], shape[-2])
        return np.swapaxes((scale * rng.standard_normal(swapped)).astype(dtype), -1, -2)
    return (scale * rng.standard_normal(shape)).astype(dtype)


@st.composite
def cases(draw, min_dims=1, max_dims=3, max_side=9, max_last=70):
    """(rng, shape, dtype, layout) with a short-ish shape and an odd-friendly last axis."""
    lead = draw(st.lists(st.integers(1, max_side), min_size=min_dims - 1, max_size=max_dims - 1))
    last = draw(st.integers(1, max_last))
    dtype = draw(st.sampled_from(FLOATS))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, tuple(lead) + (last,), dtype, layout


# ----------------------------------------------------------------------------
# exact results and the rounding error allowed
#
# Each *_exact function takes a kernel's inputs and returns its exact outputs (float64 from
# the same input values) with a bound on the rounding error of any implementation in
# `dtype`. The bounds are written in units of eps = 2u (u the unit roundoff), twice the
# first-order error analysis of the reference formulas and the jitted loops, so they also
# cover the float64 reference itself when the kernel computes in float64. Where a step's
# error grows through a later step, the bound is propagated (relative error of a product,
# absolute error of a sum), with |terms| in place of the terms. "+ tiny" (the smallest
# normal number) allows for results that underflow; float32's polynomial exp is within
# 2.5 eps (test_fast_exp_float32_relative_error).


def wide(*arrays):
    """The arrays in float64 (exact copies of float32 values)."""
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def eps_tiny(dtype):
    info = np.finfo(dtype)
    return float(info.eps), float(info.tiny)


def check(actual, exact, bound, dtype, what=""):
    """`actual` has `dtype` and lies within `bound` of `exact`, elementwise."""
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, not {np.dtype(dtype)}"
    assert_within_rounding(actual, exact, bound, what)


def matmul_exact(a, b, dtype):
    """a @ b: k products summed per element, so k + 1 roundings of at most |a| @ |b|."""
    a, b = wide(a, b)
    return a @ b, rounding_bound(np.abs(a) @ np.abs(b), a.shape[-1] + 1, dtype)


def sum_exact(x, axis, dtype):
    x, = wide(x)
    return x.sum(axis=axis), rounding_bound(np.abs(x).sum(axis=axis), x.shape[axis] + 1, dtype)


def softmax_exact(x, dtype):
    """Each exponent x - max is rounded, so e_j = exp(x_j - max) is off by u |x_j - max|
    relative, and by 2.5 eps more in the exponential; the row sum adds n roundings and
    the average of the exponents' errors, the division one more."""
    x, = wide(x)
    y = reference.softmax(x)
    shift = np.abs(x - x.max(axis=-1, keepdims=True))
    n = x.shape[-1]
    relative = shift + (y * shift).sum(axis=-1, keepdims=True) + n + 12
    return y, rounding_bound(y * relative, 1, dtype)


def softmax_backward_exact(y, grad, dtype):
    """y * (g - sum(g * y)): the dot product's error, then a subtraction and a product."""
    y, grad = wide(y, grad)
    dot = (grad * y).sum(axis=-1, keepdims=True)
    exact = y * (grad - dot)
    n = y.shape[-1]
    magnitude = (y * ((n + 1) * np.abs(grad * y).sum(axis=-1, keepdims=True) + np.abs(grad)
                      + np.abs(dot)) + np.abs(exact))
    return exact, rounding_bound(magnitude, 1, dtype)


def log_softmax_exact(x, dtype):
    """x - max - log(sum(exp(x - max))): the sum's relative error becomes the log's
    absolute error; the exponents, the log, the shift and the result are each rounded."""
    x, = wide(x)
    y = reference.log_softmax(x)
    row_max = x.max(axis=-1, keepdims=True)
    shift = np.abs(x - row_max)
    log_total = np.log(np.exp(x - row_max).sum(axis=-1, keepdims=True))
    p = np.exp(y)
    n = x.shape[-1]
    magnitude = (shift + (p * shift).sum(axis=-1, keepdims=True) + n + 12 + np.abs(log_total)
                 + np.abs(row_max + log_total) + np.abs(y))
    return y, rounding_bound(magnitude, 1, dtype)


def log_softmax_backward_exact(y, grad, dtype):
    """g - exp(y) * sum(g): the sum's error times exp(y), plus the product and the
    subtraction (exp(y) within 2.5 eps)."""
    y, grad = wide(y, grad)
    p = np.exp(y)
    total = grad.sum(axis=-1, keepdims=True)
    exact = grad - p * total
    n = y.shape[-1]
    magnitude = (p * ((n + 1) * np.abs(grad).sum(axis=-1, keepdims=True) + 6 * np.abs(total))
                 + np.abs(grad) + np.abs(exact))
    return exact, rounding_bound(magnitude, 1, dtype)


def attention_exact(q, k, v, scale, is_causal, grad, dtype):
    """(out, logsumexp), (grad_q, grad_k, grad_v) of attention, each with its bound.

    A score s = scale * q.k is off by (D + 2) eps * scale * |q|.|k|. The row max cancels
    out of the probabilities, so p_j = exp(s_j - lse) is off relative by the error of s_j
    plus the p-weighted average of the scores' errors (the logsumexp's error), plus the
    rounding of the shifted exponents, the row sum and the division. Backward rebuilds p
    from the logsumexp it is given (within the forward's bound), and the five products
    and the softmax backward each add their rounding to the errors they inherit."""
    eps, tiny = eps_tiny(dtype)
    scale = float(np.dtype(dtype).type(scale))  # what the kernels multiply by
    q, k, v, grad = wide(q, k, v, grad)
    n_query, n_key, dim = q.shape[-2], k.shape[-2], q.shape[-1]
    visible = (reference._causal_mask(n_query, n_key) if is_causal
               else np.ones((n_query, n_key), bool))
    k_t, v_t = np.swapaxes(k, -1, -2), np.swapaxes(v, -1, -2)
    scores = np.where(visible, scale * (q @ k_t), -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(scores - row_max).sum(axis=-1, keepdims=True))
    lse = row_max + log_total
    p = np.exp(scores - lse)  # 0 where masked
    shift = np.where(visible, np.abs(scores - row_max), 0.0)
    score_error = np.where(visible, eps * (dim + 2) * scale * (np.abs(q) @ np.abs(k_t)), 0.0)
    n = visible.sum(axis=-1, keepdims=True)
    average_error = (p * score_error).sum(axis=-1, keepdims=True)
    average_shift = (p * shift).sum(axis=-1, keepdims=True)
    p_error = p * (score_error + average_error + eps * (shift + average_shift + n + 12)) + tiny
    out = p @ v
    out_bound = p_error @ np.abs(v) + eps * (n_key + 1) * (p @ np.abs(v)) + tiny
    lse_bound = (average_error
                 + eps * (average_shift + n + 12 + np.abs(log_total) + np.abs(lse)))[..., 0]
    forward = ((out, out_bound), (lse[..., 0], lse_bound))

    # backward, from a logsumexp within lse_bound of the exact one
    p_error = p * (score_error + lse_bound[..., None]
                   + eps * (np.where(visible, np.abs(scores - lse), 0.0) + 4)) + tiny
    grad_p = grad @ v_t
    grad_p_error = eps * (dim + 1) * (np.abs(grad) @ np.abs(v_t))
    row_dot = (p * grad_p).sum(axis=-1, keepdims=True)
    row_dot_error = ((p_error * np.abs(grad_p) + p * grad_p_error).sum(axis=-1, keepdims=True)
                     + eps * (n_key + 1) * (p * np.abs(grad_p)).sum(axis=-1, keepdims=True))
    grad_scores = scale * p * (grad_p - row_dot)
    grad_scores_size = scale * p * (np.abs(grad_p) + np.abs(row_dot))
    grad_scores_error = scale * (p_error * np.abs(grad_p - row_dot)
                                 + p * (grad_p_error + row_dot_error)) + 3 * eps * grad_scores_size
    backward = (
        (grad_scores @ k, grad_scores_error @ np.abs(k)
         + eps * (n_key + 1) * (grad_scores_size @ np.abs(k)) + tiny),
        (np.swapaxes(grad_scores, -1, -2) @ q, np.swapaxes(grad_scores_error, -1, -2) @ np.abs(q)
         + eps * (n_query + 1) * (np.swapaxes(grad_scores_size, -1, -2) @ np.abs(q)) + tiny),
        (np.swapaxes(p, -1, -2) @ grad, np.swapaxes(p_error, -1, -2) @ np.abs(grad)
         + eps * (n_query + 1) * (np.swapaxes(p, -1, -2) @ np.abs(grad)) + tiny),
    )
    return forward, backward


def layer_norm_exact(x, weight, bias, ln_eps, dtype):
    """(y, mean, rstd) with bounds. The mean is a sum of n terms; the variance's relative
    error is n + 4 roundings (first order, the mean's error drops out of it) and reaches
    rstd halved; y then adds the mean's error to each deviation x - mean."""
    eps, tiny = eps_tiny(dtype)
    x, weight, bias = wide(x, weight, bias)
    n = x.shape[-1]
    weight = np.ones(n) if weight is None else weight
    bias = np.zeros(n) if bias is None else bias
    mean = x.mean(axis=-1)
    centered = x - mean[:, None]
    var = (centered * centered).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + ln_eps)
    y = centered * rstd[:, None] * weight + bias
    mean_error = eps * (n + 2) * np.abs(x).mean(axis=-1)
    rstd_relative = (eps * (0.5 * (n + 4) * var + 0.5 * ln_eps) + mean_error ** 2) / (var + ln_eps)
    rstd_relative += 3 * eps
    y_bound = (np.abs(weight) * rstd[:, None] * (mean_error[:, None] + np.abs(centered)
                                                 * (rstd_relative[:, None] + 2 * eps))
               + eps * (np.abs(y) + np.abs(bias)) + tiny)
    return (y, y_bound), (mean, mean_error + tiny), (rstd, rstd * rstd_relative + tiny)


def layer_norm_backward_exact(grad_y, x, weight, mean, rstd, dtype):
    """(grad_x, grad_weight, grad_bias) with bounds, from the given mean and rstd: xhat is
    two roundings off, the row means n + 2 (and what xhat brings), the rest a few more."""
    eps, tiny = eps_tiny(dtype)
    grad_y, x, weight, mean, rstd = wide(grad_y, x, weight, mean, rstd)
    n_rows, n = x.shape
    weight = np.ones(n) if weight is None else weight
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = grad_y * weight
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    grad_x = rstd[:, None] * (g - g_mean - xhat * gx_mean)
    xhat_error = 2 * eps * np.abs(xhat)
    g_mean_error = eps * (n + 2) * np.abs(g).mean(axis=-1, keepdims=True)
    gx_mean_error = eps * (n + 5) * np.abs(g * xhat).mean(axis=-1, keepdims=True)
    grad_x_bound = (rstd[:, None] * (eps * np.abs(g) + g_mean_error + xhat_error * np.abs(gx_mean)
                                     + np.abs(xhat) * gx_mean_error
                                     + 2 * eps * (np.abs(g) + np.abs(g_mean)
                                                  + np.abs(xhat * gx_mean)))
                    + eps * np.abs(grad_x) + tiny)
    return ((grad_x, grad_x_bound),
            ((grad_y * xhat).sum(axis=0),
             rounding_bound(np.abs(grad_y * xhat).sum(axis=0), n_rows + 3, dtype)),
            sum_exact(grad_y, 0, dtype))


def gelu_parts(x):
    """u = sqrt(2/pi) (x + 0.044715 x^3), s = (1 + tanh u) / 2 and du/dx, in float64."""
    inner = reference.GELU_SCALE * (x + reference.GELU_CUBIC * x ** 3)
    s = 0.5 * (1.0 + np.tanh(inner))
    d_inner = reference.GELU_SCALE * (1.0 + 3.0 * reference.GELU_CUBIC * x * x)
    return inner, s, d_inner


def gelu_exact(x, dtype):
    """y = x s. An error of u's few roundings grows by |u| (1 - s) through exp or tanh;
    1 + tanh u loses up to eps |x| where it cancels (the reference, for u << 0)."""
    x, = wide(x)
    inner, s, _ = gelu_parts(x)
    y = x * s
    magnitude = np.abs(y) * ((1 - s) * (6 * np.abs(inner) + 4) + 4) + np.abs(x)
    return y, rounding_bound(magnitude, 1, dtype)


def gelu_backward_exact(x, grad, dtype):
    """g (s + 2 x s (1 - s) du/dx): 1 - s (or 1 - tanh^2 u) is off by a few eps absolute
    where s is near 1, by |u| s (1 - s) eps through s, and x du/dx multiplies that."""
    x, grad = wide(x, grad)
    inner, s, d_inner = gelu_parts(x)
    slope_term = 2 * x * s * (1 - s) * d_inner
    local = s + slope_term
    exact = grad * local
    local_error = (np.abs(x) * d_inner * (s * (1 - s) * (12 * np.abs(inner) + 8) + 6)
                   + 2 * np.abs(slope_term) + s * (1 - s) * (6 * np.abs(inner) + 4) + 2 * s + 2
                   + np.abs(local))
    return exact, rounding_bound(np.abs(grad) * local_error + np.abs(exact), 1, dtype)


def logsumexp_rows_exact(logits, dtype):
    """logsumexp per row (the row's max plus the log of the shifted sum) with its bound."""
    logits, = wide(logits)
    row_max = logits.max(axis=-1, keepdims=True)
    finite_max = np.where(np.isfinite(row_max), row_max, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_total = np.log(np.exp(logits - finite_max).sum(axis=-1, keepdims=True))
        lse = finite_max + log_total
        p = np.exp(logits - lse)
        shift = np.where(p > 0, np.abs(logits - finite_max), 0.0)
    n = logits.shape[-1]
    magnitude = ((p * shift).sum(axis=-1, keepdims=True) + n + 12
                 + np.abs(np.where(np.isfinite(log_total), log_total, 0.0))
                 + np.abs(np.where(np.isfinite(lse), lse, 0.0)))
    return lse[:, 0], rounding_bound(magnitude[:, 0], 1, dtype)


@pytest.fixture(autouse=True)
def numba_kernels():
    """Run with the Numba kernel set (and its threading policy) active."""
    previous = kernels.active()
    kernels.use("numba")
    yield
    kernels.use(previous)


# ----------------------------------------------------------------------------
# the bounds and the check themselves

def test_within_rounding_reports_the_worst_element():
    exact = np.array([[1.0, 2.0], [3.0, -np.inf]])
    bound = np.full((2, 2), 1e-6)
    assert assert_within_rounding(np.array([[1.0, 2.0000005], [3.0, -np.inf]]), exact,
                                  bound) == pytest.approx(0.5)
    message = r"2 of 4 elements .* worst at index \(1, 0\): actual=3.001, exact=3.0"
    with pytest.raises(AssertionError, match=message):
        assert_within_rounding(np.array([[1.0, 2.0001], [3.001, -np.inf]]), exact, bound)
    with pytest.raises(AssertionError, match="1 of 4"):  # NaN is never within a bound
        assert_within_rounding(np.array([[np.nan, 2.0], [3.0, -np.inf]]), exact, bound)
    with pytest.raises(AssertionError, match="1 of 4"):  # nor a wrong infinity
        assert_within_rounding(np.array([[1.0, 2.0], [3.0, np.inf]]), exact, np.inf)
    with pytest.raises(AssertionError, match=r"shape \(4,\)"):
        assert_within_rounding(exact.reshape(4), exact, bound)
    assert rounding_bound(np.array([0.0, 2.0]), 3, np.float32)[1] == pytest.approx(
        3 * 2.0 * np.finfo(np.float32).eps)


def test_bounds_catch_near_misses():
    """A bound loose enough to hide a real mistake would make the checks below vacuous.
    Each of these float32 near misses, wrong by far less than 1%, must fail its check: a
    causal mask one key too wide, scores scaled by 1 + 1e-4 (a scale rounded to half
    precision), the erf GELU for the tanh one, the unbiased variance in layer norm, one
    term of each dot product dropped, AdamW's bias correction one step off."""
    f32 = np.float32
    rng = np.random.default_rng(11)

    def fails(actual, exact_and_bound):
        with pytest.raises(AssertionError, match="rounding-error bound"):
            assert_within_rounding(np.asarray(actual, f32), *exact_and_bound)

    q, k, v, grad = (make_heads(rng, (2, 2), 16, 8, f32, "contiguous") for _ in range(4))
    (out, _), _ = attention_exact(q, k, v, 0.35, True, grad, f32)
    scores = np.where(np.tri(16, 16, 1, dtype=bool), (q @ k.swapaxes(-1, -2)) * f32(0.35), -np.inf)
    fails(reference.softmax(scores) @ v, out)

    x = make_array(rng, (6, 20), f32, "contiguous")
    fails(reference.softmax(x * f32(1 + 1e-4)), softmax_exact(x, f32))

    x = make_array(rng, (400,), f32, "contiguous", scale=3.0)
    erf = np.vectorize(math.erf)
    fails(0.5 * x * (1 + erf(x / math.sqrt(2))), gelu_exact(x, f32))

    x = make_array(rng, (8, 64), f32, "contiguous", scale=3.0) + f32(1.5)
    centered = x - x.mean(axis=-1, keepdims=True)
    unbiased = centered / np.sqrt((centered * centered).sum(axis=-1, keepdims=True) / 63 + 1e-5)
    fails(unbiased, layer_norm_exact(x, None, None, 1e-5, f32)[0])

    a, b = (make_array(rng, shape, f32, "contiguous") for shape in [(30, 50), (50, 40)])
    fails(a[:, :-1] @ b[:-1], matmul_exact(a, b, f32))

    state = [make_array(rng, (300,), f32, "contiguous") for _ in range(3)]
    state[2] = np.abs(state[2])
    grads = [make_array(rng, (300,), f32, "contiguous") for _ in range(2)]
    hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    (param, _, _), (bound, _, _) = adamw_by_hand(state, grads, unit=eps_tiny(f32)[0], **hyper)
    wrong = [a.copy() for a in state]
    for step, g in enumerate(grads, start=2):  # bias corrections of steps 2 and 3
        reference.adamw_step(*wrong[:1], g, *wrong[1:], step=step, **hyper)
    fails(wrong[0], (np.array(param), np.array(bound)))


# ----------------------------------------------------------------------------
# fast_exp: the polynomial exponential inside the float32 kernels

def test_fast_exp_float32_relative_error():
    x = np.linspace(-87.0, 88.0, 400_001).astype(np.float32)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    exact = np.exp(x.astype(np.float64))
    relative = np.abs(out.astype(np.float64) - exact) / exact
    assert relative.max() < 3e-7


def test_fast_exp_special_values():
    x = np.array([-np.inf, -1e4, -100.0, 0.0, 100.0, np.inf, np.nan], np.float32)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    assert out[0] == 0 and out[1] == 0 and out[2] == 0
    assert out[3] == 1
    assert out[4] == np.inf and out[5] == np.inf
    assert np.isnan(out[6])


def test_fast_exp_float64_is_the_library_exp():
    x = np.linspace(-700, 700, 1001)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=4e-16)  # within one rounding


# ----------------------------------------------------------------------------
# matmul and its backward

@st.composite
def matmul_operands(draw):
    """(a, b, dtype): a (..., M, K), b (..., K, N) with broadcastable batch shapes."""
    m, k, n = (draw(st.integers(1, 70)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 4), max_size=2))
    a_batch = tuple(d if draw(st.booleans()) else 1 for d in batch)
    b_batch = tuple(d if draw(st.booleans()) else 1 for d in batch)
    b_batch = b_batch[draw(st.integers(0, len(batch))):]  # b may have fewer batch dims
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = make_array(rng, a_batch + (m, k), dtype, draw(st.sampled_from(LAYOUTS)))
    b = make_array(rng, b_batch + (k, n), dtype, draw(st.sampled_from(LAYOUTS)))
    return a, b, dtype


@given(matmul_operands())
def test_matmul_matches_reference(operands):
    a, b, dtype = operands
    exact, bound = matmul_exact(a, b, dtype)
    for module in (reference, jitted):
        check(module.matmul(a, b), exact, bound, dtype, module.__name__)


@given(matmul_operands(), st.integers(0, 2**32 - 1))
def test_matmul_backward_matches_reference(operands, seed):
    a, b, dtype = operands
    out_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    grad = make_array(np.random.default_rng(seed), out_shape, dtype, "contiguous")
    expected = (matmul_exact(grad, b.swapaxes(-1, -2), dtype),
                matmul_exact(a.swapaxes(-1, -2), grad, dtype))
    for module in (reference, jitted):
        for actual, (exact, bound), name in zip(module.matmul_backward(grad, a, b), expected,
                                                ("grad_a", "grad_b")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_gpt_shapes_and_views(dtype):
    """The shapes the GPT uses, large enough for the parallel BLAS path, with the
    transposed views attention and linear layers pass (no copies needed)."""
    rng = np.random.default_rng(0)
    x = make_array(rng, (96, 128), dtype, "contiguous")
    weight = make_array(rng, (384, 128), dtype, "contiguous")
    q = make_array(rng, (3, 4, 33, 32), dtype, "contiguous")
    k = make_array(rng, (3, 4, 64, 32), dtype, "strided")
    a = make_array(rng, (5, 1, 40, 50), dtype, "transposed")
    b = make_array(rng, (3, 50, 60), dtype, "contiguous")
    for left, right in [(x, weight.T), (weight.T.T, x.T), (q, k.swapaxes(-1, -2)), (a, b)]:
        check(jitted.matmul(left, right), *matmul_exact(left, right, dtype), dtype)
    grad = make_array(rng, (5, 3, 40, 60), dtype, "contiguous")
    grad_a, grad_b = jitted.matmul_backward(grad, a, b)
    check(grad_a, *matmul_exact(grad, b.swapaxes(-1, -2), dtype), dtype, "grad_a")
    check(grad_b, *matmul_exact(a.swapaxes(-1, -2), grad, dtype), dtype, "grad_b")


def test_matmul_falls_back_for_integers_and_mixed_dtypes():
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(jitted.matmul(a, a.T), a @ a.T)
    f = np.ones((40, 40), np.float32)
    d = np.ones((40, 40), np.float64)
    assert jitted.matmul(f, d).dtype == np.float64
    with pytest.raises(ValueError):
        jitted.matmul(np.ones((40, 41), np.float32), np.ones((40, 41), np.float32))


# ----------------------------------------------------------------------------
# linear and its backward

@st.composite
def linear_operands(draw):
    """(x, weight, bias, grad, dtype): x (N, in), weight (out, in), bias (out,) or None."""
    n_rows, n_in, n_out = (draw(st.integers(1, 80)) for _ in range(3))
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_array(rng, (n_rows, n_in), dtype, draw(st.sampled_from(LAYOUTS)))
    weight = make_array(rng, (n_out, n_in), dtype, draw(st.sampled_from(LAYOUTS)))
    bias = make_array(rng, (n_out,), dtype, draw(st.sampled_from(["contiguous", "strided"])))
    grad = make_array(rng, (n_rows, n_out), dtype, draw(st.sampled_from(LAYOUTS)))
    return x, weight, bias if draw(st.booleans()) else None, grad, dtype


def linear_exact(x, weight, bias, dtype):
    """x @ weight^T + bias: in + 1 terms per element."""
    x, weight, bias = wide(x, weight, bias)
    exact = x @ weight.T + (0 if bias is None else bias)
    magnitude = np.abs(x) @ np.abs(weight.T) + (0 if bias is None else np.abs(bias))
    return exact, rounding_bound(magnitude, x.shape[1] + 2, dtype)


def linear_backward_exact(grad, x, weight, dtype):
    return (matmul_exact(grad, weight, dtype), matmul_exact(grad.T, x, dtype),
            sum_exact(grad, 0, dtype))


def check_linear_backward(module, grad, x, weight, dtype):
    for actual, (exact, bound), name in zip(module.linear_backward(grad, x, weight),
                                            linear_backward_exact(grad, x, weight, dtype),
                                            ("grad_x", "grad_weight", "grad_bias")):
        check(actual, exact, bound, dtype, f"{module.__name__} {name}")


@given(linear_operands())
def test_linear_and_backward_match_reference(operands):
    x, weight, bias, grad, dtype = operands
    exact, bound = linear_exact(x, weight, bias, dtype)
    for module in (reference, jitted):
        check(module.linear(x, weight, bias), exact, bound, dtype, module.__name__)
        check_linear_backward(module, grad, x, weight, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(96, 128, 384), (5, 128, 512), (300, 40, 3)])
def test_linear_blocks_and_bias_on_the_parallel_path(dtype, shape):
    """Large enough for the parallel BLAS path: row blocks (tall x) and column blocks
    (wide output) must each get their slice of the bias, exactly once."""
    n_rows, n_in, n_out = shape
    rng = np.random.default_rng(1)
    x = make_array(rng, (n_rows, n_in), dtype, "contiguous")
    weight = make_array(rng, (n_out, n_in), dtype, "contiguous")
    bias = make_array(rng, (n_out,), dtype, "contiguous")
    check(jitted.linear(x, weight, bias), *linear_exact(x, weight, bias, dtype), dtype)
    grad = make_array(rng, (n_rows, n_out), dtype, "contiguous")
    check_linear_backward(jitted, grad, x, weight, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("x_layout,weight_layout", [("contiguous", "contiguous"),
                                                    ("transposed", "transposed"),
                                                    ("strided", "contiguous")])
def test_linear_backward_row_blocks(dtype, blocks, x_layout, weight_layout, monkeypatch):
    """linear_backward cuts the rows into one block per thread (uneven blocks here, with x
    and weight in the layouts BLAS reads in place or through a copy): each block's grad_x
    rows, and the partial grad_weight and bias gradients summed over the blocks, must
    equal the reference. More blocks than threads still run, a few per thread."""
    monkeypatch.setattr(jitted.numba, "get_num_threads", lambda: blocks)
    n_rows = blocks * jitted.LINEAR_BACKWARD_MIN_BLOCK_ROWS + 37
    rng = np.random.default_rng(blocks)
    x = make_array(rng, (n_rows, 24), dtype, x_layout)
    weight = make_array(rng, (40, 24), dtype, weight_layout)
    grad = make_array(rng, (n_rows, 40), dtype, "contiguous")
    plans = []
    plan = jitted._linear_backward_plan
    monkeypatch.setattr(jitted_matmul, "_linear_backward_plan",
                        lambda *args: plans.append(plan(*args)) or plans[-1])
    check_linear_backward(jitted, grad, x, weight, dtype)
    tasks, bias_rows = plans[0]
    assert len(tasks) == 2 * blocks  # a grad_x and a grad_weight task per block
    assert bias_rows[::2, 1].tolist() == [round((i + 1) * n_rows / blocks) for i in range(blocks)]


# ----------------------------------------------------------------------------
# softmax and log-softmax

@given(cases(), st.sampled_from([1.0, 30.0]))
def test_softmax_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    grad = make_array(rng, shape, dtype, layout)
    exact, bound = softmax_exact(x, dtype)
    y = reference.softmax(x)  # the backward's input, the same for both sets
    exact_grad, grad_bound = softmax_backward_exact(y, grad, dtype)
    for module in (reference, jitted):
        check(module.softmax(x), exact, bound, dtype, module.__name__)
        check(module.softmax_backward(y, grad), exact_grad, grad_bound, dtype,
              f"{module.__name__} backward")


@given(cases(), st.sampled_from([1.0, 30.0]))
def test_log_softmax_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    grad = make_array(rng, shape, dtype, layout)
    exact, bound = log_softmax_exact(x, dtype)
    y = reference.log_softmax(x)
    exact_grad, grad_bound = log_softmax_backward_exact(y, grad, dtype)
    for module in (reference, jitted):
        check(module.log_softmax(x), exact, bound, dtype, module.__name__)
        check(module.log_softmax_backward(y, grad), exact_grad, grad_bound, dtype,
              f"{module.__name__} backward")


@pytest.mark.parametrize("module", [reference, jitted])
def test_softmax_handles_minus_infinity(module):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], np.float32)
    y = module.softmax(x)
    np.testing.assert_allclose(y, [[1 / (1 + np.e), 0, np.e / (1 + np.e)], [0, 1, 0]],
                               rtol=1e-6)
    assert y[0, 1] == 0 and y[1, 0] == 0


# ----------------------------------------------------------------------------
# attention

def make_heads(rng, batch, n, dim, dtype, layout):
    """(*batch, n, dim) queries, keys or values in one of the layouts attention meets:
    LAYOUTS, or 'packed': the heads of a (B, T, 3, nh, hs) q/k/v projection, as a GPT
    hands them over (row stride 3 * nh * hs, head stride hs)."""
    if layout == "packed" and len(batch) == 2:
        packed = rng.standard_normal((batch[0], n, 3, batch[1], dim)).astype(dtype)
        return packed[:, :, rng.integers(3)].transpose(0, 2, 1, 3)
    return make_array(rng, batch + (n, dim), dtype, "contiguous" if layout == "packed" else layout)


@st.composite
def attention_cases(draw):
    tq = draw(st.integers(1, 20))
    is_causal = draw(st.booleans())
    tk = tq + draw(st.sampled_from([0, 0, 1, 7]))  # Tq == Tk is the training case
    batch = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    dim = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(FLOATS))
    layouts = draw(st.lists(st.sampled_from(LAYOUTS + ["packed"]), min_size=4, max_size=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 0.125, 8.0]))
    return rng, batch, tq, tk, dim, dtype, layouts, scale, is_causal


def check_attention(q, k, v, scale, is_causal, grad, dtype):
    """Forward and backward of both kernel sets within rounding of the exact results; each
    backward gets the logsumexp of its own set's forward, as the engine hands it over."""
    forward, backward = attention_exact(q, k, v, scale, is_causal, grad, dtype)
    for module in (reference, jitted):
        out, logsumexp = module.attention(q, k, v, scale, is_causal)
        for actual, (exact, bound), name in zip((out, logsumexp), forward, ("out", "logsumexp")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")
        grads = module.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)
        for actual, (exact, bound), name in zip(grads, backward,
                                                ("grad_q", "grad_k", "grad_v")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")


@given(attention_cases())
def test_attention_and_backward(case):
    rng, batch, tq, tk, dim, dtype, layouts, scale, is_causal = case
    q = make_heads(rng, batch, tq, dim, dtype, layouts[0])
    k = make_heads(rng, batch, tk, dim, dtype, layouts[1])
    v = make_heads(rng, batch, tk, dim, dtype, layouts[2])
    grad = make_heads(rng, batch, tq, dim, dtype, layouts[3])
    check_attention(q, k, v, scale, is_causal, grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("extra_keys", [0, 5])
def test_attention_in_several_query_blocks(dtype, extra_keys):
    """Causal attention over more queries than one block (the last block partial): each
    block stops at its own last visible key, and grad_k / grad_v add up across blocks."""
    rng = np.random.default_rng(7)
    tq = 2 * jitted.ATTENTION_QUERY_BLOCK + 3
    q = make_heads(rng, (2, 3), tq, 8, dtype, "packed")
    k, v = (make_heads(rng, (2, 3), tq + extra_keys, 8, dtype, "contiguous") for _ in range(2))
    grad = make_heads(rng, (2, 3), tq, 8, dtype, "transposed")
    check_attention(q, k, v, 0.3, True, grad, dtype)


def test_attention_reference_matches_the_definition():
    """softmax(q k^T * scale) v with the mask as an explicit loop over queries and keys."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(shape) for shape in [(2, 3, 4), (2, 5, 4), (2, 5, 4)])
    out, logsumexp = reference.attention(q, k, v, 0.5, True)
    for b in range(2):
        for i in range(3):
            visible = i + 5 - 3 + 1  # query i sits at position i + Tk - Tq
            scores = [0.5 * q[b, i] @ k[b, j] for j in range(visible)]
            weights = np.exp(scores) / np.sum(np.exp(scores))
            np.testing.assert_allclose(out[b, i], weights @ v[b, :visible], rtol=1e-12)
            np.testing.assert_allclose(logsumexp[b, i], np.log(np.sum(np.exp(scores))),
                                       rtol=1e-12)


def test_causal_mask_aligns_queries_to_the_end_of_the_keys():
    """Two queries over five keys (a KV cache of three): query 0 is at position 3, so with
    equal scores it averages the first four values and query 1 all five."""
    mask = reference._causal_mask(2, 5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    q, k = np.zeros((2, 3)), np.zeros((5, 3))
    v = np.arange(15.0).reshape(5, 3)
    for module in (reference, jitted):
        out, _ = module.attention(q, k, v, 1.0, True)
        np.testing.assert_allclose(out, [v[:4].mean(axis=0), v.mean(axis=0)])


def test_attention_output_merges_heads_without_a_copy():
    """The output is stored (B, T, nh, hs): moving the heads next to hs is a free view."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(3))
    out, _ = jitted.attention(q, k, v, 0.5, True)
    merged = out.transpose(0, 2, 1, 3).reshape(2, 4, 15)
    assert np.shares_memory(merged, out)


@pytest.mark.parametrize("module", [reference, jitted])
def test_attention_rejects_more_queries_than_keys_when_causal(module):
    with pytest.raises(ValueError, match="Tq <= Tk"):
        module.attention(np.zeros((3, 2), np.float32), np.zeros((2, 2), np.float32),
                         np.zeros((2, 2), np.float32), 1.0, True)


# ----------------------------------------------------------------------------
# layer norm

@given(cases(min_dims=2, max_dims=2, max_side=40, max_last=130), st.booleans())
def test_layer_norm_and_backward(case, affine):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale=3.0) + dtype(1.5)
    n_cols = shape[-1]
    weight = make_array(rng, (n_cols,), dtype, "strided") if affine else None
    bias = make_array(rng, (n_cols,), dtype, "contiguous") if affine else None
    grad = make_array(rng, shape, dtype, layout)
    forward = layer_norm_exact(x, weight, bias, 1e-5, dtype)
    _, mean, rstd = reference.layer_norm(x, weight, bias, 1e-5)  # the backward's inputs
    backward = layer_norm_backward_exact(grad, x, weight, mean, rstd, dtype)
    for module in (reference, jitted):
        for actual, (exact, bound), name in zip(module.layer_norm(x, weight, bias, 1e-5),
                                                forward, ("y", "mean", "rstd")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")
        for actual, (exact, bound), name in zip(
                module.layer_norm_backward(grad, x, weight, mean, rstd), backward,
                ("grad_x", "grad_weight", "grad_bias")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")


def test_layer_norm_reference_normalises():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    y, mean, rstd = reference.layer_norm(x, np.array([2.0] * 4), np.array([1.0] * 4), 0.0)
    np.testing.assert_allclose(mean, [3.0])
    np.testing.assert_allclose(rstd, [1 / math.sqrt(3.5)])
    np.testing.assert_allclose(y, 2 * (x - 3) / math.sqrt(3.5) + 1)


# ----------------------------------------------------------------------------
# GELU

@given(cases(), st.sampled_from([1.0, 6.0]))
def test_gelu_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    grad = make_array(rng, shape, dtype, layout)
    exact, bound = gelu_exact(x, dtype)
    exact_grad, grad_bound = gelu_backward_exact(x, grad, dtype)
    for module in (reference, jitted):
        check(module.gelu(x), exact, bound, dtype, module.__name__)
        check(module.gelu_backward(x, grad), exact_grad, grad_bound, dtype,
              f"{module.__name__} backward")


@pytest.mark.parametrize("module", [reference, jitted])
def test_gelu_tails(module):
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    np.testing.assert_allclose(module.gelu(x), [0, 0, 0, 50, 1e4], atol=1e-6)
    np.testing.assert_allclose(module.gelu_backward(x, np.ones_like(x)), [0, 0, 0.5, 1, 1],
                               atol=1e-6)


# ----------------------------------------------------------------------------
# cross-entropy

@st.composite
def cross_entropy_cases(draw):
    n_rows = draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 70))
    dtype = draw(st.sampled_from(FLOATS))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    logits = make_array(rng, (n_rows, n_classes), dtype, layout, scale)
    targets = rng.integers(0, n_classes, n_rows)
    targets[rng.random(n_rows) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = -100
    return logits, targets, dtype, scale


def cross_entropy_exact(logits, targets, dtype):
    """(loss, bound), (logsumexp, bound): each counted row's loss lse - logit[target] is
    rounded once more in `dtype`; the mean of the rows is taken in float64."""
    lse, lse_bound = logsumexp_rows_exact(logits, dtype)
    counted = targets != -100
    if not counted.any():
        return (float("nan"), 0.0), (lse, lse_bound)
    rows = np.nonzero(counted)[0]
    target_logit = np.asarray(logits, np.float64)[rows, targets[rows]]
    row_loss = lse[rows] - target_logit
    eps, _ = eps_tiny(dtype)
    loss_bound = (lse_bound[rows] + eps * np.abs(row_loss)).mean() + 1e-12 * np.abs(row_loss).mean()
    return (row_loss.mean(), loss_bound), (lse, lse_bound)


def cross_entropy_backward_exact(logits, targets, lse, grad_loss, dtype):
    """(softmax rebuilt from the given logsumexp - onehot) * grad_loss / count: the shifted
    exponent's rounding, the exponential, the scale (itself rounded) and the subtraction."""
    eps, tiny = eps_tiny(dtype)
    logits, lse = wide(logits, lse)
    counted = targets != -100
    count = int(counted.sum())
    scale = grad_loss / count if count else 0.0
    with np.errstate(invalid="ignore"):
        p = np.where(counted[:, None], np.exp(logits - lse[:, None]), 0.0)
        shift = np.where(p > 0, np.abs(logits - lse[:, None]), 0.0)
    onehot = np.zeros_like(p)
    rows = np.nonzero(counted)[0]
    onehot[rows, targets[rows]] = 1.0
    exact = (p - onehot) * scale
    magnitude = scale * (p * (shift + 8) + onehot) + np.abs(exact)
    return exact, rounding_bound(magnitude, 1, dtype)


@given(cross_entropy_cases(), st.sampled_from([1.0, 0.5]))
def test_cross_entropy_and_backward(case, grad_loss):
    logits, targets, dtype, scale = case
    (loss, loss_bound), (exact_lse, lse_bound) = cross_entropy_exact(logits, targets, dtype)
    _, lse = reference.cross_entropy(logits, targets, -100)  # the backward's input
    exact_grad, grad_bound = cross_entropy_backward_exact(logits, targets, lse, grad_loss, dtype)
    for module in (reference, jitted):
        actual_loss, actual_lse = module.cross_entropy(logits, targets, -100)
        assert isinstance(actual_loss, float)
        assert_within_rounding(np.float64(actual_loss), loss, loss_bound,
                               f"{module.__name__} loss")  # nan when every row is ignored
        check(actual_lse, exact_lse, lse_bound, dtype, f"{module.__name__} logsumexp")
        check(module.cross_entropy_backward(logits, targets, lse, -100, grad_loss),
              exact_grad, grad_bound, dtype, f"{module.__name__} backward")


@pytest.mark.parametrize("module", [reference, jitted])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_huge_logits_and_minus_infinity(module, dtype):
    logits = np.array([[1e4, -1e4, 0.0],
                       [2e4, 2e4 - 1.0, -np.inf],
                       [-np.inf, 0.0, -np.inf],
                       [-np.inf, -np.inf, -np.inf]], dtype)  # the last row is ignored
    targets = np.array([0, 1, 1, -100])
    loss, lse = module.cross_entropy(logits, targets, -100)
    # Row losses: 0, 1 + log(1 + e^-1), 0. In float32 a logit of 2e4 is only known to
    # ~1e-3, which bounds how well any float32 implementation can do on row 1.
    tol = 2e-3 if dtype == np.float32 else 1e-9
    row1 = 1.0 + math.log1p(math.exp(-1.0))
    assert loss == pytest.approx(row1 / 3, abs=tol)
    assert lse[0] == 1e4 and lse[2] == 0 and lse[3] == -np.inf
    grad = module.cross_entropy_backward(logits, targets, lse, -100, 1.0)
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    p0 = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(grad[1], [p0 / 3, (1 - p0 - 1) / 3, 0.0], atol=tol)
    np.testing.assert_array_equal(grad[3], 0)
    assert grad[1, 2] == 0 and grad[2, 0] == 0 and grad[2, 2] == 0


@pytest.mark.parametrize("module", [reference, jitted])
def test_cross_entropy_all_rows_ignored(module):
    logits = np.ones((3, 4), np.float32)
    targets = np.full(3, 7)
    loss, lse = module.cross_entropy(logits, targets, 7)
    assert math.isnan(loss)
    np.testing.assert_array_equal(module.cross_entropy_backward(logits, targets, lse, 7, 1.0), 0)


def test_cross_entropy_rejects_out_of_range_targets():
    with pytest.raises(IndexError):
        jitted.cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3]), -100)


# ----------------------------------------------------------------------------
# embedding backward

@given(st.integers(1, 12), st.integers(1, 30), st.integers(1, 40), st.sampled_from(FLOATS),
       st.sampled_from(["contiguous", "strided"]), st.integers(0, 2**32 - 1))
def test_embedding_backward_accumulates_repeats(n_embeddings, n_tokens, dim, dtype, layout,
                                               seed):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_embeddings, (n_tokens, 2))  # more tokens than rows: repeats
    grad = make_array(rng, (n_tokens, 2, dim), dtype, layout)
    expected = np.zeros((n_embeddings, dim), np.float64)
    magnitude = np.zeros((n_embeddings, dim), np.float64)
    for token, row in zip(indices.reshape(-1), grad.reshape(-1, dim)):
        expected[token] += row  # the definition, one row at a time
        magnitude[token] += np.abs(row)
    bound = rounding_bound(magnitude, 2 * n_tokens + 1, dtype)
    for module in (reference, jitted):
        out = module.embedding_backward(indices, grad, n_embeddings)
        check(out, expected, bound, dtype, module.__name__)


def test_embedding_backward_rejects_out_of_range_indices():
    with pytest.raises(IndexError):
        jitted.embedding_backward(np.array([0, 5]), np.ones((2, 3), np.float32), 5)


# ----------------------------------------------------------------------------
# AdamW

def adamw_by_hand(state, grads, lr, beta1, beta2, eps, weight_decay, unit):
    """PyTorch's AdamW, one element at a time in float64, over one step per array of
    `grads`, from `state` = (param, exp_avg, exp_avg_sq).

    Returns the three exact results, and for each a running bound on the error of the same
    steps rounded with machine epsilon `unit`: every operation adds unit times its result's
    size (twice for a product with a constant rounded to the dtype) to the error it
    inherits, which a later step scales by its factor (beta, the decay) or, through the
    division by the denominator, by the update's sensitivity."""
    exact = ([], [], [])
    bounds = ([], [], [])
    for i in range(len(state[0])):
        p, m, v = (float(a[i]) for a in state)
        p_error = m_error = v_error = 0.0
        for step, g in enumerate((float(g[i]) for g in grads), start=1):
            decay = 1 - lr * weight_decay
            p *= decay
            p_error = p_error * decay + 2 * unit * abs(p)
            previous_m, previous_v = m, v
            m = beta1 * m + (1 - beta1) * g
            m_error = beta1 * m_error + unit * (2 * abs(beta1 * previous_m)
                                                + 2 * abs((1 - beta1) * g) + abs(m))
            v = beta2 * v + (1 - beta2) * g * g
            v_error = beta2 * v_error + unit * (2 * abs(beta2 * previous_v)
                                                + 3 * (1 - beta2) * g * g + abs(v))
            root = math.sqrt(v)
            root_error = min(v_error / (2 * root) if root > 0 else math.inf,
                             math.sqrt(v_error)) + unit * root
            scale2 = 1 / math.sqrt(1 - beta2 ** step)
            denom = root * scale2 + eps
            denom_error = root_error * scale2 + unit * (2 * root * scale2 + denom)
            step_size = lr / (1 - beta1 ** step)
            update = step_size * m / denom
            update_error = (step_size * (m_error / denom + abs(m) * denom_error / denom ** 2)
                            + 3 * unit * abs(update))
            p -= update
            p_error += update_error + unit * abs(p)
        for values, value in zip(exact + bounds, (p, m, v, p_error, m_error, v_error)):
            values.append(value)
    return exact, bounds


@given(st.integers(1, 300), st.sampled_from(FLOATS), st.integers(0, 2**32 - 1),
       st.sampled_from([0.0, 0.1]))
def test_adamw_step_matches_hand_written_loop(size, dtype, seed, weight_decay):
    rng = np.random.default_rng(seed)
    state = [rng.standard_normal(size).astype(dtype) for _ in range(3)]
    state[2] = np.abs(state[2])  # exp_avg_sq >= 0
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(3)]
    hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=weight_decay)
    expected, bounds = adamw_by_hand(state, grads, unit=eps_tiny(dtype)[0], **hyper)
    for module in (reference, jitted):
        param, exp_avg, exp_avg_sq = (a.copy() for a in state)
        for step, grad in enumerate(grads, start=1):
            assert module.adamw_step(param, grad, exp_avg, exp_avg_sq, step=step, **hyper) is None
        for actual, exact, bound, name in zip((param, exp_avg, exp_avg_sq), expected, bounds,
                                              ("param", "exp_avg", "exp_avg_sq")):
            check(actual, exact, bound, dtype, f"{module.__name__} {name}")


def test_adamw_step_on_non_contiguous_views_updates_in_place():
    rng = np.random.default_rng(0)
    buffers = [rng.standard_normal(20).astype(np.float32) for _ in range(4)]
    buffers[3] = np.abs(buffers[3])
    original = [b.copy() for b in buffers]
    expected = [b.copy() for b in buffers]
    reference.adamw_step(*(b[::2] for b in expected), 1e-2, 0.9, 0.99, 1e-8, 0.1, 1)
    jitted.adamw_step(*(b[::2] for b in buffers), 1e-2, 0.9, 0.99, 1e-8, 0.1, 1)
    for actual, wanted in zip(buffers, expected):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6)
    assert np.all(buffers[0][::2] != original[0][::2])  # the view was updated ...
    np.testing.assert_array_equal(buffers[0][1::2], original[0][1::2])  # ... and only it


# ----------------------------------------------------------------------------
# choosing the kernel set, threading policy, runtime report

def test_use_and_active():
    assert kernels.use("numpy") is reference
    assert kernels.active() == "numpy" and kernels.active_set() is reference
    assert kernels.use("numba") is jitted
    assert kernels.active() == "numba" and kernels.active_set() is jitted


def test_unknown_kernel_set_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="numba"):
        kernels.use("cuda")
    monkeypatch.setenv("TENSORLITE_KERNELS", "fortran")
    with pytest.raises(ValueError, match="TENSORLITE_KERNELS"):
        kernels._from_environment()
    assert kernels.active() == "numba"


def test_threading_policy_one_pool_at_a_time():
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
    info = kernels.runtime_info()
    assert info["kernels"] == "numba"
    assert info["numpy_blas"]["threads"] == 1
    assert info["scipy_blas"]["threads"] == 1
    kernels.use("numpy")
    info = kernels.runtime_info()
    assert info["numpy_blas"]["threads"] == kernels._default_blas_threads[
        kernels._blas.numpy_blas().path]


def test_set_num_threads_sticks_across_kernel_sets():
    import numba
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))  # load BLAS
    numpy_lib = kernels._blas.numpy_blas()
    try:
        kernels.set_num_threads(1)
        assert kernels.get_num_threads() == 1
        assert numba.get_num_threads() == 1  # the numba set: Numba's pool is limited
        assert numpy_lib.get_num_threads() == 1
        assert kernels.runtime_info()["numba"]["threads"] == 1
        kernels.use("numpy")  # the numpy set: BLAS gets the limit, not its default
        assert numpy_lib.get_num_threads() == 1
        kernels.use("numba")
        assert numba.get_num_threads() == 1  # still in force after switching back
        x = np.random.default_rng(0).standard_normal((96, 128)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((384, 128)).astype(np.float32)
        check(jitted.linear(x, w, None), *linear_exact(x, w, None, np.float32), np.float32)
    finally:
        kernels.set_num_threads(None)
    assert kernels.get_num_threads() is None
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    kernels.use("numpy")
    assert numpy_lib.get_num_threads() == kernels._default_blas_threads[numpy_lib.path]
    kernels.use("numba")


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        kernels.set_num_threads(bad)
    assert kernels.get_num_threads() is None


def test_runtime_info_names_the_blas_kernel_set():
    info = kernels.runtime_info()
    assert info["numpy_blas"]["corename"]  # e.g. 'Haswell', 'SkylakeX', 'Zen'
    assert info["numba"]["threads"] >= 1
    line = kernels.format_runtime_info(info)
    assert "kernels=numba" in line and info["numpy_blas"]["corename"] in line
    assert "\n" not in line


def test_both_sets_define_every_kernel_the_ops_call():
    # The kernels the ops call are the functions listed in tensorlite/kernels/__init__.py; each
    # must exist in both sets with the same signature as its entry there.
    import inspect
    policy = {"use", "active", "active_set", "set_num_threads", "get_num_threads", "blas_threads",
              "runtime_info", "format_runtime_info", "apply_threading_policy"}
    listed = [name for name, f in vars(kernels).items()
              if inspect.isfunction(f) and f.__module__ == kernels.__name__
              and not name.startswith("_") and name not in policy]
    assert {"matmul", "attention_backward", "conv2d", "max_pool2d", "batch_norm",
            "lstm_cell", "adamw_step"} <= set(listed)
    for name in listed:
        wanted = inspect.signature(getattr(kernels, name))
        assert inspect.signature(getattr(reference, name)) == wanted, name
        assert inspect.signature(getattr(jitted, name)) == wanted, name
