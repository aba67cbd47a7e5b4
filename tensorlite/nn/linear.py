"""``Linear`` (y = x W^T + b) and ``Identity``, as in ``torch.nn``."""

import math

import numpy as np

from tensorlite import functional as F
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter
# rng(): the library-wide generator that every layer initialisation draws from, so
# tl.manual_seed(seed) makes model initialisation reproducible.
from tensorlite.tensor import rng as _rng

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch's does."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features).

    Initialised like PyTorch: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)] (this is what
    kaiming_uniform(a=sqrt(5)) works out to).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        rng = _rng()
        self.weight = Parameter(rng.uniform(-bound, bound, size=(out_features, in_features)), dtype)
        self.bias = Parameter(rng.uniform(-bound, bound, size=(out_features,)), dtype) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
