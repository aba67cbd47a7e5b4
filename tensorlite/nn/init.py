"""Weight initialisation, as ``torch.nn.init``.

Every function fills a tensor in place, without recording anything for autograd (as under
``tl.no_grad()``), and returns that tensor, so it works on a ``Parameter`` of a built model::

    from tensorlite.nn import init

    layer = nn.Linear(256, 128)
    init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    init.zeros_(layer.bias)

Random draws come from tensorlite's generator (``tl.rng()``, seeded by ``tl.manual_seed``), or
from ``generator=`` when one is given (a ``numpy.random.Generator``). Values are drawn in
float64 and then stored in the tensor's dtype.

Fans follow PyTorch: for a weight of shape ``(out, in, *kernel)`` (a ``Linear`` weight is
``(out, in)``, a convolution's ``(out_channels, in_channels / groups, kH, kW)``),
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

The gains of ``calculate_gain`` (the factor that keeps the variance of activations steady
through a nonlinearity):

============================================  ===========================
linear, conv{1,2,3}d, conv_transpose{1,2,3}d  1
sigmoid                                       1
tanh                                          5/3
relu                                          sqrt(2)
leaky_relu                                    sqrt(2 / (1 + slope ** 2))
selu                                          3/4
============================================  ===========================
"""

import math
import numbers
import warnings

import numpy as np

from tensorlite.tensor import Tensor, no_grad, rng

__all__ = [
    "calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
    "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "orthogonal_",
]

_GAIN_ONE = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity`` (see the table in the module docstring);
    ``param`` is leaky_relu's negative slope (default 0.01)."""
    if nonlinearity in _GAIN_ONE:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


# ----------------------------------------------------------------------------------------------
# Helpers: fans, the generator, writing in place
# ----------------------------------------------------------------------------------------------

def _shape(tensor):
    if not isinstance(tensor, (Tensor, np.ndarray)):
        raise TypeError(f"nn.init expects a Tensor (or a NumPy array), got {type(tensor).__name__}")
    return tuple(tensor.shape)


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *receptive_field), as PyTorch counts
    them; a tensor of fewer than two dimensions has no fans."""
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         "dimensions")
    receptive_field_size = math.prod(shape[2:])
    return shape[1] * receptive_field_size, shape[0] * receptive_field_size


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _generator(generator):
    if generator is None:
        return rng()
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a numpy.random.Generator or None, got "
                    f"{type(generator).__name__}")


def _write(tensor, values):
    """Store ``values`` into ``tensor``'s memory (cast to its dtype); returns the tensor."""
    if isinstance(tensor, Tensor):
        with no_grad():  # a Parameter is a leaf that requires grad: only writable here
            tensor[...] = values
    else:
        tensor[...] = values
    return tensor


# ----------------------------------------------------------------------------------------------
# Fixed values
# ----------------------------------------------------------------------------------------------

def constant_(tensor, val):
    """Fill ``tensor`` with ``val``."""
    _shape(tensor)
    return _write(tensor, val)


def ones_(tensor):
    """Fill ``tensor`` with ones."""
    return constant_(tensor, 1.0)


def zeros_(tensor):
    """Fill ``tensor`` with zeros."""
    return constant_(tensor, 0.0)


def eye_(tensor):
    """Fill the 2-D ``tensor`` with the identity matrix (ones on the diagonal, zeros elsewhere;
    a non-square one too), which preserves the inputs of a ``Linear`` layer."""
    shape = _shape(tensor)
    if len(shape) != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _write(tensor, np.eye(*shape))


# ----------------------------------------------------------------------------------------------
# Random values
# ----------------------------------------------------------------------------------------------

def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill ``tensor`` with values drawn uniformly from [a, b)."""
    shape = _shape(tensor)
    return _write(tensor, _generator(generator).uniform(a, b, size=shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill ``tensor`` with values drawn from the normal distribution N(mean, std**2)."""
    shape = _shape(tensor)
    return _write(tensor, _generator(generator).normal(mean, std, size=shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill ``tensor`` with values from N(mean, std**2) conditioned on lying in [a, b] (bounds
    in the tensor's units, not in standard deviations).

    Drawn by inverting the normal CDF on a uniform draw between CDF(a) and CDF(b), so every
    draw is kept, however narrow or distant the interval."""
    from scipy.special import erfinv  # scipy is a dependency; loaded only by those who use this

    shape = _shape(tensor)
    if not a < b:
        raise ValueError(f"trunc_normal_: the interval [a, b] = [{a}, {b}] is empty")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=2)

    def normal_cdf(x):
        return (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0)))) / 2.0

    # Uniform on [2 CDF(a) - 1, 2 CDF(b) - 1], then erfinv: standard normal values / sqrt(2).
    low, high = 2 * normal_cdf(a) - 1, 2 * normal_cdf(b) - 1
    values = erfinv(_generator(generator).uniform(low, high, size=shape))
    values = mean + std * math.sqrt(2.0) * values
    return _write(tensor, np.clip(values, a, b))  # rounding may land a hair outside


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): uniform on [-bound, bound] with
    bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # a uniform on [-bound, bound] has standard deviation std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor, a, mode, nonlinearity, op):
    """gain / sqrt(fan), or None for a tensor without elements (which is left alone)."""
    if 0 in _shape(tensor):
        warnings.warn(f"Initializing zero-element tensors is a no-op ({op})", stacklevel=3)
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): uniform on [-bound, bound] with bound = gain * sqrt(3 / fan).

    ``mode`` picks the fan: "fan_in" keeps the variance of the forward activations, "fan_out"
    that of the backward gradients. ``a`` is the negative slope of the leaky ReLU that follows
    (used only when ``nonlinearity="leaky_relu"``, the default). ``Linear`` calls this with
    ``a=sqrt(5)``, which works out to bound = 1 / sqrt(fan_in)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): N(0, std**2) with std = gain / sqrt(fan); arguments as for
    ``kaiming_uniform_``."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor, gain=1, generator=None):
    """Saxe et al. (2013): a (semi-)orthogonal matrix times ``gain``.

    The tensor is seen as a matrix of ``shape[0]`` rows (the rest flattened into columns). Its
    rows are orthonormal when there are no more rows than columns (W W^T = I), else its
    columns are (W^T W = I). It is the Q of the QR decomposition of a standard normal matrix,
    with signs fixed so that the result is uniformly distributed over orthogonal matrices."""
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if math.prod(shape) == 0:
        return tensor  # nothing to fill
    rows = shape[0]
    cols = math.prod(shape) // rows
    flattened = _generator(generator).normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        flattened = flattened.T
    q, r = np.linalg.qr(flattened)  # q: (max, min) with orthonormal columns
    q *= np.sign(np.diag(r))  # without this, Q would favour some directions over others
    if rows < cols:
        q = q.T
    return _write(tensor, (gain * q).reshape(shape))
