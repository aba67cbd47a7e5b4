"""`torch.nn.utils`'s names: gradient clipping, and parameters as one flat vector.

`clip_grad_norm_` is the one in `tensorlite/optim/clip_grad.py` (the trainer reaches it as
`tl.optim.clip_grad_norm_`); torch programs reach it here.
"""

import numpy as np

from tensorlite.autograd.grad_mode import no_grad
from tensorlite.optim.clip_grad import clip_grad_norm_
from tensorlite.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters):
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient, in place, to [-clip_value, clip_value] (`foreach` is accepted and
    ignored). Parameters whose grad is None are skipped."""
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        if p.grad is not None:
            p.grad.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """The parameters' values concatenated, flattened, into one new 1-D Tensor (a copy)."""
    return Tensor(np.concatenate([np.asarray(p.data).reshape(-1) for p in _as_list(parameters)]))


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of the 1-D `vec` into each parameter, in place, in order."""
    values = np.asarray(vec.data if isinstance(vec, Tensor) else vec)
    if values.ndim != 1:
        raise TypeError(f"vector_to_parameters: expected a 1-D vector, got shape {values.shape}")
    parameters = _as_list(parameters)
    needed = sum(p.numel() for p in parameters)
    if values.size != needed:
        raise ValueError(f"vector_to_parameters: the vector has {values.size} elements, the "
                         f"parameters {needed}")
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(Tensor(values[offset:offset + n].reshape(p.shape).astype(p.dtype)))
            offset += n
