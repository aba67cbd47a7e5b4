"""``Dropout`` and ``Dropout2d``, as ``torch.nn``."""

from tensorlite import functional as F
from tensorlite.nn.module import Module

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """While training, zero each element with probability ``p`` and scale the rest by 1/(1-p);
    the identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Module):
    """While training, zero whole channels of an (N, C, H, W) or (C, H, W) input with
    probability ``p`` (one draw per channel) and scale the kept ones by 1/(1-p); the identity
    in eval mode. As ``torch.nn.Dropout2d(p=0.5, inplace=False)``, but ``inplace=True`` is an
    error: the result is always a new tensor."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout2d: dropout probability must be in [0, 1], got {p}")
        if inplace:
            raise ValueError("Dropout2d: inplace=True is not supported; use the returned tensor")
        self.p = p
        self.inplace = inplace

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
