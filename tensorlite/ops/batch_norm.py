"""Batch normalization, `F.batch_norm`, as torch's: per channel of an (N, C), (N, C, L) or
(N, C, H, W) input (any (N, C, ...)), with running statistics.

Training (training=True): each channel is normalised with the mean and the biased variance of
its N * L values in this batch, y = (x - mean) / sqrt(var + eps) * weight + bias, by one fused
op (BatchNorm) whose forward and backward are the kernels of
tensorlite/kernels/{numpy,numba}/batch_norm.py. When running_mean and running_var are given they
are updated in place, outside autograd, as torch does:

    running_mean = (1 - momentum) running_mean + momentum mean
    running_var  = (1 - momentum) running_var  + momentum var * M / (M - 1)   (unbiased)

Evaluation (training=False): the running statistics are constants, and y is the affine map
(x - running_mean) * (weight / sqrt(running_var + eps)) + bias, written with Tensor operations.

Second derivatives. The training backward has three outputs (grad_x, grad_weight, grad_bias),
so as layer norm does (tensorlite/ops/nn.py) a create_graph backward writes the same formulas
with differentiable Tensor operations instead of calling the kernel.
"""

from __future__ import annotations

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.ops.arguments import _check_float_dtypes
from tensorlite.tensor import Tensor

__all__ = ["batch_norm"]


class BatchNorm(Function):
    """Training-mode batch norm of x (N, C, ...) with weight and bias (C,), both inputs or both
    absent; the batch statistics it computes update the running ones (arrays, in place)."""

    def forward(self, x, weight=None, bias=None, eps=1e-5, running=None):
        self.eps = eps
        N, C = x.shape[:2]
        rows = x.reshape(N, C, -1)  # (N, C, L)
        self.save_for_backward(x, weight) if weight is not None else self.save_for_backward(x)
        y, self.mean, self.invstd, var = kernels.batch_norm(rows, weight, bias, eps)
        if running is not None:
            _update_running_stats(*running, self.mean, var, rows.shape[0] * rows.shape[2])
        return y.reshape(x.shape)

    def backward(self, grad):
        x, weight = self.saved if len(self.saved) == 2 else (self.saved[0], None)
        if isinstance(grad, Tensor):  # create_graph
            return _batch_norm_backward_composite(grad, x, weight, self.eps)
        N, C = x.shape[:2]
        rows = x.reshape(N, C, -1)
        grad_x, grad_weight, grad_bias = kernels.batch_norm_backward(
            grad.reshape(rows.shape), rows, weight, self.mean, self.invstd)
        if weight is None:
            return (grad_x.reshape(x.shape),)
        return grad_x.reshape(x.shape), grad_weight, grad_bias


def _batch_norm_backward_composite(grad, x, weight, eps):
    """The kernel's formulas in differentiable operations, over the axes other than channels:
    xhat = (x - mean) * invstd,
    grad_x = weight * invstd * (grad - mean(grad) - xhat * mean(grad * xhat)),
    grad_weight = sum(grad * xhat), grad_bias = sum(grad)."""
    axes = (0,) + tuple(range(2, x.ndim))
    per_channel = (-1,) + (1,) * (x.ndim - 2)  # (C, 1, ...) broadcasts against (N, C, ...)
    centered = x - x.mean(axis=axes, keepdims=True)
    invstd = ((centered * centered).mean(axis=axes, keepdims=True) + eps) ** -0.5
    xhat = centered * invstd
    grad_x = invstd * (grad - grad.mean(axis=axes, keepdims=True)
                       - xhat * (grad * xhat).mean(axis=axes, keepdims=True))
    if weight is None:
        return (grad_x,)
    return grad_x * weight.reshape(per_channel), (grad * xhat).sum(axis=axes), grad.sum(axis=axes)


def _update_running_stats(running_mean, running_var, momentum, mean, var, count):
    """The in-place update of torch's running statistics, from the kernel's biased variance
    made unbiased with M / (M - 1). (Recovering var from invstd as 1 / invstd^2 - eps would
    cancel when var is far below eps.)"""
    var = var.astype(np.float64) * (count / (count - 1))
    for running, batch in ((running_mean, mean), (running_var, var)):
        if running is not None:
            running[...] = (1.0 - momentum) * running + momentum * batch


def _array(value):
    return value._data if isinstance(value, Tensor) else np.asarray(value)


def _check_per_channel(name, value, C, input_shape):
    if value is not None and tuple(np.shape(_array(value))) != (C,):
        raise ValueError(f"batch_norm: {name} of shape {tuple(np.shape(_array(value)))} does not "
                         f"match the {C} channels of input shape {input_shape} (expected ({C},))")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5) -> Tensor:
    """As torch's `F.batch_norm` on input (N, C, ...): see the module docstring. In training
    each channel needs more than one value (N * L > 1); running_mean and running_var (Tensors
    or arrays of C values, or None) are then updated in place. Out of training they are
    required and used instead of the batch's statistics."""
    shape = tuple(input.shape)
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, ...), got shape {shape}")
    C = shape[1]
    named = (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
             ("bias", bias))
    for name, value in named:
        _check_per_channel(name, value, C, shape)
    _check_float_dtypes("batch_norm", input, named[2:] + named[:2])  # weight, bias, running_*
    if training:
        per_channel = shape[0] * int(np.prod(shape[2:]))
        if per_channel == 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {shape}")
        if per_channel == 0:  # as torch: an empty result, running statistics unchanged
            return _batch_norm_empty(input, weight, bias)
        running = None
        if running_mean is not None or running_var is not None:
            running = (None if running_mean is None else _array(running_mean),
                       None if running_var is None else _array(running_var), float(momentum))
        if weight is None and bias is None:
            out = BatchNorm.apply(input, eps=eps, running=running)
        else:
            dtype = input.dtype
            weight = Tensor._make(np.ones(C, dtype), False) if weight is None else weight
            bias = Tensor._make(np.zeros(C, dtype), False) if bias is None else bias
            out = BatchNorm.apply(input, weight, bias, eps=eps, running=running)
        for stat in (running_mean, running_var):
            if isinstance(stat, Tensor):
                stat._version_counter[0] += 1  # changed in place, as by an in-place op
        return out
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: running_mean and running_var are required when "
                         "training=False")
    return _batch_norm_eval(input, running_mean, running_var, weight, bias, eps)


def _batch_norm_empty(x, weight, bias):
    """The training result of an input without values (N = 0 or L = 0): empty, with zero
    gradients for weight and bias, from a per-channel affine map that sums over nothing."""
    per_channel = (-1,) + (1,) * (x.ndim - 2)
    y = x * 1.0
    if weight is not None:
        y = y * weight.reshape(per_channel)
    return y if bias is None else y + bias.reshape(per_channel)


def _batch_norm_eval(x, running_mean, running_var, weight, bias, eps):
    """(x - running_mean) * weight / sqrt(running_var + eps) + bias, per channel."""
    dtype = x.dtype

    def constant(value):
        return value if isinstance(value, Tensor) else Tensor._make(
            np.asarray(value, dtype=dtype), False)

    per_channel = (-1,) + (1,) * (x.ndim - 2)
    scale = (constant(running_var) + eps) ** -0.5
    if weight is not None:
        scale = scale * weight
    y = (x - constant(running_mean).reshape(per_channel)) * scale.reshape(per_channel)
    return y if bias is None else y + constant(bias).reshape(per_channel)
