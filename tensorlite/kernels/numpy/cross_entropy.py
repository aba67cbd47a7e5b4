"""Cross-entropy over class logits, and its backward pass."""

import numpy as np


# ----------------------------------------------------------------------------
# cross-entropy over class logits

def _logsumexp_rows(logits):
    """Stable log(sum(exp(logits), -1)) per row; a row of all -inf gives -inf."""
    m = logits.max(axis=-1)
    safe_m = np.where(np.isfinite(m), m, 0).astype(logits.dtype, copy=False)
    with np.errstate(divide="ignore"):  # log(0) = -inf for all -inf rows
        return safe_m + np.log(np.exp(logits - safe_m[:, None]).sum(axis=-1))


def cross_entropy(logits, targets, ignore_index):
    """Mean negative log-likelihood of the target class.

    logits: (N, C), targets: (N,) integers. Rows whose target equals ignore_index
    do not count. Returns (loss, logsumexp): loss is a Python float, the mean over
    counted rows of logsumexp(row) - row[target] (nan when no row counts);
    logsumexp (N,) is saved for the backward pass.
    """
    lse = _logsumexp_rows(logits)
    counted = targets != ignore_index
    safe_targets = np.where(counted, targets, 0)  # any valid index; masked below
    target_logit = logits[np.arange(logits.shape[0]), safe_targets]
    with np.errstate(invalid="ignore"):  # ignored rows may be all -inf: -inf - -inf
        per_row = np.where(counted, lse - target_logit, 0.0)
    count = int(counted.sum())
    loss = float(per_row.sum(dtype=np.float64) / count) if count > 0 else float("nan")
    return loss, lse


def cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss):
    """dL/dlogits = (softmax(logits) - onehot(targets)) * grad_loss / count.

    softmax is rebuilt from the saved logsumexp; ignored rows get zero gradient.
    """
    counted = targets != ignore_index
    count = int(counted.sum())
    with np.errstate(invalid="ignore"):  # ignored rows may be all -inf; zeroed below
        grad = np.exp(logits - logsumexp[:, None])
    rows = np.nonzero(counted)[0]
    grad[rows, targets[rows]] -= 1.0
    grad[~counted] = 0.0
    if count > 0:
        grad *= grad_loss / count
    return grad.astype(logits.dtype, copy=False)
