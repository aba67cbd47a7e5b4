"""Indexing ops: `x[index]`, its scatter-back, `where`, `masked_fill`, `gather`, `scatter_add`,
`index_select`, `split` / `chunk`, which are slices, and `one_hot` (no gradient)."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite.autograd.function import Function, IndexedGrad
from tensorlite.ops.arguments import (
    _along_axis_index, either_keyword, _integer_index, _one_axis, _UNSET,
)
from tensorlite.ops.elementwise import Add
from tensorlite.ops.shape import Reshape
from tensorlite.tensor import Tensor


def _index_to_numpy(index):
    """Tensors inside an index become arrays; returns (index, uses_integer_arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(p.data if isinstance(p, Tensor) else (np.asarray(p) if isinstance(p, list) else p)
                  for p in parts)
    advanced = any(isinstance(p, np.ndarray) for p in parts)
    return (parts if isinstance(index, tuple) else parts[0]), advanced


class GetItem(Function):
    """x[index] with slices, integers, None, Ellipsis and integer/boolean arrays. With integer
    arrays an element can be picked several times; backward then scatter-adds (np.add.at), so
    each pick contributes."""

    is_view = True  # for basic indexing; integer-array indexing copies, which is harmless here

    def forward(self, x, index):
        self.index, self.advanced = _index_to_numpy(index)
        self.input_shape = x.shape
        return np.asarray(x[self.index])

    def backward(self, grad):
        if isinstance(grad, Tensor):  # create_graph: a recorded op, differentiable again
            return (IndexBackward.apply(grad, index=self.index, advanced=self.advanced,
                                        input_shape=self.input_shape),)
        # A plain backward leaves placing `grad` at `index` to the engine, which adds all the
        # pieces of x's gradient (e.g. from q, k, v = qkv.split(...)) into one buffer.
        return (IndexedGrad(grad, self.index, self.advanced, self.input_shape),)


class IndexBackward(Function):
    """The backward of x[index] as an op: grad placed at `index` in zeros of x's shape
    (scatter-added for integer arrays, where an element may be picked twice). Its own backward
    picks `index` again."""

    def forward(self, grad, index, advanced, input_shape):
        self.index = index
        return IndexedGrad(grad, index, advanced, input_shape).placed()

    def backward(self, grad_of_grad_x):
        return (GetItem.run(grad_of_grad_x, index=self.index),)


class Where(Function):
    """where(condition, a, b): elements of a where condition holds, else of b."""

    def forward(self, a, b, condition):
        self.condition = condition
        return np.where(condition, a, b)

    def backward(self, grad):
        return (Where.run(grad, 0.0, condition=self.condition),
                Where.run(0.0, grad, condition=self.condition))


class MaskedFill(Function):
    """x with `value` where mask is True (mask broadcasts against x)."""

    may_produce_infinite = True  # masked_fill(mask, -inf) is the point of the op

    def forward(self, x, mask, value):
        self.mask = mask
        return np.where(mask, np.asarray(value, dtype=x.dtype), x)

    def backward(self, grad):
        return (MaskedFill.run(grad, mask=self.mask, value=0),)


def _condition_array(condition):
    return np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)


def where(condition, a, b) -> Tensor:
    """Elementwise `a if condition else b` with broadcasting; no gradient flows to `condition`."""
    return Where.apply(a, b, condition=_condition_array(condition))


def masked_fill(x, mask, value) -> Tensor:
    """A copy of `x` with `value` wherever `mask` is True."""
    return MaskedFill.apply(x, mask=_condition_array(mask), value=value)


def split(x, split_size_or_sections, dim=_UNSET, *, axis=_UNSET) -> tuple:
    """PyTorch's split: an int gives chunks of that size (the last may be smaller); a list
    gives the chunk sizes, which must add up to the axis length. Along `dim` (alias `axis`)."""
    axis = _one_axis("split", either_keyword("split", "dim", dim, "axis", axis, 0), x.ndim)
    length = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (length // split_size_or_sections)
        if length % split_size_or_sections:
            sizes.append(length % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} add up to {builtins.sum(sizes)}, but axis "
                             f"{axis} of "
                             f"shape {x.shape} has length {length}")
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(GetItem.apply(x, index=index))
        start += size
    return tuple(pieces)


def chunk(x, chunks, dim=0) -> tuple:
    """Split into `chunks` pieces of equal size along `dim` (the last may be smaller, and there
    may be fewer pieces), as torch.chunk."""
    if not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    axis = _one_axis("chunk", dim, x.ndim)
    size = -(-x.shape[axis] // chunks)  # ceil
    return split(x, builtins.max(size, 1), dim=axis)


def index_select(x, dim, index) -> Tensor:
    """The entries of `x` at positions `index` (1-D integers) along `dim`."""
    index = _integer_index("index_select", index)
    if index.ndim > 1:
        raise ValueError(f"index_select: index must be 1-D, got shape {index.shape}")
    axis = _one_axis("index_select", dim, x.ndim)
    if x.ndim == 0:
        x = Reshape.apply(x, shape=(1,))
    length = x.shape[axis]
    if index.size and (index.min() < -length or index.max() >= length):
        raise IndexError(f"index_select: index values in [{index.min()}, {index.max()}] are out "
                         f"of range for dim {dim} of size {length} (shape {x.shape})")
    return GetItem.apply(x, index=(slice(None),) * axis + (index.reshape(-1),))


def _scatter_gather_index(op, x_shape, dim, index, other=None):
    """Check an index for gather / scatter_add (PyTorch's rules) and return (axis, index)."""
    index = _integer_index(op, index)
    ndim = len(x_shape)
    axis = _one_axis(op, dim, ndim)
    if index.ndim != ndim:
        raise ValueError(f"{op}: index must have as many dimensions as the input ({ndim}, "
                         f"shape {x_shape}), got index shape {index.shape}")
    for d, n in enumerate(index.shape):
        if d != axis and n > x_shape[d]:
            raise ValueError(f"{op}: index shape {index.shape} is larger than the input shape "
                             f"{x_shape} in dim {d}")
        if other is not None and n > other[d]:
            raise ValueError(f"{op}: index shape {index.shape} is larger than the src shape "
                             f"{other} in dim {d}")
    length = x_shape[axis]
    if index.size and (index.min() < -length or index.max() >= length):
        raise IndexError(f"{op}: index values in [{index.min()}, {index.max()}] are out of range "
                         f"for dim {dim} of size {length} (shape {x_shape})")
    return axis, index


def gather(x, dim, index) -> Tensor:
    """out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and so on), as torch.gather: `index`
    has x's number of dimensions; the gradient is scatter-added back."""
    axis, index = _scatter_gather_index("gather", x.shape, dim, index)
    return GetItem.apply(x, index=_along_axis_index(index, axis))


def scatter_add(x, dim, index, src) -> Tensor:
    """A copy of `x` with src[i][j][k] added at x[index[i][j][k]][j][k] (dim 0; and so on), as
    torch.scatter_add (out of place). Gradients: to x unchanged; to src, gathered at index."""
    src_shape = src.shape if isinstance(src, (Tensor, np.ndarray)) else np.shape(src)
    axis, index = _scatter_gather_index("scatter_add", x.shape, dim, index, other=src_shape)
    if len(src_shape) != index.ndim:
        raise ValueError(f"scatter_add: src shape {src_shape} and index shape {index.shape} "
                         f"differ in their number of dimensions")
    used = GetItem.apply(src, index=tuple(slice(0, n) for n in index.shape))
    added = IndexBackward.apply(used, index=_along_axis_index(index, axis), advanced=True,
                                input_shape=x.shape)
    return Add.apply(x, added)


def one_hot(tensor, num_classes=-1) -> Tensor:
    """As torch's `F.one_hot`: int64 of shape tensor.shape + (num_classes,), with a 1 at each
    value; num_classes=-1 means max + 1. Integer input only; it has no gradient."""
    values = np.asarray(tensor.data if isinstance(tensor, Tensor) else tensor)
    if values.dtype.kind not in "iu":
        raise ValueError(f"one_hot: expected an integer tensor, got dtype {values.dtype}")
    if values.size and values.min() < 0:
        raise ValueError(f"one_hot: class values must be non-negative, got {values.min()}")
    if num_classes == -1:
        num_classes = int(values.max()) + 1 if values.size else 0
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a positive integer or -1, got "
                         f"{num_classes!r}")
    elif values.size and values.max() >= num_classes:
        raise ValueError(f"one_hot: class value {values.max()} is not smaller than "
                         f"num_classes={num_classes}")
    out = np.zeros(values.shape + (int(num_classes),), dtype=np.int64)
    np.put_along_axis(out, values[..., None].astype(np.intp), 1, axis=-1)
    return Tensor(out)
