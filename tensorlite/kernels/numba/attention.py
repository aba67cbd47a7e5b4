"""Attention, one (batch item, head) per thread, the attention matrix never stored.

The Numba twin of ``tensorlite/kernels/numpy/attention.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import math

import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _as, _dot, _is_float, _max, _sum, fast_exp
from ._gemm import _NO_TRANS, _TRANS, _blas_constants, _xxgemm


# ----------------------------------------------------------------------------
# attention
# reference: reference.attention, reference.attention_backward
#
# One (batch item, head) per prange iteration, from start to end, with the whole
# (Tq, Tk) attention matrix of that head in a small scratch array that stays in cache:
# forward is one BLAS product (q @ k^T), the scaled, masked softmax row by row in place,
# and a second product straight into the output. Backward
# rebuilds the probabilities from the saved logsumexp (q @ k^T again) and runs its other
# four products and the softmax backward the same way. The (batch, head) item owns its rows of every output,
# so no two threads write the same place, and nothing of size (B, nh, Tq, Tk) is ever
# allocated. BLAS reads q, k and v in place through their row strides, so the heads of
# a packed q/k/v projection need no copy. The products themselves are left to BLAS
# because at these sizes (64 x 64 x 32) a loop written here, without SIMD intrinsics,
# runs 2-4x slower than its kernels.
#
# The causal mask is never built: query row i sees keys j < visible = i + Tk - Tq + 1.
# The max, exponential and scaling loops stop at `visible` and the rest of the row is set
# to 0, so no exponential is computed for a masked key, and the row's sum and dot
# products, which run over the whole row, add zeros there.

@njit(**_OPTS)
def _product(kind, a, transpose_a, b, transpose_b, c, one_ptr, beta_ptr):
    """c = op(a) @ op(b) + beta * c by BLAS, op(x) = x.T when transpose_x, beta 0 or 1 (a
    pointer to it). All three are 2-D views with unit stride along their rows (the wrappers
    ensure it)."""
    itemsize = c.itemsize
    lda = max(a.strides[0] // itemsize, a.shape[1], 1)
    ldb = max(b.strides[0] // itemsize, b.shape[1], 1)
    ldc = max(c.strides[0] // itemsize, c.shape[1], 1)
    k = a.shape[0] if transpose_a else a.shape[1]
    # Row-major C = A @ B is column-major C^T = B^T @ A^T: pass B first, swap m and n.
    _xxgemm(kind, np.int8(_TRANS if transpose_b else _NO_TRANS),
            np.int8(_TRANS if transpose_a else _NO_TRANS), c.shape[1], c.shape[0], k,
            one_ptr, b.ctypes.data, ldb, a.ctypes.data, lda, beta_ptr, c.ctypes.data, ldc)


# Causal attention works in blocks of this many queries: a block's products stop at the last
# key its last query sees, which skips much of the masked upper triangle (at T = 256, 37% of
# the products' work: 10-20% of the kernels' time measured) for a few more BLAS calls.
ATTENTION_QUERY_BLOCK = 64


@njit(**_OPTS)
def _query_blocks(n_query, is_causal):
    """(block size, number of blocks) for the queries of one head."""
    size = min(ATTENTION_QUERY_BLOCK, n_query) if is_causal else n_query
    return size, (n_query + size - 1) // size


@njit(parallel=True, **_OPTS)
def _attention_forward(kind, q, k, v, scale, is_causal, out, logsumexp, one_ptr, zero_ptr):
    n_batch, n_head, n_query, _ = q.shape
    n_key = k.shape[2]
    offset = n_key - n_query
    minus_inf = _as(q, -np.inf)
    zero = _as(q, 0.0)
    block, _ = _query_blocks(n_query, is_causal)
    for item in prange(n_batch * n_head):
        b = item // n_head
        h = item - b * n_head
        scratch = np.empty((block, n_key), q.dtype)
        for first in range(0, n_query, block):
            last = min(first + block, n_query)  # queries [first, last)
            seen = last + offset if is_causal else n_key  # keys [0, seen)
            probabilities = scratch[:last - first, :seen]
            _product(kind, q[b, h, first:last], False, k[b, h, :seen], True, probabilities,
                     one_ptr, zero_ptr)
            for r in range(last - first):  # scores -> probabilities, in place
                row = scratch[r, :seen]  # (a row of a C array keeps _sum's SIMD layout)
                # Keys [visible, seen) are masked: their probability is 0, and no
                # exponential is computed for them.
                visible = first + r + offset + 1 if is_causal else n_key
                row_max = minus_inf
                for j in range(visible):
                    row_max = _max(row_max, row[j] * scale)
                for j in range(visible):
                    row[j] = fast_exp(row[j] * scale - row_max)
                row[visible:] = zero
                total = _sum(row)
                inv_total = _as(q, 1.0) / total
                for j in range(visible):
                    row[j] *= inv_total
                logsumexp[b, h, first + r] = row_max + np.log(total)
            _product(kind, probabilities, False, v[b, h, :seen], False, out[b, h, first:last],
                     one_ptr, zero_ptr)


def _heads(x):
    """x (..., T, D) as a 4-D (batch, head, T, D) array that BLAS can read: a view where
    NumPy can make one, copied if D is not its unit-stride axis."""
    x = x.reshape((-1,) + x.shape[-3:]) if x.ndim >= 4 else x.reshape((1,) * (4 - x.ndim) + x.shape)
    row_stride, column_stride = x.strides[-2:]
    if column_stride != x.itemsize or (x.shape[-2] > 1 and row_stride < x.shape[-1] * x.itemsize):
        x = np.ascontiguousarray(x)
    return x


def _empty_heads(batch_shape, n, dim, dtype, count=1):
    """`count` pairs of an empty (..., n, dim) array and its 4-D (batch, head, n, dim) view
    for the kernel, stored as (batch, n, head, dim): after attention a GPT moves the head axis
    next to D to merge the heads, which is then a view, not a copy.

    The pairs share one (batch, n, count, head, dim) storage: with count 3, the gradients of
    q, k and v laid out as the packed projection they were split from, so the engine finds
    that projection's gradient already assembled (`engine._assemble`)."""
    heads = batch_shape[-1] if batch_shape else 1
    together = np.empty((math.prod(batch_shape[:-1]), n, count, heads, dim), dtype)
    pairs = []
    for i in range(count):
        view4 = together[:, :, i].transpose(0, 2, 1, 3)
        pairs.append((view4.reshape(batch_shape + (n, dim)), view4))  # a view: only axis 0 split
    return pairs


def _attention_supported(*arrays):
    return (_is_float(*arrays) and all(a.dtype == arrays[0].dtype for a in arrays)
            and all(a.size > 0 for a in arrays))


def attention(q, k, v, scale, is_causal):
    """softmax(q @ k^T * scale [causal mask]) @ v and its logsumexp -- see
    reference.attention."""
    reference._check_attention(q, k, v, is_causal)
    if not _attention_supported(q, k, v):
        return reference.attention(q, k, v, scale, is_causal)
    n_query, dim = q.shape[-2:]
    (out, out4), = _empty_heads(q.shape[:-2], n_query, dim, q.dtype)
    logsumexp = np.empty(q.shape[:-1], q.dtype)
    kind, one, zero = _blas_constants(q.dtype)
    _attention_forward(kind, _heads(q), _heads(k), _heads(v), q.dtype.type(scale),
                       bool(is_causal), out4, logsumexp.reshape(out4.shape[:-1]), one, zero)
    return out, logsumexp


@njit(parallel=True, **_OPTS)
def _attention_backward(kind, grad, q, k, v, logsumexp, scale, is_causal, grad_q, grad_k,
                        grad_v, one_ptr, zero_ptr):
    n_batch, n_head, n_query, _ = q.shape
    n_key = k.shape[2]
    offset = n_key - n_query
    zero = _as(q, 0.0)
    block, n_blocks = _query_blocks(n_query, is_causal)
    for item in prange(n_batch * n_head):
        b = item // n_head
        h = item - b * n_head
        scratch = np.empty((block, n_key), q.dtype)
        grad_scratch = np.empty((block, n_key), q.dtype)
        # Last block first: it sees every key, so it writes grad_k and grad_v whole (beta 0)
        # and the earlier blocks add to the keys they see (beta 1).
        for index in range(n_blocks - 1, -1, -1):
            first = index * block
            last = min(first + block, n_query)
            seen = last + offset if is_causal else n_key
            accumulate = zero_ptr if index == n_blocks - 1 else one_ptr
            probabilities = scratch[:last - first, :seen]
            grad_scores = grad_scratch[:last - first, :seen]
            _product(kind, q[b, h, first:last], False, k[b, h, :seen], True, probabilities,
                     one_ptr, zero_ptr)
            _product(kind, grad[b, h, first:last], False, v[b, h, :seen], True, grad_scores,
                     one_ptr, zero_ptr)  # grad_p = grad @ v^T
            # Per row, in place: the probabilities rebuilt from the saved logsumexp, then the
            # softmax backward p * (grad_p - rowsum(p * grad_p)) * scale.
            for r in range(last - first):
                row = scratch[r, :seen]
                grad_row = grad_scratch[r, :seen]
                visible = first + r + offset + 1 if is_causal else n_key
                lse = logsumexp[b, h, first + r]
                for j in range(visible):
                    row[j] = fast_exp(row[j] * scale - lse)
                row[visible:] = zero
                delta = _dot(row, grad_row)
                for j in range(visible):
                    grad_row[j] = row[j] * (grad_row[j] - delta) * scale
                grad_row[visible:] = zero
            _product(kind, probabilities, True, grad[b, h, first:last], False,
                     grad_v[b, h, :seen], one_ptr, accumulate)
            _product(kind, grad_scores, False, k[b, h, :seen], False, grad_q[b, h, first:last],
                     one_ptr, zero_ptr)
            _product(kind, grad_scores, True, q[b, h, first:last], False, grad_k[b, h, :seen],
                     one_ptr, accumulate)


def attention_backward(grad, q, k, v, logsumexp, scale, is_causal):
    """(grad_q, grad_k, grad_v) of attention -- see reference.attention_backward."""
    reference._check_attention(q, k, v, is_causal)
    if not (_attention_supported(grad, q, k, v, logsumexp) and grad.shape == q.shape
            and logsumexp.shape == q.shape[:-1]):
        return reference.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)
    n_query, n_key, dim = q.shape[-2], k.shape[-2], q.shape[-1]
    if n_query == n_key:  # self-attention: q, k and v were most likely split from one array
        (grad_q, grad_q4), (grad_k, grad_k4), (grad_v, grad_v4) = _empty_heads(
            q.shape[:-2], n_query, dim, q.dtype, count=3)
    else:
        (grad_q, grad_q4), (grad_k, grad_k4), (grad_v, grad_v4) = (
            _empty_heads(q.shape[:-2], n, dim, q.dtype)[0] for n in (n_query, n_key, n_key))
    kind, one, zero = _blas_constants(q.dtype)
    _attention_backward(kind, _heads(grad), _heads(q), _heads(k), _heads(v),
                        np.ascontiguousarray(logsumexp).reshape(grad_q4.shape[:-1]),
                        q.dtype.type(scale), bool(is_causal), grad_q4, grad_k4, grad_v4,
                        one, zero)
    return grad_q, grad_k, grad_v
