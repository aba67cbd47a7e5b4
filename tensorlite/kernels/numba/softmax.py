"""Softmax and log-softmax over the last axis, fused row by row.

The Numba twin of ``tensorlite/kernels/numpy/softmax.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _as, _dot, _fma, _is_float, _max, _rows, _sum, fast_exp


# ----------------------------------------------------------------------------
# softmax
# reference: reference.softmax, reference.softmax_backward
#
# One pass per row for the max, one for exp and the sum (stored into the output),
# one to scale; rows are spread over threads.

@njit(parallel=True, **_OPTS)
def _softmax_forward(x, out):
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        row = x[i]
        y = out[i]
        row_max = row[0]
        for j in range(1, n_cols):
            row_max = _max(row_max, row[j])
        for j in range(n_cols):
            y[j] = fast_exp(row[j] - row_max)
        inv_total = _as(row, 1.0) / _sum(y)
        for j in range(n_cols):
            y[j] *= inv_total


def softmax(x):
    """softmax over the last axis -- see reference.softmax."""
    if not _is_float(x) or x.ndim == 0 or x.size == 0:
        return reference.softmax(x)
    x2 = _rows(x)
    out = np.empty_like(x2)
    _softmax_forward(x2, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _softmax_backward(y, grad_y, out):
    n_rows, n_cols = y.shape
    for i in prange(n_rows):
        y_row = y[i]
        g_row = grad_y[i]
        o = out[i]
        dot = _dot(g_row, y_row)
        for j in range(n_cols):
            o[j] = y_row[j] * (g_row[j] - dot)


def softmax_backward(y, grad_y):
    """y * (grad_y - sum(grad_y * y)) -- see reference.softmax_backward."""
    if not _is_float(y, grad_y) or y.ndim == 0 or y.size == 0:
        return reference.softmax_backward(y, grad_y)
    y2 = _rows(y)
    out = np.empty_like(y2)
    _softmax_backward(y2, _rows(grad_y, y.dtype), out)
    return out.reshape(y.shape)


# ----------------------------------------------------------------------------
# log-softmax
# reference: reference.log_softmax, reference.log_softmax_backward

@njit(parallel=True, **_OPTS)
def _log_softmax_forward(x, out):
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        row = x[i]
        row_max = row[0]
        for j in range(1, n_cols):
            row_max = _max(row_max, row[j])
        o = out[i]
        for j in range(n_cols):
            o[j] = fast_exp(row[j] - row_max)  # the exponentials, summed next
        shift = row_max + np.log(_sum(o))  # logsumexp of the row
        for j in range(n_cols):
            o[j] = row[j] - shift


def log_softmax(x):
    """x - logsumexp(x) over the last axis -- see reference.log_softmax."""
    if not _is_float(x) or x.ndim == 0 or x.size == 0:
        return reference.log_softmax(x)
    x2 = _rows(x)
    out = np.empty_like(x2)
    _log_softmax_forward(x2, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _log_softmax_backward(y, grad_y, out):
    n_rows, n_cols = y.shape
    for i in prange(n_rows):
        y_row = y[i]
        g_row = grad_y[i]
        total = _sum(g_row)
        o = out[i]
        for j in range(n_cols):
            o[j] = _fma(-fast_exp(y_row[j]), total, g_row[j])


def log_softmax_backward(y, grad_y):
    """grad_y - exp(y) * sum(grad_y) -- see reference.log_softmax_backward."""
    if not _is_float(y, grad_y) or y.ndim == 0 or y.size == 0:
        return reference.log_softmax_backward(y, grad_y)
    y2 = _rows(y)
    out = np.empty_like(y2)
    _log_softmax_backward(y2, _rows(grad_y, y.dtype), out)
    return out.reshape(y.shape)
