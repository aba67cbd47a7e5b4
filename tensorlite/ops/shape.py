"""Shape ops: reshape, transpose, permute, broadcast, concatenate, stack, repeat, squeeze.
Most outputs are views of their input (`is_view`): they share its version counter."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite.autograd.function import Function
from tensorlite.ops.arguments import either_keyword, _one_axis, _sizes, _UNSET
from tensorlite.tensor import Tensor


class BroadcastTo(Function):
    """x repeated (as a read-only view) along new leading axes and axes of size 1. Its backward
    is the identity: the engine's unbroadcast sums the gradient back to x's shape."""

    def forward(self, x, shape):
        try:
            return np.broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: a tensor of shape {x.shape} cannot be broadcast to shape "
                             f"{tuple(shape)}") from None

    def backward(self, grad):
        return (grad,)


class Reshape(Function):
    is_view = True

    def forward(self, x, shape):
        self.input_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into shape {tuple(shape)}") from None

    def backward(self, grad):
        return (grad.reshape(self.input_shape),)


class Transpose(Function):
    """Swap two axes (a view, like PyTorch's transpose)."""

    is_view = True

    def forward(self, x, axis0, axis1):
        self.axis0, self.axis1 = axis0, axis1
        return x.swapaxes(axis0, axis1)

    def backward(self, grad):
        return (grad.swapaxes(self.axis0, self.axis1),)


class Permute(Function):
    is_view = True

    def forward(self, x, dims):
        if sorted(d % builtins.max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {tuple(dims)} is not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        self.dims = tuple(d % x.ndim for d in dims)  # argsort needs non-negative axes
        return x.transpose(self.dims)

    def backward(self, grad):
        return (Permute.run(grad, dims=tuple(np.argsort(self.dims))),)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.split_points = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        try:
            return np.concatenate(arrays, axis=axis)
        except ValueError:
            raise ValueError(f"concatenate: shapes {[a.shape for a in arrays]} do not match "
                             f"outside axis {axis}") from None

    def backward(self, grad):
        edges = [0, *self.split_points, grad.shape[self.axis]]
        before = (slice(None),) * (self.axis % grad.ndim)
        return tuple(grad[before + (slice(start, stop),)] for start, stop in zip(edges, edges[1:]))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        try:
            return np.stack(arrays, axis=axis)
        except ValueError:
            raise ValueError(f"stack: all shapes must be equal, got "
                             f"{[a.shape for a in arrays]}") from None

    def backward(self, grad):
        before = (slice(None),) * (self.axis % grad.ndim)
        return tuple(grad[before + (i,)] for i in range(grad.shape[self.axis]))


class Repeat(Function):
    """PyTorch's repeat (NumPy's tile): the whole tensor copied `sizes[d]` times along axis d."""

    def forward(self, x, sizes):
        self.padded_shape = (1,) * (len(sizes) - x.ndim) + x.shape
        self.sizes = sizes
        return np.tile(x.reshape(self.padded_shape), sizes)

    def backward(self, grad):
        # Axis d of the output is (sizes[d] copies) x (original length): split it in two and
        # sum over the copies.
        split = tuple(n for pair in zip(self.sizes, self.padded_shape) for n in pair)
        copies = tuple(range(0, len(split), 2))
        return (grad.reshape(split).sum(axis=copies).reshape(self.padded_shape),)


def concatenate(tensors, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """The tensors joined along an existing axis `dim` (alias `axis`; default 0)."""
    return Concatenate.apply(*tensors, axis=either_keyword("concatenate", "dim", dim, "axis",
                                                           axis, 0))


cat = concatenate


def stack(tensors, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """The tensors (all of one shape) joined along a new axis `dim` (alias `axis`; default 0)."""
    return Stack.apply(*tensors, axis=either_keyword("stack", "dim", dim, "axis", axis, 0))


def _reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(x, shape=shape)


def _permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return Permute.apply(x, dims=dims)


def _transpose(x, axis0=-2, axis1=-1):
    return Transpose.apply(x, axis0=axis0, axis1=axis1)


def _T(x):
    """All axes reversed, like NumPy's `.T`."""
    return Permute.apply(x, dims=tuple(reversed(range(x.ndim))))


def flatten(x, start_dim=0, end_dim=-1) -> Tensor:
    """Dimensions start_dim..end_dim merged into one (a 0-d tensor becomes shape (1,))."""
    if x.ndim == 0:
        _one_axis("flatten", start_dim, 0), _one_axis("flatten", end_dim, 0)
        return Reshape.apply(x, shape=(1,))
    start, end = _one_axis("flatten", start_dim, x.ndim), _one_axis("flatten", end_dim, x.ndim)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for "
                         f"shape {x.shape}")
    merged = int(np.prod(x.shape[start:end + 1]))
    return Reshape.apply(x, shape=x.shape[:start] + (merged,) + x.shape[end + 1:])


def squeeze(x, dim=None) -> Tensor:
    """Drop axes of size 1: all of them, or those among `dim` (an int or a tuple); a named
    axis whose size is not 1 is left alone, as in PyTorch."""
    if dim is None:
        axes = {i for i, n in enumerate(x.shape) if n == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {_one_axis("squeeze", d, x.ndim) for d in dims}
        axes = {a for a in axes if x.ndim and x.shape[a] == 1}
    return Reshape.apply(x, shape=tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, dim) -> Tensor:
    """A new axis of size 1 at position `dim` (in [-ndim-1, ndim])."""
    if not isinstance(dim, (int, np.integer)) or not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim!r} is out of range for a tensor of shape "
                         f"{x.shape} (expected a dim in [{-x.ndim - 1}, {x.ndim}])")
    axis = int(dim) % (x.ndim + 1)
    return Reshape.apply(x, shape=x.shape[:axis] + (1,) + x.shape[axis:])


def _expand(x, *sizes) -> Tensor:
    """x broadcast (without copying) to `sizes`; -1 keeps that axis' size; new axes go first."""
    sizes = _sizes("expand", sizes)
    new = len(sizes) - x.ndim
    if new < 0:
        raise ValueError(f"expand: {len(sizes)} sizes {sizes} for a tensor of shape {x.shape}; "
                         f"give at least {x.ndim}")
    if any(n == -1 for n in sizes[:new]):
        raise ValueError(f"expand: -1 is not allowed for the new leading axes in {sizes} "
                         f"(tensor of shape {x.shape})")
    shape = sizes[:new] + tuple(old if n == -1 else n for n, old in zip(sizes[new:], x.shape))
    return BroadcastTo.apply(x, shape=shape)


def _repeat(x, *sizes) -> Tensor:
    """PyTorch's repeat: the tensor tiled `sizes[d]` times along axis d (new axes go first)."""
    sizes = _sizes("repeat", sizes)
    if len(sizes) < x.ndim or any(n < 0 for n in sizes):
        raise ValueError(f"repeat: sizes {sizes} do not fit a tensor of shape {x.shape} (one "
                         f"non-negative count per axis, at least {x.ndim})")
    return Repeat.apply(x, sizes=sizes)


expand, repeat = _expand, _repeat


def _t(x) -> Tensor:
    """torch's `t()`: the transpose of a matrix; a vector or a scalar comes back as it is."""
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D")
    return x if x.ndim < 2 else Transpose.apply(x, axis0=0, axis1=1)


class Triangle(Function):
    """The lower (tril) or upper (triu) triangle of the last two dimensions, the rest zero."""

    def forward(self, x, diagonal=0, upper=False):
        if x.ndim < 2:
            raise RuntimeError(f"{'triu' if upper else 'tril'}: input tensor must have at least "
                               f"2 dimensions, got shape {x.shape}")
        self.diagonal, self.upper = diagonal, upper
        return (np.triu if upper else np.tril)(x, diagonal)

    def backward(self, grad):
        return (Triangle.run(grad, diagonal=self.diagonal, upper=self.upper),)


def tril(input, diagonal=0) -> Tensor:
    """Elements on and below the `diagonal`-th diagonal of the last two dimensions, as torch."""
    return Triangle.apply(input, diagonal=diagonal, upper=False)


def triu(input, diagonal=0) -> Tensor:
    """Elements on and above the `diagonal`-th diagonal of the last two dimensions, as torch."""
    return Triangle.apply(input, diagonal=diagonal, upper=True)
