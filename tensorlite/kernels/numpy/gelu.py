"""GELU, tanh approximation, and its derivative."""

import numpy as np


# ----------------------------------------------------------------------------
# GELU, tanh approximation (as in GPT-2)

GELU_SCALE = np.sqrt(2.0 / np.pi)  # sqrt(2/pi)
GELU_CUBIC = 0.044715


def gelu(x):
    """y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    dtype = x.dtype.type
    inner = dtype(GELU_SCALE) * (x + dtype(GELU_CUBIC) * x * x * x)
    return dtype(0.5) * x * (dtype(1.0) + np.tanh(inner))


def gelu_backward(x, grad_y):
    """dL/dx for the tanh GELU. With u = sqrt(2/pi) (x + 0.044715 x^3), t = tanh(u):

    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """
    dtype = x.dtype.type
    inner = dtype(GELU_SCALE) * (x + dtype(GELU_CUBIC) * x * x * x)
    t = np.tanh(inner)
    d_inner = dtype(GELU_SCALE) * (dtype(1.0) + dtype(3.0 * GELU_CUBIC) * x * x)
    local = dtype(0.5) * (dtype(1.0) + t) + dtype(0.5) * x * (dtype(1.0) - t * t) * d_inner
    return grad_y * local
