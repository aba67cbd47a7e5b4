"""Pooling: F.max_pool1d/2d, F.avg_pool1d/2d, F.adaptive_avg_pool2d.

* kernels: the Numba kernels (tensorlite/kernels/numba/pool.py) against the NumPy reference on
  Hypothesis-drawn shapes and geometries (odd sizes, size 1, stride, padding, dilation,
  ceil_mode, non-contiguous inputs, float32 and float64): max pooling exactly, values and
  indices, on inputs full of ties, -inf and NaN, and the reference exactly against torch's;
  average pooling within a rounding bound derived from its sums (tl.testing.rounding_bound);
* ops: forward and gradients against torch in float64 under both kernel sets, and
  gradcheck / gradgradcheck (max pooling on well-separated values, so that finite
  differences never move the arg-max);
* the argument checks and their messages.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, strategies as st

import tensorlite as tl
from tensorlite import functional as F
from tensorlite.kernels import numba as jitted, numpy as reference
from tensorlite.kernels.numpy.pool import pool_output_size
from tensorlite.testing import (assert_within_rounding, gradcheck, gradgradcheck, rounding_bound,
                                strategies as tst)

FLOATS = [np.float32, np.float64]


# ----------------------------------------------------------------------------
# drawing inputs

@st.composite
def geometries(draw, dilation=True, max_kernel=3):
    """(kernel, stride, padding, dilation, ceil_mode) as (h, w) pairs, torch-valid."""
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilations = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(2))
    return kernel, stride, padding, dilations, draw(st.booleans())


def out_size(shape, kernel, stride, padding, dilation, ceil_mode):
    return tuple(pool_output_size(shape[2 + a], kernel[a], stride[a], padding[a], dilation[a],
                                  ceil_mode) for a in (0, 1))


def make_input(rng, shape, dtype, layout, values):
    """(N, C, H, W) of `values` ('normal', 'ties': small integers, 'specials': ties plus some
    -inf and NaN) stored contiguous, as every other element of a wider array, or as a view
    with H and W swapped."""
    N, C, H, W = shape
    stored = {"contiguous": shape, "strided": (N, C, H, 2 * W), "transposed": (N, C, W, H)}[layout]
    if values == "normal":
        x = rng.standard_normal(stored)
    else:
        x = rng.integers(-2, 3, stored).astype(np.float64)
        if values == "specials":
            x[rng.random(stored) < 0.15] = -np.inf
            x[rng.random(stored) < 0.05] = np.nan
    x = x.astype(dtype)
    if layout == "strided":
        return x[..., ::2]
    return x.swapaxes(-1, -2) if layout == "transposed" else x


@st.composite
def pool_cases(draw, dilation=True, values=("normal", "ties", "specials")):
    geometry = draw(geometries(dilation=dilation))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    assume(min(out_size(shape, *geometry)) >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_input(rng, shape, draw(st.sampled_from(FLOATS)),
                   draw(st.sampled_from(["contiguous", "strided", "transposed"])),
                   draw(st.sampled_from(values)))
    return rng, x, geometry


# ----------------------------------------------------------------------------
# kernels

@given(pool_cases())
def test_max_pool_kernels_agree_exactly_with_each_other_and_torch(case):
    rng, x, (kernel, stride, padding, dilation, ceil_mode) = case
    y, indices = reference.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    expected_y, expected_indices = TF.max_pool2d(torch.from_numpy(np.ascontiguousarray(x)),
                                                 kernel, stride, padding, dilation, ceil_mode,
                                                 return_indices=True)
    np.testing.assert_array_equal(y, expected_y.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    y_jit, indices_jit = jitted.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    assert y_jit.dtype == x.dtype and indices_jit.dtype == np.int64
    np.testing.assert_array_equal(y_jit, y)
    np.testing.assert_array_equal(indices_jit, indices)

    grad = rng.standard_normal(y.shape).astype(x.dtype)
    exact = reference.max_pool2d_backward(grad.astype(np.float64), indices, x.shape)
    bound = rounding_bound(reference.max_pool2d_backward(np.abs(grad).astype(np.float64),
                                                         indices, x.shape),
                           kernel[0] * kernel[1] + 1, x.dtype)
    for module in (reference, jitted):
        grad_x = module.max_pool2d_backward(grad, indices, x.shape)
        assert grad_x.dtype == x.dtype
        assert_within_rounding(grad_x, exact, bound, f"{module.__name__} max_pool2d_backward")


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 2, 2), (1, 1, 5, 3)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_max_pool_2x2_fast_path_matches_the_reference(shape, dtype):
    """The 2x2 stride-2 kernel of LeNet-style networks, odd sizes included (floor mode drops
    the last row or column), on ties: the same maxima and first-maximum indices."""
    rng = np.random.default_rng(3)
    for values in ("ties", "specials"):
        x = make_input(rng, shape, dtype, "contiguous", values)
        for module in (reference, jitted):
            y, indices = module.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
            expected_y, expected_indices = TF.max_pool2d(torch.from_numpy(x), 2,
                                                         return_indices=True)
            np.testing.assert_array_equal(y, expected_y.numpy())
            np.testing.assert_array_equal(indices, expected_indices.numpy())


@given(pool_cases(dilation=False, values=("normal",)), st.booleans())
def test_avg_pool_kernels_within_rounding(case, count_include_pad):
    rng, x, (kernel, stride, padding, _, ceil_mode) = case
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    wide = x.astype(np.float64)
    terms = kernel[0] * kernel[1]
    exact = reference.avg_pool2d(wide, *args)
    bound = rounding_bound(reference.avg_pool2d(np.abs(wide), *args), terms + 2, x.dtype)
    grad = rng.standard_normal(exact.shape).astype(x.dtype)
    exact_grad = reference.avg_pool2d_backward(grad.astype(np.float64), x.shape, *args)
    grad_bound = rounding_bound(reference.avg_pool2d_backward(
        np.abs(grad).astype(np.float64), x.shape, *args), terms + 2, x.dtype)
    expected = TF.avg_pool2d(torch.from_numpy(wide), kernel, stride, padding, ceil_mode,
                             count_include_pad)
    np.testing.assert_allclose(exact, expected.numpy(), rtol=1e-12, atol=1e-12)
    for module in (reference, jitted):
        y = module.avg_pool2d(x, *args)
        assert y.dtype == x.dtype
        assert_within_rounding(y, exact, bound, f"{module.__name__} avg_pool2d")
        grad_x = module.avg_pool2d_backward(grad, x.shape, *args)
        assert grad_x.dtype == x.dtype
        assert_within_rounding(grad_x, exact_grad, grad_bound,
                               f"{module.__name__} avg_pool2d_backward")


def test_avg_pool_bound_catches_a_wrong_divisor():
    """The bound is tight enough to see count_include_pad confused with its opposite."""
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32)
    args = ((3, 3), (2, 2), (1, 1), False)
    exact = reference.avg_pool2d(x.astype(np.float64), *args, True)
    bound = rounding_bound(reference.avg_pool2d(np.abs(x).astype(np.float64), *args, True), 11,
                           np.float32)
    with pytest.raises(AssertionError, match="rounding-error bound"):
        assert_within_rounding(jitted.avg_pool2d(x, *args, False), exact, bound)


# ----------------------------------------------------------------------------
# ops against torch (float64), both kernel sets

def _both(x):
    return tl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)


def _compare(ours, theirs, x_ours, x_theirs, grad):
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    ours.backward(grad)
    theirs.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(x_ours.grad.data, x_theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@given(case=pool_cases(values=("normal",)), unbatched=st.booleans(), one_d=st.booleans())
def test_max_pool_ops_match_torch(kernel_set, case, unbatched, one_d):
    rng, x, (kernel, stride, padding, dilation, ceil_mode) = case
    x = x.astype(np.float64)
    if one_d:
        x, kernel, stride, padding, dilation = (x[:, :, 0], kernel[1], stride[1], padding[1],
                                                dilation[1])
    if unbatched:
        x = x[0]
    ours_f, theirs_f = (F.max_pool1d, TF.max_pool1d) if one_d else (F.max_pool2d, TF.max_pool2d)
    ours_x, theirs_x = _both(x)
    ours, ours_indices = ours_f(ours_x, kernel, stride, padding, dilation, ceil_mode,
                                return_indices=True)
    theirs, theirs_indices = theirs_f(theirs_x, kernel, stride, padding, dilation, ceil_mode,
                                      return_indices=True)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours_indices.data, theirs_indices.numpy())
    # A window that dilation leaves without an input element (its maximum -inf: the values are
    # finite) has an index torch's backward follows to an unrelated element or past the plane;
    # ours sends its gradient nowhere, which is torch's result with that gradient set to 0.
    grad = rng.standard_normal(ours.shape)
    empty = np.isneginf(ours.data)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    ours.backward(grad)
    theirs.backward(torch.from_numpy(np.where(empty, 0.0, grad)))
    np.testing.assert_allclose(ours_x.grad.data, theirs_x.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_window_without_input_gets_no_gradient(kernel_set):
    """kernel 2, dilation 2, padding 1 over a length-1 row: the window is (pad, past the end),
    its maximum -inf at index 1 as torch's, and its gradient goes nowhere."""
    x = tl.Tensor(np.array([[[0.5]]]), requires_grad=True)
    y, indices = F.max_pool1d(x, 2, 1, 1, 2, return_indices=True)
    assert y.data.tolist() == [[[-np.inf]]] and indices.data.tolist() == [[[1]]]
    y.backward(np.ones(y.shape))
    assert x.grad.data.tolist() == [[[0.0]]]


def test_window_with_rows_but_no_columns_gets_no_gradient(kernel_set):
    """Kernel (1, 2), dilation (1, 2), padding (0, 1) over a (3, 1) plane: each window's
    columns are -1 and 1, both outside, though its row is inside. torch reports index
    row * W + W (the next row's first element); the gradient must not go there."""
    x = tl.Tensor(np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1), requires_grad=True)
    y, indices = F.max_pool2d(x, (1, 2), 1, (0, 1), (1, 2), return_indices=True)
    assert np.isneginf(y.data).all() and indices.data.ravel().tolist() == [1, 2, 3]
    y.backward(np.ones(y.shape))
    assert x.grad.data.ravel().tolist() == [0.0, 0.0, 0.0]
    # the second derivative's gather reads nothing for those windows either
    x = tl.Tensor(np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1), requires_grad=True)
    y = F.max_pool2d(x, (1, 2), 1, (0, 1), (1, 2))
    g = tl.Tensor(np.ones(y.shape), requires_grad=True)
    (grad_x,) = tl.autograd.grad(y, x, g, create_graph=True)
    (grad_g,) = tl.autograd.grad((grad_x * tl.Tensor(np.arange(3.0).reshape(1, 1, 3, 1))).sum(), g)
    assert grad_g.data.ravel().tolist() == [0.0, 0.0, 0.0]


@given(case=pool_cases(dilation=False, values=("normal",)), unbatched=st.booleans(),
       one_d=st.booleans(), count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 5)))
def test_avg_pool_ops_match_torch(kernel_set, case, unbatched, one_d, count_include_pad,
                                  divisor_override):
    rng, x, (kernel, stride, padding, _, ceil_mode) = case
    x = x.astype(np.float64)
    ours_x, theirs_x = _both(x[0] if unbatched else x)
    if one_d:
        ours_x, theirs_x = _both(x[0, :, 0] if unbatched else x[:, :, 0])
        args = (kernel[1], stride[1], padding[1], ceil_mode, count_include_pad)
        ours, theirs = F.avg_pool1d(ours_x, *args), TF.avg_pool1d(theirs_x, *args)
    else:
        args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ours, theirs = F.avg_pool2d(ours_x, *args), TF.avg_pool2d(theirs_x, *args)
    assert ours.shape == tuple(theirs.shape)
    _compare(ours, theirs, ours_x, theirs_x, rng.standard_normal(ours.shape))


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9),
                       st.integers(1, 9)),
       output_size=st.one_of(st.integers(1, 5),
                             st.tuples(st.one_of(st.none(), st.integers(1, 5)),
                                       st.one_of(st.none(), st.integers(1, 5)))),
       unbatched=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool_matches_torch(shape, output_size, unbatched, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape[1:] if unbatched else shape)
    ours_x, theirs_x = _both(x)
    ours = F.adaptive_avg_pool2d(ours_x, output_size)
    theirs = TF.adaptive_avg_pool2d(theirs_x, output_size)
    assert ours.shape == tuple(theirs.shape)
    _compare(ours, theirs, ours_x, theirs_x, rng.standard_normal(ours.shape))


def test_max_pool_gradient_goes_to_the_first_maximum_and_ties_match_torch(kernel_set):
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, 3.0], [2.0, 3.0, 1.0]]]])
    ours_x, theirs_x = _both(x)
    ours, theirs = F.max_pool2d(ours_x, 2, 1), TF.max_pool2d(theirs_x, 2, 1)
    _compare(ours, theirs, ours_x, theirs_x, np.ones(ours.shape))
    np.testing.assert_array_equal(ours_x.grad.data[0, 0], [[0, 2, 0], [1, 0, 1], [0, 0, 0]])


def test_max_pool_return_indices_without_a_graph(kernel_set):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    with tl.no_grad():
        y, indices = F.max_pool2d(tl.Tensor(x, requires_grad=True), 2, return_indices=True)
    np.testing.assert_array_equal(y.data[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(indices.data[0, 0], [[5, 7], [13, 15]])
    assert indices.dtype == np.int64 and not indices.requires_grad


# ----------------------------------------------------------------------------
# gradcheck and gradgradcheck (float64, random upstream gradient)

# Small shapes: gradgradcheck calls each op a few thousand times. These run under the default
# (Numba) kernel set; the NumPy set's kernels are checked against it above.
SEPARATED = tst.well_separated(st.tuples(st.just(1), st.integers(1, 2), st.integers(2, 4),
                                         st.integers(2, 4)))


@given(x=SEPARATED, geometry=geometries(max_kernel=2))
def test_max_pool_gradcheck_and_gradgradcheck(x, geometry):
    kernel, stride, padding, dilation, ceil_mode = geometry
    assume(min(out_size(x.shape, kernel, stride, padding, dilation, ceil_mode)) >= 1)

    def fn(t):
        return F.max_pool2d(t, kernel, stride, padding, dilation, ceil_mode)

    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


@given(x=SEPARATED, kernel=st.integers(1, 3), stride=st.integers(1, 2))
def test_max_pool1d_gradcheck_and_gradgradcheck(x, kernel, stride):
    x = x[:, :, 0]
    assume(x.shape[-1] >= kernel)
    assert gradcheck(lambda t: F.max_pool1d(t, kernel, stride), [x])
    assert gradgradcheck(lambda t: F.max_pool1d(t, kernel, stride), [x])


@given(x=tst.tensors(st.tuples(st.just(1), st.integers(1, 2), st.integers(2, 4),
                               st.integers(2, 4)), min_value=-3, max_value=3),
       geometry=geometries(dilation=False, max_kernel=2), count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 3)))
def test_avg_pool_gradcheck_and_gradgradcheck(x, geometry, count_include_pad,
                                              divisor_override):
    kernel, stride, padding, _, ceil_mode = geometry
    assume(min(out_size(x.shape, kernel, stride, padding, (1, 1), ceil_mode)) >= 1)

    def fn(t):
        return F.avg_pool2d(t, kernel, stride, padding, ceil_mode, count_include_pad,
                            divisor_override)

    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


@given(x=tst.tensors(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6)),
                     min_value=-3, max_value=3),
       kernel=st.integers(1, 3), ceil_mode=st.booleans())
def test_avg_pool1d_gradcheck_and_gradgradcheck(x, kernel, ceil_mode):
    assume(x.shape[-1] >= kernel)
    assert gradcheck(lambda t: F.avg_pool1d(t, kernel, 2, kernel // 2, ceil_mode), [x])
    assert gradgradcheck(lambda t: F.avg_pool1d(t, kernel, 2, kernel // 2, ceil_mode), [x])


@given(x=tst.tensors(st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 6),
                               st.integers(1, 6)), min_value=-3, max_value=3),
       output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_adaptive_avg_pool_gradcheck_and_gradgradcheck(x, output_size):
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, output_size), [x])
    assert gradgradcheck(lambda t: F.adaptive_avg_pool2d(t, output_size), [x])


# ----------------------------------------------------------------------------
# argument checks

X4 = tl.Tensor(np.zeros((2, 3, 5, 5), np.float32))


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.max_pool2d(X4, 3, padding=2), ValueError, "at most half of kernel size"),
    (lambda: F.avg_pool2d(X4, 3, padding=2), ValueError, "at most half of kernel size"),
    (lambda: F.max_pool2d(X4, 7), ValueError, "output size .* too small"),
    (lambda: F.avg_pool1d(X4[0], 7), ValueError, "output size .* too small"),
    (lambda: F.max_pool2d(X4, 0), ValueError, "kernel_size must be greater than zero"),
    (lambda: F.max_pool2d(X4, 2, stride=0), ValueError, "stride must be greater than zero"),
    (lambda: F.max_pool2d(X4, 2, dilation=0), ValueError, "dilation must be greater than zero"),
    (lambda: F.max_pool2d(X4, 2, padding=-1), ValueError, "padding must be non-negative"),
    (lambda: F.max_pool2d(X4, (2, 2, 2)), ValueError, "kernel_size must be a single int, or"),
    (lambda: F.max_pool1d(X4[0], (2, 2)), ValueError, "kernel_size must be a single int"),
    (lambda: F.avg_pool2d(X4, 2.0), TypeError, "kernel_size must be an int"),
    (lambda: F.max_pool2d(X4[0, 0], 2), ValueError, "3-D .* or 4-D"),
    (lambda: F.max_pool1d(X4, 2), ValueError, "2-D .* or 3-D"),
    (lambda: F.max_pool2d(tl.Tensor(np.zeros((1, 0, 4, 4))), 2), ValueError, "non-zero"),
    (lambda: F.avg_pool2d(X4, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: F.adaptive_avg_pool2d(X4[0, 0], 2), ValueError, "3-D .* or 4-D"),
    (lambda: F.adaptive_avg_pool2d(X4, (1, 2, 3)), ValueError, "output_size"),
    (lambda: F.adaptive_avg_pool2d(X4, -1), ValueError, "non-negative"),
])
def test_pool_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_pool_defaults_and_empty_batch():
    x = np.random.default_rng(0).standard_normal((0, 3, 4, 4)).astype(np.float32)
    assert F.max_pool2d(tl.Tensor(x), 2).shape == (0, 3, 2, 2)
    assert F.avg_pool2d(tl.Tensor(x), 2, stride=()).shape == (0, 3, 2, 2)
    y = F.max_pool2d(tl.Tensor(np.ones((1, 1, 4, 4), np.float32)), (2,), stride=[2])
    assert y.shape == (1, 1, 2, 2) and y.dtype == np.float32


@pytest.mark.parametrize("pool", [
    lambda f, x: f.max_pool2d(x, 2), lambda f, x: f.max_pool2d(x, 3, 1, 1, 2),
    lambda f, x: f.max_pool1d(x[:, :, 0], 2), lambda f, x: f.avg_pool2d(x, 3, 1, 1),
    lambda f, x: f.adaptive_avg_pool2d(x, 2)])
def test_empty_batch_matches_torch(kernel_set, pool):
    """N = 0: torch's output shape and an empty input gradient."""
    x = np.zeros((0, 3, 5, 5), np.float32)
    ours_x, theirs_x = _both(x)
    y, y_t = pool(F, ours_x), pool(TF, theirs_x)
    assert y.shape == tuple(y_t.shape)
    y.sum().backward()
    y_t.sum().backward()
    assert ours_x.grad.shape == tuple(theirs_x.grad.shape)
