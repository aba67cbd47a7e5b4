"""Batch-norm kernels, reference: statistics per channel over the batch and spatial axes.

Contract shared with numba/batch_norm.py (the op in tensorlite/ops/batch_norm.py calls these
through tensorlite.kernels in training mode). x arrives as (N, C, L): a (N, C) input with L = 1,
an (N, C, H, W) one with L = H * W.

The math is layer norm's (numpy/layer_norm.py) with the roles of the axes exchanged: here each
channel is normalised over its M = N * L values, and weight and bias are per channel.
"""

import numpy as np


def batch_norm(x, weight, bias, eps):
    """(y, mean, invstd, var), the last three (C,) in x's dtype: each channel's mean, its biased
    variance var (divided by M), invstd = 1 / sqrt(var + eps), and
    y = (x - mean) * invstd * weight + bias (weight, bias (C,) or None).

    The sums accumulate in float64 and y is formed in float64 from the float64 statistics
    before one rounding to x's dtype (numba/batch_norm.py does the same): the op's running
    variance takes var itself, which 1 / invstd^2 - eps would lose when var is far below eps."""
    dtype = x.dtype
    x64 = x.astype(np.float64)
    count = x.shape[0] * x.shape[2]
    mean = x.sum(axis=(0, 2), dtype=np.float64) / count  # (C,)
    centered = x64 - mean[:, None]  # (N, C, L)
    var = (centered * centered).sum(axis=(0, 2)) / count  # biased: divided by M
    invstd = 1.0 / np.sqrt(var + eps)
    scale = invstd if weight is None else invstd * np.asarray(weight, np.float64)  # (C,)
    y = centered * scale[:, None]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[:, None]
    return (y.astype(dtype), mean.astype(dtype), invstd.astype(dtype), var.astype(dtype))


def batch_norm_backward(grad_y, x, weight, mean, invstd):
    """(grad_x, grad_weight, grad_bias) of batch_norm (the last two None when weight is None).

    With xhat = (x - mean) * invstd and M = N * L values per channel:
      grad_bias   = sum of grad_y over (N, L)                         # (C,)
      grad_weight = sum of grad_y * xhat over (N, L)                  # (C,)
      grad_x      = weight * invstd * (grad_y - grad_bias / M - xhat * grad_weight / M)
    in float64 from the given mean and invstd, each result rounded once to x's dtype.
    """
    dtype = x.dtype
    grad_y = grad_y.astype(np.float64)
    invstd = np.asarray(invstd, np.float64)
    xhat = (x.astype(np.float64) - np.asarray(mean, np.float64)[:, None]) * invstd[:, None]
    sum_grad = grad_y.sum(axis=(0, 2))  # (C,)
    sum_grad_xhat = (grad_y * xhat).sum(axis=(0, 2))  # (C,)
    count = x.shape[0] * x.shape[2]
    scale = invstd if weight is None else invstd * np.asarray(weight, np.float64)
    grad_x = scale[:, None] * (grad_y - (sum_grad / count)[:, None]
                               - xhat * (sum_grad_xhat / count)[:, None])
    if weight is None:
        return grad_x.astype(dtype), None, None
    return grad_x.astype(dtype), sum_grad_xhat.astype(dtype), sum_grad.astype(dtype)
