"""``LayerNorm``, as ``torch.nn.LayerNorm``."""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale by ``weight`` (ones) and
    shift by ``bias`` (zeros; omitted when ``bias=False``, as GPT configs may ask)."""

    def __init__(self, normalized_shape, bias=True, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = Parameter(np.ones(normalized_shape), dtype)
        self.bias = Parameter(np.zeros(normalized_shape), dtype) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"
