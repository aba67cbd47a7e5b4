"""Recurrent cell kernels, Numba: the LSTM and GRU cell updates after the matrix products,
and the whole-sequence loops around them.

Same contract as numpy/rnn.py (the ops in tensorlite/ops/rnn.py call these). The products
x @ W_ih^T (for all time steps at once) are done by the caller with BLAS; a cell kernel does
the rest of one time step, a sequence kernel every step of one direction, h_prev @ W_hh^T
included. Gate order as PyTorch: LSTM (i, f, g, o), GRU (r, z, n).

What is done differently from the reference: one parallel loop over the batch rows; for each
row a few short loops over the hidden units (the gates' nonlinearities, then the state update),
where NumPy makes about ten temporary (B, H) arrays. In float32 the sigmoid is
1 / (1 + exp(-x)) and the tanh sign(x) (1 - e) / (1 + e) with e = exp(-2|x|), both through
``fast_exp``, so the loops compile to SIMD code; in float64 they use the library exp and tanh.
Either way a value is within a few eps (absolute; the values lie in [-1, 1]) of the
reference's (tests/test_rnn_kernels.py derives the bounds).

The wrappers take contiguous float32/float64 arrays (copying a view once if they must) and
fall back to the reference for anything else, so only two specialisations compile per kernel.
"""

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..numpy import rnn as reference
from ._common import _OPTS, _as, _is_float, fast_exp
from ._gemm import _NO_TRANS, _TRANS, _blas_constants, _xxgemm


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
# One batch row of a cell, the shared inner loops of the step and sequence kernels. Each loop
# reads few arrays and writes one or two, so LLVM vectorises it (one loop doing every gate of a
# unit at once touches too many arrays for its aliasing checks, and runs 5x slower).

@njit(inline="always", **_OPTS)
def _lstm_row(gates, c_prev, h, c, a):
    H = c_prev.shape[0]
    for j in range(2 * H):  # i, f
        a[j] = _sigmoid(gates[j])
    for j in range(2 * H, 3 * H):  # g
        a[j] = _tanh(gates[j])
    for j in range(3 * H, 4 * H):  # o
        a[j] = _sigmoid(gates[j])
    for j in range(H):
        cj = a[H + j] * c_prev[j] + a[j] * a[2 * H + j]
        c[j] = cj
        h[j] = a[3 * H + j] * _tanh(cj)


@njit(inline="always", **_OPTS)
def _lstm_row_backward(dh, dc, a, c_prev, c, out):
    """out = grad of the gates; dc: the gradient reaching c on entry, c_prev's on exit."""
    H = c.shape[0]
    one = _as(c[0], 1.0)
    for j in range(H):  # dc and the o gate
        tc = _tanh(c[j])
        o = a[3 * H + j]
        dc[j] = dc[j] + dh[j] * o * (one - tc * tc)
        out[3 * H + j] = dh[j] * tc * o * (one - o)
    for j in range(H):  # i, f, g, and dc_prev = dc f
        i, f, g, d = a[j], a[H + j], a[2 * H + j], dc[j]
        out[j] = d * g * i * (one - i)
        out[H + j] = d * c_prev[j] * f * (one - f)
        out[2 * H + j] = d * i * (one - g * g)
        dc[j] = d * f


@njit(inline="always", **_OPTS)
def _gru_row(x, y, h_prev, h, a):
    H = h_prev.shape[0]
    one = _as(h_prev[0], 1.0)
    for j in range(2 * H):  # r, z
        a[j] = _sigmoid(x[j] + y[j])
    for j in range(H):
        n = _tanh(x[2 * H + j] + a[j] * y[2 * H + j])
        a[2 * H + j] = n
        z = a[H + j]
        h[j] = (one - z) * n + z * h_prev[j]


@njit(inline="always", **_OPTS)
def _gru_row_backward(dh, a, y, h_prev, gx, gy, dh_prev):
    H = h_prev.shape[0]
    one = _as(h_prev[0], 1.0)
    for j in range(H):  # the n and z gates, and the part of grad_h_prev through the update
        z, n = a[H + j], a[2 * H + j]
        gx[2 * H + j] = dh[j] * (one - z) * (one - n * n)
        gx[H + j] = dh[j] * (h_prev[j] - n) * z * (one - z)
        dh_prev[j] = dh[j] * z
    for j in range(H):  # the r gate, and what reaches gh
        r, dn_pre = a[j], gx[2 * H + j]
        dr_pre = dn_pre * y[2 * H + j] * r * (one - r)
        gx[j] = dr_pre
        gy[j] = dr_pre
        gy[H + j] = gx[H + j]
        gy[2 * H + j] = dn_pre * r


# ----------------------------------------------------------------------------
# LSTM
# reference: reference.lstm_cell, reference.lstm_cell_backward

@njit(parallel=True, **_OPTS)
def _lstm_forward(gates, c_prev, h, c, act):
    for b in prange(gates.shape[0]):
        _lstm_row(gates[b], c_prev[b], h[b], c[b], act[b])


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
def _lstm_backward(grad_h, act, c_prev, c, grad_gates, grad_c_prev):
    for b in prange(c.shape[0]):
        _lstm_row_backward(grad_h[b], grad_c_prev[b], act[b], c_prev[b], c[b], grad_gates[b])


def lstm_cell_backward(grad_h, grad_c, activations, c_prev, c):
    """(grad_gates, grad_c_prev) of lstm_cell -- see reference.lstm_cell_backward."""
    if not _is_float(grad_h, grad_c, activations, c_prev, c) or c.size == 0 or c.ndim != 2:
        return reference.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)
    grad_h, activations, c_prev, c = _contiguous(grad_h, activations, c_prev, c)
    grad_gates = np.empty_like(activations)
    grad_c_prev = np.array(grad_c, dtype=c.dtype, order="C")  # updated in place to dc_prev
    _lstm_backward(grad_h, activations, c_prev, c, grad_gates, grad_c_prev)
    return grad_gates, grad_c_prev


# ----------------------------------------------------------------------------
# GRU
# reference: reference.gru_cell, reference.gru_cell_backward

@njit(parallel=True, **_OPTS)
def _gru_forward(gi, gh, h_prev, h, act):
    for b in prange(gi.shape[0]):
        _gru_row(gi[b], gh[b], h_prev[b], h[b], act[b])


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
    for b in prange(h_prev.shape[0]):
        _gru_row_backward(grad_h[b], act[b], gh[b], h_prev[b], grad_gi[b], grad_gh[b],
                          grad_h_prev[b])


def gru_cell_backward(grad_h, activations, gh, h_prev):
    """(grad_gi, grad_gh, grad_h_prev) of gru_cell -- see reference.gru_cell_backward."""
    if not _is_float(grad_h, activations, gh, h_prev) or h_prev.size == 0 or h_prev.ndim != 2:
        return reference.gru_cell_backward(grad_h, activations, gh, h_prev)
    grad_h, activations, gh, h_prev = _contiguous(grad_h, activations, gh, h_prev)
    grad_gi, grad_gh = np.empty_like(activations), np.empty_like(activations)
    grad_h_prev = np.empty_like(h_prev)
    _gru_backward(grad_h, activations, gh, h_prev, grad_gi, grad_gh, grad_h_prev)
    return grad_gi, grad_gh, grad_h_prev


# ----------------------------------------------------------------------------
# Whole sequences
# reference: reference.lstm_sequence, reference.lstm_sequence_backward,
#            reference.gru_sequence, reference.gru_sequence_backward
#
# The batch rows of a recurrence are independent of each other for the whole sequence, so the
# rows are cut into one block per thread and each thread runs ALL the time steps of its block:
# per step one BLAS product (its rows of h_prev @ W_hh^T, BLAS on one thread) and the cell
# loops. One parallel launch per sequence instead of two per step, and no barrier between
# steps: a step's wait for the slower thread, or for a thread descheduled on a busy machine,
# is what made per-step launches slow. The forward products read a copy of W_hh^T stored
# row-major (H, G H): OpenBLAS's single-threaded sgemm took 181 us for a (16, 256) @ (256, 1024)
# product read that way, 225 us through the transposed flag (Zen 4, thread CPU time).

@njit(**_OPTS)
def _product(kind, a, b, transpose_b, c, one_ptr, beta_ptr):
    """c = a @ op(b) + beta c by BLAS, op(b) = b^T when transpose_b; 2-D views whose rows are
    contiguous (beta a pointer to 0 or 1)."""
    itemsize = c.itemsize
    lda = max(a.strides[0] // itemsize, a.shape[1], 1)
    ldb = max(b.strides[0] // itemsize, b.shape[1], 1)
    ldc = max(c.strides[0] // itemsize, c.shape[1], 1)
    # Row-major C = A @ B is column-major C^T = B^T @ A^T: pass B first, swap m and n.
    _xxgemm(kind, np.int8(_TRANS if transpose_b else _NO_TRANS), np.int8(_NO_TRANS),
            c.shape[1], c.shape[0], a.shape[1], one_ptr, b.ctypes.data, ldb, a.ctypes.data,
            lda, beta_ptr, c.ctypes.data, ldc)


@njit(inline="always", **_OPTS)
def _block(k, blocks, B):
    return k * B // blocks, (k + 1) * B // blocks


@njit(inline="always", **_OPTS)
def _step(s, T, reverse):
    """(step t visited s-th, the step before it in time or -1 at the sequence's start)."""
    if reverse:
        t = T - 1 - s
        return t, (t + 1 if s > 0 else -1)
    return s, (s - 1 if s > 0 else -1)


@njit(parallel=True, **_OPTS)
def _lstm_sequence(kind, gi, w_hh_t, h0, c0, reverse, blocks, hs, cs, act, one_ptr):
    T, B = gi.shape[0], gi.shape[1]
    for k in prange(blocks):
        r0, r1 = _block(k, blocks, B)
        gates = np.empty((r1 - r0, gi.shape[2]), dtype=gi.dtype)
        for s in range(T):
            t, t_prev = _step(s, T, reverse)
            h_prev = h0[r0:r1] if t_prev < 0 else hs[t_prev, r0:r1]
            c_prev = c0[r0:r1] if t_prev < 0 else cs[t_prev, r0:r1]
            gates[:] = gi[t, r0:r1]
            _product(kind, h_prev, w_hh_t, False, gates, one_ptr, one_ptr)  # += h_prev W_hh^T
            for b in range(r1 - r0):
                _lstm_row(gates[b], c_prev[b], hs[t, r0 + b], cs[t, r0 + b], act[t, r0 + b])


def _blocks(B):
    return max(1, min(numba.get_num_threads(), B))


def lstm_sequence(gi, w_hh, h0, c0, reverse):
    """(hs, cs, activations) of an LSTM over a sequence -- see reference.lstm_sequence."""
    if not _is_float(gi, w_hh, h0, c0) or gi.size == 0 or h0.shape[-1] == 0:
        return reference.lstm_sequence(gi, w_hh, h0, c0, reverse)
    gi, w_hh_t, h0, c0 = _contiguous(gi, w_hh.T, h0, c0)  # W_hh^T stored as such: see above
    hs = np.empty(gi.shape[:2] + h0.shape[-1:], dtype=gi.dtype)
    cs, activations = np.empty_like(hs), np.empty_like(gi)
    kind, one, _ = _blas_constants(gi.dtype)
    _lstm_sequence(kind, gi, w_hh_t, h0, c0, bool(reverse), _blocks(gi.shape[1]), hs, cs,
                   activations, one)
    return hs, cs, activations


@njit(parallel=True, **_OPTS)
def _lstm_sequence_backward(kind, grad_hs, act, cs, c0, w_hh, reverse, blocks, grad_gates,
                            grad_h0, grad_c, one_ptr, zero_ptr):
    T, B, H = grad_hs.shape
    for k in prange(blocks):
        r0, r1 = _block(k, blocks, B)
        dh = grad_h0[r0:r1]  # the gradient reaching h from the later step; grad h0 at the end
        dh[:] = 0
        dh_total = np.empty((r1 - r0, H), dtype=grad_hs.dtype)
        for s in range(T):
            t, t_prev = _step(T - 1 - s, T, reverse)
            c_prev = c0[r0:r1] if t_prev < 0 else cs[t_prev, r0:r1]
            for b in range(r1 - r0):
                row, total, later = grad_hs[t, r0 + b], dh_total[b], dh[b]
                for j in range(H):
                    total[j] = row[j] + later[j]
                _lstm_row_backward(total, grad_c[r0 + b], act[t, r0 + b], c_prev[b],
                                   cs[t, r0 + b], grad_gates[t, r0 + b])
            _product(kind, grad_gates[t, r0:r1], w_hh, False, dh, one_ptr, zero_ptr)


def lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh, reverse):
    """(grad_gates, grad_h0, grad_c0) of lstm_sequence -- see reference.lstm_sequence_backward."""
    if not _is_float(grad_hs, grad_c, activations, cs, c0, w_hh) or grad_hs.size == 0:
        return reference.lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh,
                                                reverse)
    grad_hs, activations, cs, c0, w_hh = _contiguous(grad_hs, activations, cs, c0, w_hh)
    grad_gates = np.empty_like(activations)
    grad_h0 = np.empty_like(c0)
    grad_c0 = np.array(grad_c, dtype=c0.dtype, order="C")  # carried back to c0 in place
    kind, one, zero = _blas_constants(c0.dtype)
    _lstm_sequence_backward(kind, grad_hs, activations, cs, c0, w_hh, bool(reverse),
                            _blocks(c0.shape[0]), grad_gates, grad_h0, grad_c0, one, zero)
    return grad_gates, grad_h0, grad_c0


@njit(parallel=True, **_OPTS)
def _gru_sequence(kind, gi, w_hh_t, b_hh, h0, reverse, blocks, hs, gh, act, one_ptr):
    T, B = gi.shape[0], gi.shape[1]
    for k in prange(blocks):
        r0, r1 = _block(k, blocks, B)
        for s in range(T):
            t, t_prev = _step(s, T, reverse)
            h_prev = h0[r0:r1] if t_prev < 0 else hs[t_prev, r0:r1]
            rows = gh[t, r0:r1]
            for b in range(r1 - r0):
                rows[b] = b_hh
            _product(kind, h_prev, w_hh_t, False, rows, one_ptr, one_ptr)  # b_hh + h_prev W_hh^T
            for b in range(r1 - r0):
                _gru_row(gi[t, r0 + b], rows[b], h_prev[b], hs[t, r0 + b], act[t, r0 + b])


def gru_sequence(gi, w_hh, b_hh, h0, reverse):
    """(hs, gh, activations) of a GRU over a sequence -- see reference.gru_sequence."""
    if not _is_float(gi, w_hh, h0) or gi.size == 0 or h0.shape[-1] == 0:
        return reference.gru_sequence(gi, w_hh, b_hh, h0, reverse)
    b_hh = np.zeros(gi.shape[-1], gi.dtype) if b_hh is None else b_hh
    gi, w_hh_t, b_hh, h0 = _contiguous(gi, w_hh.T, b_hh, h0)  # W_hh^T stored as such
    hs = np.empty(gi.shape[:2] + h0.shape[-1:], dtype=gi.dtype)
    gh, activations = np.empty_like(gi), np.empty_like(gi)
    kind, one, _ = _blas_constants(gi.dtype)
    _gru_sequence(kind, gi, w_hh_t, b_hh, h0, bool(reverse), _blocks(gi.shape[1]), hs, gh,
                  activations, one)
    return hs, gh, activations


@njit(parallel=True, **_OPTS)
def _gru_sequence_backward(kind, grad_hs, act, gh, hs, h0, w_hh, reverse, blocks, grad_gi,
                           grad_gh, grad_h0, one_ptr):
    T, B, H = grad_hs.shape
    for k in prange(blocks):
        r0, r1 = _block(k, blocks, B)
        dh = grad_h0[r0:r1]  # the gradient reaching h from the later step; grad h0 at the end
        dh[:] = 0
        dh_total = np.empty((r1 - r0, H), dtype=grad_hs.dtype)
        for s in range(T):
            t, t_prev = _step(T - 1 - s, T, reverse)
            h_prev = h0[r0:r1] if t_prev < 0 else hs[t_prev, r0:r1]
            for b in range(r1 - r0):
                row, total, later = grad_hs[t, r0 + b], dh_total[b], dh[b]
                for j in range(H):
                    total[j] = row[j] + later[j]
                _gru_row_backward(total, act[t, r0 + b], gh[t, r0 + b], h_prev[b],
                                  grad_gi[t, r0 + b], grad_gh[t, r0 + b], dh[b])
            _product(kind, grad_gh[t, r0:r1], w_hh, False, dh, one_ptr, one_ptr)  # += dgh W_hh


def gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse):
    """(grad_gi, grad_gh, grad_h0) of gru_sequence -- see reference.gru_sequence_backward."""
    if not _is_float(grad_hs, activations, gh, hs, h0, w_hh) or grad_hs.size == 0:
        return reference.gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse)
    grad_hs, activations, gh, hs, h0, w_hh = _contiguous(grad_hs, activations, gh, hs, h0, w_hh)
    grad_gi, grad_gh = np.empty_like(activations), np.empty_like(activations)
    grad_h0 = np.empty_like(h0)
    kind, one, _ = _blas_constants(h0.dtype)
    _gru_sequence_backward(kind, grad_hs, activations, gh, hs, h0, w_hh, bool(reverse),
                           _blocks(h0.shape[0]), grad_gi, grad_gh, grad_h0, one)
    return grad_gi, grad_gh, grad_h0
