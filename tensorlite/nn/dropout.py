"""``Dropout``, as ``torch.nn.Dropout``."""

from tensorlite import functional as F
from tensorlite.nn.module import Module

__all__ = ["Dropout"]


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
