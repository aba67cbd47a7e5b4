"""Tensor creation functions with PyTorch's signatures: `rand`, `randint`, `full`, `eye`,
`linspace`, `empty`, `full_like`, `rand_like`, `randn_like`.

Floating results default to float32 (as in PyTorch). Random ones draw from tensorlite's single
generator, `tensorlite.tensor.rng()`, so `tl.manual_seed(s)` makes them reproducible; each draws
in float64 and then rounds to the requested dtype, so one seed gives the same numbers in float32
and float64 up to that rounding.
"""

import numbers

import numpy as np

from tensorlite.ops.arguments import _check_device
from tensorlite.tensor import Tensor, rng

__all__ = ["rand", "randint", "full", "eye", "linspace", "empty", "full_like", "rand_like",
           "randn_like", "multinomial"]


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


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) of shape `size`."""
    _check_device("rand", device)
    dtype = _float_dtype("rand", dtype)
    return _tensor(rng().random(_size("rand", size)).astype(dtype), requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Integers uniform in [low, high) of shape `size` (int64 by default). As in PyTorch,
    `randint(high, size)` means low = 0."""
    _check_device("randint", device)
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


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of shape `size` filled with `fill_value`."""
    _check_device("full", device)
    size = _size("full", size if isinstance(size, (tuple, list)) else (size,))
    return _tensor(np.full(size, fill_value, dtype=_fill_dtype(fill_value, dtype)), requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of shape `size` whose values are whatever the memory held (not initialised)."""
    _check_device("empty", device)
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    return _tensor(np.empty(_size("empty", size), dtype=dtype), requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """The (n, m) identity matrix (m defaults to n)."""
    _check_device("eye", device)
    m = n if m is None else m
    _size("eye", (n, m))
    return _tensor(np.eye(n, m, dtype=np.dtype(np.float32 if dtype is None else dtype)), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    """`steps` evenly spaced values from `start` to `end`, both included."""
    _check_device("linspace", device)
    _size("linspace", (steps,))
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    return _tensor(np.linspace(start, end, steps).astype(dtype), requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of `t`'s shape (and dtype, unless `dtype` is given) filled with `fill_value`."""
    _check_device("full_like", device)
    like = _like_array("full_like", t)
    dtype = like.dtype if dtype is None else np.dtype(dtype)
    return _tensor(np.full(like.shape, fill_value, dtype=dtype), requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) of `t`'s shape and dtype (which must be floating)."""
    _check_device("rand_like", device)
    like = _like_array("rand_like", t)
    dtype = _float_dtype("rand_like", like.dtype if dtype is None else dtype)
    return _tensor(rng().random(like.shape).astype(dtype), requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples of `t`'s shape and dtype (which must be floating)."""
    _check_device("randn_like", device)
    like = _like_array("randn_like", t)
    dtype = _float_dtype("randn_like", like.dtype if dtype is None else dtype)
    return _tensor(rng().standard_normal(like.shape).astype(dtype), requires_grad)


def multinomial(input, num_samples, replacement=False, *, generator=None) -> Tensor:
    """As torch.multinomial: `num_samples` category indices (int64) per row of the
    non-negative weights `input` (1-D, or 2-D for one draw per row), drawn from tensorlite's
    generator (`tl.manual_seed`) or `generator` (a NumPy Generator). Without replacement a
    category is drawn at most once per row, so `num_samples` may not exceed the number of
    categories with non-zero weight."""
    weights = np.asarray(input.data if isinstance(input, Tensor) else input, dtype=np.float64)
    if weights.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {weights.shape}")
    rows = weights.reshape(-1, weights.shape[-1])
    if num_samples <= 0:
        raise RuntimeError(f"multinomial: num_samples must be positive, got {num_samples}")
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or "
                           "element < 0")
    totals = rows.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of "
                           "probabilities <= 0)")
    if not replacement and num_samples > int((rows > 0).sum(axis=1).min()):
        raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) "
                           f"({num_samples}) samples without replacement")
    source = rng() if generator is None else generator
    probabilities = rows / totals
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for r, p in enumerate(probabilities):
        out[r] = source.choice(p.shape[0], size=num_samples, replace=replacement, p=p)
    return Tensor(out.reshape(weights.shape[:-1] + (num_samples,)), dtype=np.int64)
