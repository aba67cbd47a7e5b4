"""Layer normalisation over the last axis, with per-thread partial sums in backward.

The Numba twin of ``tensorlite/kernels/numpy/layer_norm.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import numpy as np
import numba
from numba import njit, prange

from .. import numpy as reference
from ._common import (_OPTS, _as, _dot, _fma, _flat, _is_float, _sum,
                      _sum_squared_deviations)


# ----------------------------------------------------------------------------
# layer norm
# reference: reference.layer_norm, reference.layer_norm_backward
#
# Forward: per row, mean and variance (two passes over a row that sits in L1) and the
# normalised, scaled, shifted output. Backward: rows are cut into one chunk per thread;
# each chunk writes its rows of grad_x and sums its own partial grad_weight/grad_bias,
# and the few partial sums are added at the end (no two threads write the same place).
# A row's grad_y * weight (in a scratch row per chunk) and xhat (in its row of grad_x,
# until the last pass overwrites it) are computed once, for both row sums and the end.

@njit(parallel=True, **_OPTS)
def _layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    n_rows, n_cols = x.shape
    inv_n = _as(x, 1.0) / _as(x, n_cols)
    for i in prange(n_rows):
        row = x[i]
        mu = _sum(row) * inv_n
        y = out[i]
        rs = _as(row, 1.0) / np.sqrt(_sum_squared_deviations(row, mu) * inv_n + eps)
        for j in range(n_cols):
            y[j] = _fma((row[j] - mu) * rs, weight[j], bias[j])
        mean[i] = mu
        rstd[i] = rs


def layer_norm(x, weight, bias, eps):
    """(y, mean, rstd) of layer normalisation over the last axis -- see
    reference.layer_norm."""
    if not _is_float(x) or x.ndim != 2 or x.size == 0:
        return reference.layer_norm(x, weight, bias, eps)
    x = np.ascontiguousarray(x)
    n_rows, n_cols = x.shape
    weight = np.ones(n_cols, x.dtype) if weight is None else _flat(weight, x.dtype)
    bias = np.zeros(n_cols, x.dtype) if bias is None else _flat(bias, x.dtype)
    out = np.empty_like(x)
    mean = np.empty(n_rows, x.dtype)
    rstd = np.empty(n_rows, x.dtype)
    _layer_norm_forward(x, weight, bias, x.dtype.type(eps), out, mean, rstd)
    return out, mean, rstd


@njit(parallel=True, **_OPTS)
def _layer_norm_backward(grad_y, x, weight, mean, rstd, grad_x, partial_w, partial_b, scratch):
    n_rows, n_cols = x.shape
    n_chunks = partial_w.shape[0]
    rows_per_chunk = (n_rows + n_chunks - 1) // n_chunks
    inv_n = _as(x, 1.0) / _as(x, n_cols)
    for chunk in prange(n_chunks):
        dw = partial_w[chunk]
        db = partial_b[chunk]
        g = scratch[chunk]  # the row's grad_y * weight
        for i in range(chunk * rows_per_chunk, min(n_rows, (chunk + 1) * rows_per_chunk)):
            mu = mean[i]
            rs = rstd[i]
            gy = grad_y[i]
            xr = x[i]
            gxr = grad_x[i]  # first the row's xhat, then its gradient
            for j in range(n_cols):
                g[j] = gy[j] * weight[j]
                gxr[j] = (xr[j] - mu) * rs
            g_mean = _sum(g) * inv_n
            gx_mean = _dot(g, gxr) * inv_n
            for j in range(n_cols):
                xhat = gxr[j]
                gxr[j] = rs * _fma(-xhat, gx_mean, g[j] - g_mean)
                dw[j] = _fma(gy[j], xhat, dw[j])
                db[j] += gy[j]


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """(grad_x, grad_weight, grad_bias) -- see reference.layer_norm_backward."""
    if not _is_float(x, grad_y) or x.ndim != 2 or x.size == 0:
        return reference.layer_norm_backward(grad_y, x, weight, mean, rstd)
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    n_rows, n_cols = x.shape
    weight = np.ones(n_cols, dtype) if weight is None else _flat(weight, dtype)
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    partial_w = np.zeros((n_chunks, n_cols), dtype)
    partial_b = np.zeros((n_chunks, n_cols), dtype)
    grad_x = np.empty_like(x)
    _layer_norm_backward(np.ascontiguousarray(grad_y, dtype=dtype), x, weight,
                         _flat(mean, dtype), _flat(rstd, dtype), grad_x, partial_w, partial_b,
                         np.empty((n_chunks, n_cols), dtype))
    return grad_x, partial_w.sum(axis=0), partial_b.sum(axis=0)
