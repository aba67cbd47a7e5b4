"""Tanh GELU as one flat parallel loop.

The Numba twin of ``tensorlite/kernels/numpy/gelu.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _as, _fma, _flat, _is_float, fast_exp


# ----------------------------------------------------------------------------
# GELU
# reference: reference.gelu, reference.gelu_backward
#
# One flat parallel loop. With u = sqrt(2/pi)(x + 0.044715 x^3), the identity
# 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)) = s turns the reference's formula into
#   y      = x * s
#   dy/dx  = s + 2 x s (1 - s) * sqrt(2/pi)(1 + 3 * 0.044715 x^2)
# (since 1 - tanh^2 u = 4 s (1 - s)): one exponential and one division per element,
# no tanh call, so the float32 loop vectorises through fast_exp.

@njit(inline="always", **_OPTS)
def _gelu_denominator(v):
    """1 + exp(-2u) = 1 / s, where s = 0.5 (1 + tanh u) and u = sqrt(2/pi)(v + 0.044715 v^3)."""
    inner = _fma(_as(v, reference.GELU_CUBIC) * v * v, v, v)  # v + 0.044715 v^3
    return _as(v, 1.0) + fast_exp(_as(v, -2.0 * reference.GELU_SCALE) * inner)


@njit(parallel=True, **_OPTS)
def _gelu_forward(x, out):
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = v / _gelu_denominator(v)  # v * s


def gelu(x):
    """Tanh-approximation GELU -- see reference.gelu."""
    if not _is_float(x) or x.size == 0:
        return reference.gelu(x)
    flat = _flat(x)
    out = np.empty_like(flat)
    _gelu_forward(flat, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _gelu_backward(x, grad_y, out):
    c = _as(x, 2.0 * reference.GELU_SCALE)
    cubic3 = _as(x, 3.0 * reference.GELU_CUBIC)
    one = _as(x, 1.0)
    for i in prange(x.shape[0]):
        v = x[i]
        s = _as(v, 1.0) / _gelu_denominator(v)
        slope = c * _fma(cubic3, v * v, one)  # du/dx times 2
        out[i] = grad_y[i] * _fma(v * s * (one - s), slope, s)


def gelu_backward(x, grad_y):
    """dL/dx of the tanh GELU -- see reference.gelu_backward."""
    if not _is_float(x, grad_y) or x.size == 0:
        return reference.gelu_backward(x, grad_y)
    flat = _flat(x)
    out = np.empty_like(flat)
    _gelu_backward(flat, _flat(grad_y, x.dtype), out)
    return out.reshape(x.shape)
