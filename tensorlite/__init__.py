"""tensorlite: a small reverse-mode autodiff tensor library on NumPy, with Numba kernels.

    import tensorlite as tl
    x = tl.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = (x @ x).tanh().sum()
    y.backward()
    x.grad          # dy/dx, a Tensor of x's shape (np.asarray(x.grad) is its array)
"""

# First, before NumPy loads: every process-level setting tensorlite applies (OpenBLAS kernel
# set, glibc malloc options, Numba threading defaults), each documented in runtime.py with its
# opt-out.
from tensorlite import runtime  # noqa: F401

import builtins as _builtins  # noqa: E402

import numpy as _np  # noqa: E402

from tensorlite import allocator  # noqa: E402,F401  (the malloc options' names; see runtime.py)

from tensorlite import kernels  # noqa: E402
from tensorlite.kernels import EnvironmentVariableError  # noqa: E402,F401
from tensorlite.tensor import (  # noqa: E402
    Function, Tensor, detect_anomaly, enable_grad, grad, is_anomaly_enabled, is_grad_enabled,
    manual_seed, no_grad, rng, to_dot, unbroadcast,
)
from tensorlite.ops import (  # noqa: E402  (some of these shadow builtins, as in torch)
    abs, amax, amin, argmax, argmin, argsort, cat, ceil, chunk, clamp, clip, concatenate, cos,
    cumsum, einsum, exp, expm1, flatten, floor, gather, index_select, log, log1p, logsumexp,
    masked_fill, matmul, max, maximum, mean, min, minimum, norm, prod, relu, round, rsqrt, scatter_add,
    sigmoid, sign, sin, sort, split, sqrt, square, squeeze, stack, std, sum, tanh, topk,
    unsqueeze, var, where, clone, pow, tril, triu,
)
from tensorlite.ops.arguments import (  # noqa: E402
    _check_device, device, get_default_device, set_default_device,
)
from tensorlite import functional  # noqa: E402
from tensorlite import autograd, func, inplace, nn, optim, profiler  # noqa: E402
from tensorlite import utils  # noqa: E402  (tl.utils.data, as torch.utils.data)
from tensorlite import viz  # noqa: E402  (tl.viz.to_dot, tl.viz.draw)
from tensorlite.creation import (  # noqa: E402
    empty, eye, full, full_like, linspace, multinomial, rand, rand_like, randint, randn_like,
)
from tensorlite.serialization import load, save  # noqa: E402

# dtype names, as torch's: NumPy's scalar types, which np.dtype() and every dtype= accept
float32 = float = _np.float32  # noqa: A001 (torch's names)
float64 = double = _np.float64
int64 = long = _np.int64
int32 = int = _np.int32  # noqa: A001
int16 = short = _np.int16
int8 = _np.int8
uint8 = _np.uint8
bool = _np.bool_  # noqa: A001

__version__ = "0.1.0"


def tensor(data, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """As torch.tensor: a new tensor holding `data` (lists, numbers, arrays, Tensors)."""
    _check_device("tensor", device)
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros of shape `shape` (float32 unless `dtype` says otherwise)."""
    _check_device("zeros", device)
    return Tensor(_np.zeros(_shape(shape), dtype=_np.float32 if dtype is None else dtype), requires_grad=requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones of shape `shape` (float32 unless `dtype` says otherwise)."""
    _check_device("ones", device)
    return Tensor(_np.ones(_shape(shape), dtype=_np.float32 if dtype is None else dtype), requires_grad=requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """Standard normal samples from tensorlite's generator (see `manual_seed`)."""
    _check_device("randn", device)
    source = rng() if generator is None else generator
    data = source.standard_normal(_shape(shape)).astype(_np.float32 if dtype is None else dtype)
    return Tensor(data, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Like `torch.arange`: integer arguments give int64, floats give float32."""
    _check_device("arange", device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        all_ints = all(isinstance(v, (_builtins.int, _np.integer)) for v in (start, end, step))
        dtype = _np.int64 if all_ints else _np.float32
    return Tensor(_np.arange(start, end, step, dtype=dtype), requires_grad=requires_grad)


def zeros_like(input, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Zeros of `input`'s shape and (unless `dtype` is given) dtype."""
    _check_device("zeros_like", device)
    return Tensor(_np.zeros_like(_np.asarray(input), dtype=dtype), requires_grad=requires_grad)


def ones_like(input, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Ones of `input`'s shape and (unless `dtype` is given) dtype."""
    _check_device("ones_like", device)
    return Tensor(_np.ones_like(_np.asarray(input), dtype=dtype), requires_grad=requires_grad)


def __getattr__(name):
    # The testing kit needs hypothesis, a test-only dependency: load it on first use.
    if name == "testing":
        import importlib
        return importlib.import_module("tensorlite.testing")
    raise AttributeError(f"module 'tensorlite' has no attribute {name!r}")
