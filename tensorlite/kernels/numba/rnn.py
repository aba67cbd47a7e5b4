"""Recurrent cell kernels, Numba: the LSTM and GRU cell updates after the matrix products.

Same contract as numpy/rnn.py (the ops in tensorlite/ops/rnn.py call these through
tensorlite.kernels). The products x @ W_ih^T (for all time steps at once) and h @ W_hh^T (per
step) are done by the caller with BLAS; a cell kernel does the rest of one time step in one pass.
Gate order as PyTorch: LSTM (i, f, g, o), GRU (r, z, n).

What is done differently from the reference: one parallel loop over the batch rows, and for
each row one pass over the H hidden units that reads the 4 (or 3) gate pre-activations of a
unit, applies the nonlinearities, updates the state and writes everything, where NumPy makes
about ten temporary (B, H) arrays. In float32 the sigmoid is 1 / (1 + exp(-x)) and the tanh
sign(x) (1 - e) / (1 + e) with e = exp(-2|x|), both through ``fast_exp``, so the loop over
units compiles to SIMD code; in float64 they use the library exp and tanh. Either way a value
is within a few eps (absolute; the values lie in [-1, 1]) of the reference's.

The wrappers take contiguous float32/float64 arrays (copying a view once if they must) and
fall back to the reference for anything else, so only two specialisations compile per kernel.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .. import numpy as reference
from ._common import _OPTS, _as, _is_float, fast_exp


# ----------------------------------------------------------------------------
# Activations, scalar, inlined into the loops

def _tanh(x):
    """tanh(x); float32 through fast_exp (vectorisable), float64 the library tanh."""
    return np.tanh(x)


def _tanh_float32(x):
    e = fast_exp(np.float32(-2.0) * abs(x))
    t = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    return t if x >= np.float32(0.0) else -t


@overload(_tanh)
def _tanh_impl(x):
    if x == types.float32:
        return _tanh_float32
    return lambda x: np.tanh(x)


@njit(inline="always", **_OPTS)
def _sigmoid(x):
    return _as(x, 1.0) / (_as(x, 1.0) + fast_exp(-x))


def _contiguous(*arrays):
    dtype = arrays[0].dtype
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


# ----------------------------------------------------------------------------
# LSTM
# reference: reference.lstm_cell, reference.lstm_cell_backward

@njit(parallel=True, **_OPTS)
def _lstm_forward(gates, c_prev, h, c, act):
    H = c_prev.shape[1]
    for b in prange(gates.shape[0]):
        row, a, cp, hb, cb = gates[b], act[b], c_prev[b], h[b], c[b]
        for j in range(2 * H):  # i, f
            a[j] = _sigmoid(row[j])
        for j in range(2 * H, 3 * H):  # g
            a[j] = _tanh(row[j])
        for j in range(3 * H, 4 * H):  # o
            a[j] = _sigmoid(row[j])
        for j in range(H):
            cj = a[H + j] * cp[j] + a[j] * a[2 * H + j]
            cb[j] = cj
            hb[j] = a[3 * H + j] * _tanh(cj)


def lstm_cell(gates, c_prev):
    """(h, c, activations) of one LSTM step -- see reference.lstm_cell."""
    if not _is_float(gates, c_prev) or gates.size == 0 or gates.ndim != 2:
        return reference.lstm_cell(gates, c_prev)
    gates, c_prev = _contiguous(gates, c_prev)
    h, c = np.empty_like(c_prev), np.empty_like(c_prev)
    activations = np.empty_like(gates)
    _lstm_forward(gates, c_prev, h, c, activations)
    return h, c, activations


@njit(parallel=True, **_OPTS)
def _lstm_backward(grad_h, grad_c, act, c_prev, c, grad_gates, grad_c_prev):
    H = c.shape[1]
    one = _as(c, 1.0)
    for b in prange(c.shape[0]):
        a, out, dc = act[b], grad_gates[b], grad_c_prev[b]
        dh, cb, cp, gc = grad_h[b], c[b], c_prev[b], grad_c[b]
        for j in range(H):  # dc (kept in grad_c_prev for now) and the o gate
            tc = _tanh(cb[j])
            o = a[3 * H + j]
            dc[j] = gc[j] + dh[j] * o * (one - tc * tc)
            out[3 * H + j] = dh[j] * tc * o * (one - o)
        for j in range(H):  # i, f, g, and dc_prev = dc f
            i, f, g, d = a[j], a[H + j], a[2 * H + j], dc[j]
            out[j] = d * g * i * (one - i)
            out[H + j] = d * cp[j] * f * (one - f)
            out[2 * H + j] = d * i * (one - g * g)
            dc[j] = d * f


def lstm_cell_backward(grad_h, grad_c, activations, c_prev, c):
    """(grad_gates, grad_c_prev) of lstm_cell -- see reference.lstm_cell_backward."""
    if not _is_float(grad_h, grad_c, activations, c_prev, c) or c.size == 0 or c.ndim != 2:
        return reference.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)
    grad_h, grad_c, activations, c_prev, c = _contiguous(grad_h, grad_c, activations, c_prev, c)
    grad_gates = np.empty_like(activations)
    grad_c_prev = np.empty_like(c)
    _lstm_backward(grad_h, grad_c, activations, c_prev, c, grad_gates, grad_c_prev)
    return grad_gates, grad_c_prev


# ----------------------------------------------------------------------------
# GRU
# reference: reference.gru_cell, reference.gru_cell_backward

@njit(parallel=True, **_OPTS)
def _gru_forward(gi, gh, h_prev, h, act):
    H = h_prev.shape[1]
    one = _as(h_prev, 1.0)
    for b in prange(gi.shape[0]):
        x, y, a, hp, hb = gi[b], gh[b], act[b], h_prev[b], h[b]
        for j in range(2 * H):  # r, z
            a[j] = _sigmoid(x[j] + y[j])
        for j in range(H):
            n = _tanh(x[2 * H + j] + a[j] * y[2 * H + j])
            a[2 * H + j] = n
            z = a[H + j]
            hb[j] = (one - z) * n + z * hp[j]


def gru_cell(gi, gh, h_prev):
    """(h, activations) of one GRU step -- see reference.gru_cell."""
    if not _is_float(gi, gh, h_prev) or gi.size == 0 or gi.ndim != 2:
        return reference.gru_cell(gi, gh, h_prev)
    gi, gh, h_prev = _contiguous(gi, gh, h_prev)
    h = np.empty_like(h_prev)
    activations = np.empty_like(gi)
    _gru_forward(gi, gh, h_prev, h, activations)
    return h, activations


@njit(parallel=True, **_OPTS)
def _gru_backward(grad_h, act, gh, h_prev, grad_gi, grad_gh, grad_h_prev):
    H = h_prev.shape[1]
    one = _as(h_prev, 1.0)
    for b in prange(h_prev.shape[0]):
        a, y, gx, gy = act[b], gh[b], grad_gi[b], grad_gh[b]
        dh, hp, dhp = grad_h[b], h_prev[b], grad_h_prev[b]
        for j in range(H):  # the n and z gates, and grad_h_prev
            z, n = a[H + j], a[2 * H + j]
            gx[2 * H + j] = dh[j] * (one - z) * (one - n * n)
            gx[H + j] = dh[j] * (hp[j] - n) * z * (one - z)
            dhp[j] = dh[j] * z
        for j in range(H):  # the r gate, and what reaches gh
            r, dn_pre = a[j], gx[2 * H + j]
            dr_pre = dn_pre * y[2 * H + j] * r * (one - r)
            gx[j] = dr_pre
            gy[j] = dr_pre
            gy[H + j] = gx[H + j]
            gy[2 * H + j] = dn_pre * r


def gru_cell_backward(grad_h, activations, gh, h_prev):
    """(grad_gi, grad_gh, grad_h_prev) of gru_cell -- see reference.gru_cell_backward."""
    if not _is_float(grad_h, activations, gh, h_prev) or h_prev.size == 0 or h_prev.ndim != 2:
        return reference.gru_cell_backward(grad_h, activations, gh, h_prev)
    grad_h, activations, gh, h_prev = _contiguous(grad_h, activations, gh, h_prev)
    grad_gi, grad_gh = np.empty_like(activations), np.empty_like(activations)
    grad_h_prev = np.empty_like(h_prev)
    _gru_backward(grad_h, activations, gh, h_prev, grad_gi, grad_gh, grad_h_prev)
    return grad_gi, grad_gh, grad_h_prev
