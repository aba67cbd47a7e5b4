"""``Linear`` (y = x W^T + b) and ``Identity``, as in ``torch.nn``."""

import math

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch's does."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features).

    Initialised as PyTorch does (``reset_parameters``): the weight by
    ``init.kaiming_uniform_(weight, a=sqrt(5))``, which works out to uniform in
    [-1/sqrt(in_features), 1/sqrt(in_features)], and the bias uniform in that same range.
    ``dtype`` defaults to float32; ``device`` may only be the CPU.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        dtype = compat.layer_dtype("Linear", device, dtype)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        self.bias = Parameter(np.empty(out_features, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh initial values (from tensorlite's generator, see ``tl.manual_seed``)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
