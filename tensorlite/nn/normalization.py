"""``LayerNorm``, as ``torch.nn.LayerNorm``."""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale by ``weight`` (ones)
    and shift by ``bias`` (zeros; omitted when ``bias=False``, as GPT configs may ask). With
    ``elementwise_affine=False`` there is neither. Arguments in PyTorch's order; ``dtype``
    defaults to float32, ``device`` may only be the CPU."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        dtype = compat.layer_dtype("LayerNorm", device, dtype)
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        affine = np.empty(normalized_shape, dtype=dtype)
        self.weight = Parameter(affine) if elementwise_affine else None
        self.bias = Parameter(affine.copy()) if elementwise_affine and bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """Weight ones, bias zeros."""
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
