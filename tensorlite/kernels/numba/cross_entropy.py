"""Cross-entropy over class logits, fused row by row.

The Numba twin of ``tensorlite/kernels/numpy/cross_entropy.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import numpy as np
import numba
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _as, _flat, _is_float, _max, _sum, fast_exp


# ----------------------------------------------------------------------------
# cross-entropy
# reference: reference.cross_entropy, reference.cross_entropy_backward
#
# Forward: per row, logsumexp and the row's loss; the exponentials go to a scratch
# row (one per thread's chunk of rows) so that _sum adds them in its fixed order.
# Backward: softmax rebuilt from the saved logsumexp, minus the one-hot, times the
# scale, written once.

@njit(parallel=True, **_OPTS)
def _cross_entropy_forward(logits, targets, ignore_index, logsumexp, row_loss, exps):
    n_rows, n_cols = logits.shape
    n_chunks = exps.shape[0]
    rows_per_chunk = (n_rows + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        e = exps[chunk]  # scratch row: a row's exponentials, summed next
        for i in range(chunk * rows_per_chunk, min(n_rows, (chunk + 1) * rows_per_chunk)):
            row = logits[i]
            row_max = row[0]
            for j in range(1, n_cols):
                row_max = _max(row_max, row[j])
            # A row of all -inf (or with +inf) has no finite max to shift by.
            shift = row_max if np.isfinite(row_max) else _as(row, 0.0)
            for j in range(n_cols):
                e[j] = fast_exp(row[j] - shift)
            lse = shift + np.log(_sum(e))
            logsumexp[i] = lse
            target = targets[i]
            row_loss[i] = lse - row[target] if target != ignore_index else 0.0


def _check_targets(targets, n_classes, ignore_index):
    counted = targets != ignore_index
    bad = counted & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        raise IndexError(f"target {targets[bad][0]} is out of range for {n_classes} classes")
    return counted


def cross_entropy(logits, targets, ignore_index):
    """(mean loss as a float, logsumexp per row) -- see reference.cross_entropy."""
    if not _is_float(logits) or logits.ndim != 2 or logits.size == 0:
        return reference.cross_entropy(logits, targets, ignore_index)
    logits = np.ascontiguousarray(logits)
    targets = _flat(targets, np.int64)
    counted = _check_targets(targets, logits.shape[1], ignore_index)
    n_rows = logits.shape[0]
    logsumexp = np.empty(n_rows, logits.dtype)
    row_loss = np.empty(n_rows, np.float64)
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    _cross_entropy_forward(logits, targets, ignore_index, logsumexp, row_loss,
                           np.empty((n_chunks, logits.shape[1]), logits.dtype))
    count = int(np.count_nonzero(counted))
    loss = float(row_loss.sum() / count) if count > 0 else float("nan")
    return loss, logsumexp


@njit(parallel=True, **_OPTS)
def _cross_entropy_backward(logits, targets, logsumexp, ignore_index, scale, out):
    n_rows, n_cols = logits.shape
    for i in prange(n_rows):
        row = logits[i]
        o = out[i]
        target = targets[i]
        if target == ignore_index:
            for j in range(n_cols):
                o[j] = _as(row, 0.0)
        else:
            lse = logsumexp[i]
            for j in range(n_cols):
                o[j] = fast_exp(row[j] - lse) * scale
            o[target] -= scale


def cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss):
    """(softmax - onehot) * grad_loss / count, ignored rows 0 -- see
    reference.cross_entropy_backward."""
    if not _is_float(logits) or logits.ndim != 2 or logits.size == 0:
        return reference.cross_entropy_backward(logits, targets, logsumexp, ignore_index,
                                                grad_loss)
    dtype = logits.dtype
    logits = np.ascontiguousarray(logits)
    targets = _flat(targets, np.int64)
    counted = _check_targets(targets, logits.shape[1], ignore_index)
    count = int(np.count_nonzero(counted))
    scale = dtype.type(float(grad_loss) / count if count > 0 else 0.0)
    out = np.empty_like(logits)
    _cross_entropy_backward(logits, targets, _flat(logsumexp, dtype), ignore_index, scale, out)
    return out
