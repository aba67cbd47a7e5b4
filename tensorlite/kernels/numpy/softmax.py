"""Softmax and log-softmax over the last axis, and their backward passes."""

import numpy as np


# ----------------------------------------------------------------------------
# softmax and log-softmax over the last axis

def softmax(x):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.

    Subtracting the row maximum changes nothing mathematically but keeps exp
    from overflowing.
    """
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, grad_y):
    """dL/dx for y = softmax(x): the Jacobian is diag(y) - y y^T, so

    grad_x = y * (grad_y - sum(grad_y * y, -1, keepdims))
    """
    dot = (grad_y * y).sum(axis=-1, keepdims=True)
    return y * (grad_y - dot)


def log_softmax(x):
    """y = x - logsumexp(x) over the last axis (stable: the max is factored out)."""
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, grad_y):
    """dL/dx for y = log_softmax(x): grad_x = grad_y - softmax(x) * sum(grad_y).

    softmax(x) is recovered from the saved output as exp(y).
    """
    return grad_y - np.exp(y) * grad_y.sum(axis=-1, keepdims=True)
