"""Batch normalization layers, as ``torch.nn``: ``BatchNorm1d`` and ``BatchNorm2d``.

Per channel (axis 1 of the input), ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

* Training: mean and (biased) variance of the batch, over every axis but the channel axis; the
  running statistics move towards the batch's (with the unbiased variance, as torch) by
  ``running = (1 - momentum) * running + momentum * batch`` and ``num_batches_tracked`` counts
  the batches. ``momentum=None`` makes the running statistics a cumulative average instead
  (factor ``1 / num_batches_tracked``).
* Evaluation: the running statistics (the batch's when ``track_running_stats=False``).

The state is torch's: parameters ``weight`` (ones) and ``bias`` (zeros) when ``affine``, and
buffers ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (an int64
scalar) when ``track_running_stats``, all in ``state_dict`` under those names, so a torch
checkpoint loads by name.
"""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter
from tensorlite.tensor import Tensor, no_grad

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """What ``BatchNorm1d`` and ``BatchNorm2d`` share; they differ in the input ranks they
    accept (``_ranks``)."""

    _ranks = ()
    _expected = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        name = type(self).__name__
        dtype = compat.layer_dtype(name, device, dtype)
        if (not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool)
                or num_features < 1):
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.empty(num_features, dtype=dtype))
            self.bias = Parameter(np.empty(num_features, dtype=dtype)) if bias else None
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        """Running mean zeros, running variance ones, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        """Reset the running statistics; weight ones, bias zeros."""
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input_dim(self, input):
        if input.ndim not in self._ranks:
            raise ValueError(f"{type(self).__name__}: expected {self._expected} input, got "
                             f"shape {tuple(input.shape)} ({input.ndim}D input)")
        # Without weights or running statistics nothing has num_features entries, and torch
        # then accepts any channel count.
        sized = self.weight is not None or self.running_mean is not None
        if sized and input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected "
                             f"{self.num_features} channels on axis 1, got shape "
                             f"{tuple(input.shape)}")

    def forward(self, input):
        if not isinstance(input, Tensor):
            input = Tensor(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        # Batch statistics while training, and in evaluation when there are no running ones.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # The running statistics are passed only to be updated (training and tracked) or to be
        # used (evaluation).
        tracked = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if tracked else None,
                            self.running_var if tracked else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of an (N, C) or (N, C, L) input over its C channels, as
    ``torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None)``; see the module docstring."""

    _ranks = (2, 3)
    _expected = "a 2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of an (N, C, H, W) input over its C channels, as
    ``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None)``; see the module docstring."""

    _ranks = (4,)
    _expected = "a 4D (N, C, H, W)"
