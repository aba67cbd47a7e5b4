"""Batch-norm kernels, Numba: statistics per channel over the batch and spatial axes.

The Numba twin of ``tensorlite/kernels/numpy/batch_norm.py`` (same functions, same results to
rounding). x arrives as (N, C, L): a (N, C) input with L = 1, an (N, C, H, W) one with
L = H * W.

One ``prange`` over channels: a channel's N * L values are its own thread's, so no two threads
write the same place, and every sum is over one channel in a fixed order (rows n = 0, 1, ...,
each row x[n, c, :] summed by ``_sum64``'s SIMD order), whatever the thread count: the
same inputs give the same bytes. Every sum accumulates in float64, and y and grad_x are formed in
float64 from the float64 statistics before their one rounding to x's dtype: a float32 channel
whose mean is large against its spread (mean 3, std 1e-2) would otherwise lose digits in its
float32 sums and in x - mean. A channel of the benchmark's (64, 32, 16, 16) input is 64 KB and stays in
the core's cache between the passes over it:

* forward: the mean (one pass), the variance as the mean squared deviation from it (a second
  pass; more accurate than E[x^2] - mean^2, which cancels), then y = (x - mean) * scale + bias;
* backward: sum(grad_y) and sum(grad_y * (x - mean)) in one pass (``_dot_centered64``), then
  grad_x = scale * (grad_y - mean(grad_y) - (x - mean) * k) in a second.

For short rows (L < 16, e.g. the (N, C) input of BatchNorm1d) the wrappers first transpose x to
(1, C, N * L), so that each channel is one long contiguous row instead of N scattered pieces.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import numpy as reference
from ._common import _OPTS, _is_float, _is_float_vector, _simd_reduction

_SHORT_ROW = 16  # rows shorter than this are gathered per channel first (see the docstring)


@intrinsic
def _sum64(typingctx, a):
    """sum(a) of a contiguous 1-D float array, accumulated in float64 in a fixed order."""
    if not _is_float_vector(a):
        return None
    return types.float64(a), _simd_reduction(
        lambda builder, fma, values, acc: builder.fadd(acc, values[0]))


@intrinsic
def _sum_squared_deviations64(typingctx, a, center):
    """sum((a - center)^2) in float64 (center float64), in _sum64's order."""
    if not (_is_float_vector(a) and center == types.float64):
        return None

    def step(builder, fma, values, acc):
        deviation = builder.fsub(values[0], values[1])
        return builder.fadd(acc, builder.fmul(deviation, deviation))

    return types.float64(a, center), _simd_reduction(step)


@intrinsic
def _dot_centered64(typingctx, a, b, center):
    """sum(a * (b - center)) in float64 of two contiguous 1-D float arrays of one length
    (center float64), in _sum64's order."""
    if not (_is_float_vector(a) and _is_float_vector(b) and a.dtype == b.dtype
            and center == types.float64):
        return None

    def step(builder, fma, values, acc):
        return builder.fadd(acc, builder.fmul(values[0], builder.fsub(values[1], values[2])))

    return types.float64(a, b, center), _simd_reduction(step)


# ----------------------------------------------------------------------------
# batch norm
# reference: reference.batch_norm, reference.batch_norm_backward

@njit(parallel=True, **_OPTS)
def _batch_norm_forward(x, weight, bias, eps, out, mean, invstd, variance):
    N, C, L = x.shape
    count = np.float64(N * L)
    for c in prange(C):
        total = 0.0
        for n in range(N):
            total += _sum64(x[n, c])
        mu = total / count
        squares = 0.0
        for n in range(N):
            squares += _sum_squared_deviations64(x[n, c], mu)
        var = squares / count
        rs = 1.0 / np.sqrt(var + eps)
        scale = rs * np.float64(weight[c])
        shift = np.float64(bias[c])
        for n in range(N):
            for k in range(L):
                out[n, c, k] = (np.float64(x[n, c, k]) - mu) * scale + shift
        mean[c] = mu
        invstd[c] = rs
        variance[c] = var


@njit(parallel=True, **_OPTS)
def _batch_norm_backward(grad_y, x, weight, mean, invstd, grad_x, grad_weight, grad_bias):
    N, C, L = x.shape
    count = np.float64(N * L)
    for c in prange(C):
        mu = np.float64(mean[c])
        rs = np.float64(invstd[c])
        sum_grad = 0.0
        sum_grad_centered = 0.0
        for n in range(N):
            sum_grad += _sum64(grad_y[n, c])
            sum_grad_centered += _dot_centered64(grad_y[n, c], x[n, c], mu)
        sum_grad_xhat = sum_grad_centered * rs
        grad_bias[c] = sum_grad
        grad_weight[c] = sum_grad_xhat
        scale = rs * np.float64(weight[c])
        mean_grad = sum_grad / count
        k = sum_grad_xhat / count * rs  # xhat * mean(grad_y * xhat) = (x - mean) * k
        for n in range(N):
            for j in range(L):
                grad_x[n, c, j] = scale * ((np.float64(grad_y[n, c, j]) - mean_grad)
                                           - (np.float64(x[n, c, j]) - mu) * k)


def _channel_rows(x, dtype):
    """x (N, C, L) as a C-contiguous array the kernels read well, and a function that turns an
    (N, C, L)-shaped result of the kernel back: short rows are regrouped to (1, C, N * L)."""
    N, C, L = x.shape
    if L >= _SHORT_ROW or N == 1:
        return np.ascontiguousarray(x, dtype=dtype), lambda y: y
    gathered = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dtype).reshape(1, C, N * L)
    return gathered, lambda y: np.ascontiguousarray(y.reshape(C, N, L).transpose(1, 0, 2))


def _per_channel(value, C, dtype, default):
    return np.full(C, default, dtype) if value is None else \
        np.ascontiguousarray(value, dtype=dtype).reshape(C)


def batch_norm(x, weight, bias, eps):
    """(y, mean, invstd, var) -- see reference.batch_norm."""
    if not _is_float(x) or x.ndim != 3 or x.size == 0:
        return reference.batch_norm(x, weight, bias, eps)
    dtype = x.dtype
    C = x.shape[1]
    rows, restore = _channel_rows(x, dtype)
    out = np.empty_like(rows)
    mean = np.empty(C, dtype)
    invstd = np.empty(C, dtype)
    var = np.empty(C, dtype)
    _batch_norm_forward(rows, _per_channel(weight, C, dtype, 1), _per_channel(bias, C, dtype, 0),
                        float(eps), out, mean, invstd, var)
    return restore(out), mean, invstd, var


def batch_norm_backward(grad_y, x, weight, mean, invstd):
    """(grad_x, grad_weight, grad_bias) -- see reference.batch_norm_backward."""
    if not _is_float(x, grad_y) or x.ndim != 3 or x.size == 0:
        return reference.batch_norm_backward(grad_y, x, weight, mean, invstd)
    dtype = x.dtype
    C = x.shape[1]
    rows, restore = _channel_rows(x, dtype)
    grad_rows, _ = _channel_rows(grad_y, dtype)
    grad_x = np.empty_like(rows)
    grad_weight = np.empty(C, dtype)
    grad_bias = np.empty(C, dtype)
    _batch_norm_backward(grad_rows, rows, _per_channel(weight, C, dtype, 1),
                         _per_channel(mean, C, dtype, 0), _per_channel(invstd, C, dtype, 1),
                         grad_x, grad_weight, grad_bias)
    if weight is None:
        return restore(grad_x), None, None
    return restore(grad_x), grad_weight, grad_bias
