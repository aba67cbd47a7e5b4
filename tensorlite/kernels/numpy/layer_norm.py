"""Layer normalisation over the last axis of a 2-D input."""

import numpy as np


# ----------------------------------------------------------------------------
# layer norm over the last axis of a 2-D input

def layer_norm(x, weight, bias, eps):
    """y = (x - mean) * rstd * weight + bias, row by row.

    x: (N, C); weight, bias: (C,) or None (meaning ones / zeros).
    mean = x.mean(-1), var = biased variance, rstd = 1 / sqrt(var + eps).
    Returns (y (N, C), mean (N,), rstd (N,)); mean and rstd are saved for backward.
    """
    mean = x.mean(axis=-1)
    centered = x - mean[:, None]
    var = (centered * centered).mean(axis=-1)
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    y = centered * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean, rstd


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """Gradients of layer_norm given grad_y (N, C) and the saved mean, rstd.

    With xhat = (x - mean) * rstd and g = grad_y * weight:
      grad_x      = rstd * (g - mean(g) - xhat * mean(g * xhat))   # per row
      grad_weight = sum over rows of grad_y * xhat                  # (C,)
      grad_bias   = sum over rows of grad_y                         # (C,)
    weight None means ones. Returns (grad_x, grad_weight, grad_bias).
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = grad_y if weight is None else grad_y * weight
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    grad_x = rstd[:, None] * (g - g_mean - xhat * gx_mean)
    grad_weight = (grad_y * xhat).sum(axis=0)
    grad_bias = grad_y.sum(axis=0)
    dtype = x.dtype
    return (grad_x.astype(dtype, copy=False), grad_weight.astype(dtype, copy=False),
            grad_bias.astype(dtype, copy=False))
