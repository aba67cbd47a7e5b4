"""Tensor creation functions with PyTorch's signatures: `rand`, `randint`, `full`, `eye`,
`linspace`, `empty`, `full_like`, `rand_like`, `randn_like`.

Floating results default to float32 (as in PyTorch). Random ones draw from tensorlite's single
generator, `tensorlite.tensor.rng()`, so `tl.manual_seed(s)` makes them reproducible; each draws
in float64 and then rounds to the requested dtype, so one seed gives the same numbers in float32
and float64 up to that rounding.
"""

import numbers

import numpy as np

from tensorlite.tensor import Tensor, rng

__all__ = ["rand", "randint", "full", "eye", "linspace", "empty", "full_like", "rand_like",
           "randn_like"]


def _size(op, size):
    """`f(2, 3)`, `f((2, 3))` and `f([2, 3])` all mean the shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for side in size:
        if not isinstance(side, (numbers.Integral, np.integer)) or isinstance(side, bool) or side < 0:
            raise ValueError(f"{op}: sizes must be non-negative integers, got {tuple(size)}")
    return tuple(int(side) for side in size)


def _float_dtype(op, dtype):
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op}: needs a floating dtype, got {dtype}")
    return dtype


def _tensor(array, requires_grad):
    # dtype passed explicitly so the array's dtype is kept exactly as made here.
    return Tensor(array, requires_grad=requires_grad, dtype=array.dtype)


def _like_array(op, t):
    if isinstance(t, Tensor):
        return t.data
    if isinstance(t, np.ndarray):
        return t
    raise TypeError(f"{op}: expects a Tensor (or array), got {type(t).__name__}")


def rand(*size, dtype=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) of shape `size`."""
    dtype = _float_dtype("rand", dtype)
    return _tensor(rng().random(_size("rand", size)).astype(dtype), requires_grad)


def randint(low, high=None, size=None, dtype=None, requires_grad=False) -> Tensor:
    """Integers uniform in [low, high) of shape `size` (int64 by default). As in PyTorch,
    `randint(high, size)` means low = 0."""
    if size is None:
        if high is None or not isinstance(high, (tuple, list)):
            raise TypeError("randint: expected randint(high, size) or randint(low, high, size), "
                            "with size a tuple")
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint: size must be a tuple, got {type(size).__name__}")
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    dtype = np.dtype(np.int64 if dtype is None else dtype)
    values = rng().integers(low, high, size=_size("randint", (size,)), dtype=np.int64)
    return _tensor(values.astype(dtype), requires_grad)


def _fill_dtype(fill_value, dtype):
    """PyTorch's inference: a bool fill gives bool, an int int64, a float the default float32."""
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(fill_value, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(fill_value, (numbers.Integral, np.integer)):
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def full(size, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of shape `size` filled with `fill_value`."""
    size = _size("full", size if isinstance(size, (tuple, list)) else (size,))
    return _tensor(np.full(size, fill_value, dtype=_fill_dtype(fill_value, dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of shape `size` whose values are whatever the memory held (not initialised)."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    return _tensor(np.empty(_size("empty", size), dtype=dtype), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False) -> Tensor:
    """The (n, m) identity matrix (m defaults to n)."""
    m = n if m is None else m
    _size("eye", (n, m))
    return _tensor(np.eye(n, m, dtype=np.dtype(np.float32 if dtype is None else dtype)), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False) -> Tensor:
    """`steps` evenly spaced values from `start` to `end`, both included."""
    _size("linspace", (steps,))
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    return _tensor(np.linspace(start, end, steps).astype(dtype), requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of `t`'s shape (and dtype, unless `dtype` is given) filled with `fill_value`."""
    like = _like_array("full_like", t)
    dtype = like.dtype if dtype is None else np.dtype(dtype)
    return _tensor(np.full(like.shape, fill_value, dtype=dtype), requires_grad)


def rand_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) of `t`'s shape and dtype (which must be floating)."""
    like = _like_array("rand_like", t)
    dtype = _float_dtype("rand_like", like.dtype if dtype is None else dtype)
    return _tensor(rng().random(like.shape).astype(dtype), requires_grad)


def randn_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Standard normal samples of `t`'s shape and dtype (which must be floating)."""
    like = _like_array("randn_like", t)
    dtype = _float_dtype("randn_like", like.dtype if dtype is None else dtype)
    return _tensor(rng().standard_normal(like.shape).astype(dtype), requires_grad)
