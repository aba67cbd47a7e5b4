"""Gradient clipping, as `torch.nn.utils.clip_grad_norm_`."""

import math

import numpy as np

from tensorlite.tensor import Tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most max_norm.

    The norm is taken over all gradients as if concatenated into one vector.
    If it exceeds max_norm every gradient is multiplied, in place, by
    max_norm / (norm + 1e-6). Returns the norm BEFORE clipping, as a float.
    Parameters whose grad is None are ignored.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    with_grad, seen = [], set()
    for p in parameters:
        if p.grad is not None and id(p) not in seen:  # a tied weight counts once
            seen.add(id(p))
            with_grad.append(p)
    if not with_grad:
        return 0.0
    grads = [p.grad.data for p in with_grad]

    norm_type = float(norm_type)
    if norm_type == math.inf:
        total_norm = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:
        # dot(g, g) is the sum of squares, computed by BLAS.
        total_norm = math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads))
    else:
        total_norm = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1.0 / norm_type)

    if error_if_nonfinite and not math.isfinite(total_norm):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total_norm}")

    clip_coef = float(max_norm) / (total_norm + 1e-6)
    if clip_coef < 1.0:
        for p in with_grad:
            grad = p.grad
            if grad.data.flags.writeable:
                grad.data *= np.asarray(clip_coef, dtype=grad.dtype)
                grad._version_counter[0] += 1
            else:  # a read-only gradient (say a broadcast view) cannot be scaled in place
                p.grad = Tensor(grad.data * np.asarray(clip_coef, dtype=grad.dtype))
    return total_norm
