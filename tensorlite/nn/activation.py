"""Activation modules, as in ``torch.nn``: ``GELU``, ``ReLU``, ``Tanh``, ``Sigmoid``, ``SiLU``,
``Softmax`` and ``LogSoftmax``. Each ``forward`` is one call of the function of the same name."""

import warnings

from tensorlite import functional as F
from tensorlite import losses
from tensorlite.nn.module import Module

__all__ = ["GELU", "ReLU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax"]


class GELU(Module):
    """The GELU activation, as torch.nn.GELU: exact (x Phi(x)) by default, GPT-2's tanh
    approximation with ``approximate="tanh"``."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return x.sigmoid()


class SiLU(Module):
    """x * sigmoid(x) (also called swish)."""

    def forward(self, x):
        return losses.silu(x)


def _implicit_softmax_dim(ndim):
    # PyTorch's legacy choice when no dim is given (it warns too).
    warnings.warn("Implicit dimension choice for softmax has been deprecated; pass dim=",
                  UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """softmax along ``dim``: exp(x) / sum(exp(x))."""

    function = staticmethod(F.softmax)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = _implicit_softmax_dim(x.ndim) if self.dim is None else self.dim
        return self.function(x, axis=dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log softmax along ``dim``: x - logsumexp(x)."""

    function = staticmethod(F.log_softmax)
