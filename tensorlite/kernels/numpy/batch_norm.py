"""Batch-norm kernels, reference: statistics per channel over the batch and spatial axes.

Contract shared with numba/batch_norm.py (the op in tensorlite/ops/batch_norm.py calls these
through tensorlite.kernels in training mode). x arrives as (N, C, L): a (N, C) input with L = 1,
an (N, C, H, W) one with L = H * W.

The math is layer norm's (numpy/layer_norm.py) with the roles of the axes exchanged: here each
channel is normalised over its M = N * L values, and weight and bias are per channel.
"""

import numpy as np


def batch_norm(x, weight, bias, eps):
    """(y, mean, invstd): mean and invstd = 1 / sqrt(biased var + eps) of each channel, (C,),
    and y = (x - mean) * invstd * weight + bias (weight, bias (C,) or None)."""
    mean = x.mean(axis=(0, 2))  # (C,)
    centered = x - mean[:, None]  # (N, C, L)
    var = (centered * centered).mean(axis=(0, 2))  # biased: divided by M
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    scale = invstd if weight is None else invstd * weight  # (C,)
    y = centered * scale[:, None]
    if bias is not None:
        y = y + bias[:, None]
    return y.astype(x.dtype, copy=False), mean, invstd


def batch_norm_backward(grad_y, x, weight, mean, invstd):
    """(grad_x, grad_weight, grad_bias) of batch_norm (the last two None when weight is None).

    With xhat = (x - mean) * invstd and M = N * L values per channel:
      grad_bias   = sum of grad_y over (N, L)                         # (C,)
      grad_weight = sum of grad_y * xhat over (N, L)                  # (C,)
      grad_x      = weight * invstd * (grad_y - grad_bias / M - xhat * grad_weight / M)
    """
    xhat = (x - mean[:, None]) * invstd[:, None]  # (N, C, L)
    sum_grad = grad_y.sum(axis=(0, 2))  # (C,)
    sum_grad_xhat = (grad_y * xhat).sum(axis=(0, 2))  # (C,)
    count = x.shape[0] * x.shape[2]
    scale = invstd if weight is None else invstd * weight
    grad_x = scale[:, None] * (grad_y - (sum_grad / count)[:, None]
                               - xhat * (sum_grad_xhat / count)[:, None])
    dtype = x.dtype
    if weight is None:
        return grad_x.astype(dtype, copy=False), None, None
    return (grad_x.astype(dtype, copy=False), sum_grad_xhat.astype(dtype, copy=False),
            sum_grad.astype(dtype, copy=False))
