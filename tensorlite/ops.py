"""The tensor operations: one small `Function` class per op, forward and backward side by side.

Conventions: `forward` receives NumPy arrays and returns one; `backward` receives the gradient of
the output and returns one gradient per tensor input (None where an input needs none). Gradients
may come back in the output's broadcast shape: the engine's `unbroadcast` reduces them.

Every backward is written so that it also runs on Tensors (operators, `.sum(axis=, keepdims=)`,
`.reshape`, and `Op.run(...)` for other ops): that is how `create_graph=True` differentiates it
again. What forward keeps for backward goes through `save_for_backward` when it is an input or
the output; masks and indices are plain attributes (constants: their derivative is zero).

At the bottom, `TENSOR_METHODS` is the single registry from which `Tensor` gets its operators and
methods.
"""

from __future__ import annotations

import numpy as np

from tensorlite import kernels
from tensorlite.tensor import Function, Tensor

# --------------------------------------------------------------------------------------------
# Elementwise arithmetic (NumPy broadcasting; unbroadcast reduces the gradients)
# --------------------------------------------------------------------------------------------


def _broadcast_check(op_name, a, b):
    """A clear error naming the op and both shapes, instead of NumPy's generic one."""
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op_name}: shapes {a.shape} and {b.shape} cannot be broadcast "
                         f"together") from None


class Add(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("add", a, b)
        return a + b

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("sub", a, b)
        return a - b

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("mul", a, b)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad):
        a, b = self.saved
        return grad * b, grad * a


class Div(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("div", a, b)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, grad):
        a, b = self.saved
        grad_a = grad / b
        grad_b = -grad_a * a / b if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, grad):
        return (-grad,)


class Pow(Function):
    """base ** exponent, where the exponent may be a number or a tensor."""

    def forward(self, base, exponent):
        if base.shape != exponent.shape:
            _broadcast_check("pow", base, exponent)
        # Where the exponent is 0, b^(e-1) is inf at b = 0 (and 0 * inf = nan): backward uses
        # b^0 there instead, harmless since the factor e = 0 makes that gradient 0 anyway.
        self.zero_exponent = exponent == 0
        out = base ** exponent
        self.save_for_backward(base, exponent, out)
        return out

    def backward(self, grad):
        base, exponent, out = self.saved
        # d(b^e)/db = e b^(e-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad_base = grad * exponent * base ** (exponent - 1 + self.zero_exponent)
        grad_exponent = None
        if self.needs_input_grad[1]:
            # d(b^e)/de = b^e log b, defined for b > 0.
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_exponent = grad * out * Log.run(base)
        return grad_base, grad_exponent


# --------------------------------------------------------------------------------------------
# Matrix product (through the active kernel set)
# --------------------------------------------------------------------------------------------


class MatMul(Function):
    """a @ b for ndim >= 2 with broadcast batch dimensions; 1-D operands as in NumPy."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"(inner dimensions {a.shape[-1]} and "
                             f"{b.shape[-2 if b.ndim > 1 else 0]} differ)")
        if a.ndim > 2 or b.ndim > 2:
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} "
                                 f"cannot be broadcast together") from None
        self.save_for_backward(a, b)
        # 1-D operands become matrices for the kernel and lose that axis again afterwards.
        out = kernels.current.matmul(a[None, :] if a.ndim == 1 else a,
                                     b[:, None] if b.ndim == 1 else b)
        if a.ndim == 1:
            out = out[..., 0, :]
        if b.ndim == 1:
            out = out[..., 0]
        return out

    def backward(self, grad):
        a, b = self.saved
        a_was_vector, b_was_vector = a.ndim == 1, b.ndim == 1
        if a_was_vector:  # (n,) -> (1, n); grad gains the matching axis of size 1
            a = a.reshape((1,) + a.shape)
            grad = grad.reshape(grad.shape[:-1] + (1,) + grad.shape[-1:])
        if b_was_vector:  # (n,) -> (n, 1)
            b = b.reshape(b.shape + (1,))
            grad = grad.reshape(grad.shape + (1,))
        if isinstance(grad, Tensor):  # create_graph: the same two products, recorded
            grad_a, grad_b = grad @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ grad
        else:
            grad_a, grad_b = kernels.current.matmul_backward(grad, a, b)
        # Drop the added axis again; unbroadcast sums any broadcast batch axes.
        if a_was_vector:
            grad_a = grad_a.reshape(grad_a.shape[:-2] + grad_a.shape[-1:])
        if b_was_vector:
            grad_b = grad_b.reshape(grad_b.shape[:-1])
        return grad_a, grad_b


# --------------------------------------------------------------------------------------------
# Elementwise functions
# --------------------------------------------------------------------------------------------


class Exp(Function):
    def forward(self, x):
        y = np.exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad * y,)


class Log(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return np.log(x)

    def backward(self, grad):
        x, = self.saved
        return (grad / x,)


class Sqrt(Function):
    def forward(self, x):
        y = np.sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad / (2 * y),)


class Tanh(Function):
    def forward(self, x):
        y = np.tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad * (1 - y * y),)


class Sigmoid(Function):
    def forward(self, x):
        # exp of a non-positive number only: no overflow for large |x|, and no cancellation
        # (1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0).
        with np.errstate(under="ignore"):  # e^-800 -> 0 is the right answer
            exp_of_minus_abs = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1, exp_of_minus_abs) / (1 + exp_of_minus_abs)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad * y * (1 - y),)


class Relu(Function):
    def forward(self, x):
        self.positive = x > 0
        return np.where(self.positive, x, 0).astype(x.dtype, copy=False)

    def backward(self, grad):
        return (grad * self.positive,)


class Cast(Function):
    def forward(self, x, dtype):
        self.input_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.input_dtype),)


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------


def _normalize_axes(axis, ndim):
    """axis (None, int, or tuple; negatives allowed) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if ndim == 0:
        # Like PyTorch, a scalar accepts axis 0 or -1, and reducing it changes nothing.
        if any(a not in (0, -1) for a in axes):
            raise ValueError(f"axis {axes} is out of bounds for a 0-dimensional tensor")
        return ()
    normalized = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for a tensor with {ndim} dimensions")
        normalized.append(int(a) % ndim)
    return tuple(sorted(normalized))


def _kept_shape(shape, axes):
    """`shape` with the reduced axes kept as size 1."""
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


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


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.input_shape = x.shape
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        return np.asarray(x.sum(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = grad.reshape(_kept_shape(self.input_shape, self.axes))
        return (BroadcastTo.run(grad, shape=self.input_shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.input_shape = x.shape
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        self.count = int(np.prod([x.shape[a] for a in self.axes]))
        return np.asarray(x.mean(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = grad.reshape(_kept_shape(self.input_shape, self.axes)) / self.count
        return (BroadcastTo.run(grad, shape=self.input_shape),)


class Max(Function):
    """Maximum over axes. Where several elements tie for the maximum, the gradient is split
    equally among them (so it still sums to the incoming gradient), as in PyTorch's amax."""

    def forward(self, x, axis=None, keepdims=False):
        self.axes = _normalize_axes(axis, x.ndim)
        out_kept = x.max(axis=self.axes, keepdims=True)
        # Which elements are maxima, each weighted by 1/(number of ties): a constant, as the
        # gradient of max is piecewise constant in x.
        is_max = x == out_kept
        self.share = is_max / is_max.sum(axis=self.axes, keepdims=True).astype(x.dtype)
        self.kept_shape = out_kept.shape
        return out_kept if keepdims else np.asarray(np.squeeze(out_kept, self.axes))

    def backward(self, grad):
        return (grad.reshape(self.kept_shape) * self.share,)


class Var(Function):
    """Variance over axes with `correction` (1 = unbiased, PyTorch's default; 0 = NumPy's)."""

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        count = int(np.prod([x.shape[a] for a in self.axes]))
        self.divisor = max(count - correction, 0)
        self.save_for_backward(x)
        squares = ((x - x.mean(axis=self.axes, keepdims=True)) ** 2).sum(
            axis=self.axes, keepdims=keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(squares / self.divisor).astype(x.dtype, copy=False)

    def backward(self, grad):
        x, = self.saved
        grad = grad.reshape(_kept_shape(x.shape, self.axes))
        centered = x - x.mean(axis=self.axes, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # divisor 0: nan, as forward
            return (grad * (np.float64(2.0) / self.divisor) * centered,)


# --------------------------------------------------------------------------------------------
# Shape and indexing
# --------------------------------------------------------------------------------------------


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
        if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {tuple(dims)} is not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        self.dims = tuple(d % x.ndim for d in dims)  # argsort needs non-negative axes
        return x.transpose(self.dims)

    def backward(self, grad):
        return (Permute.run(grad, dims=tuple(np.argsort(self.dims))),)


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
        return (IndexBackward.run(grad, index=self.index, advanced=self.advanced,
                                  input_shape=self.input_shape),)


class IndexBackward(Function):
    """The backward of x[index] as an op: grad placed at `index` in zeros of x's shape
    (scatter-added for integer arrays, where an element may be picked twice). Its own backward
    picks `index` again."""

    def forward(self, grad, index, advanced, input_shape):
        self.index = index
        grad_x = np.zeros(input_shape, dtype=grad.dtype)
        if advanced:
            np.add.at(grad_x, index, grad)
        else:
            grad_x[index] = grad
        return grad_x

    def backward(self, grad_of_grad_x):
        return (GetItem.run(grad_of_grad_x, index=self.index),)


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


# --------------------------------------------------------------------------------------------
# Public functions built on the ops
# --------------------------------------------------------------------------------------------


def _condition_array(condition):
    return np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)


def where(condition, a, b) -> Tensor:
    """Elementwise `a if condition else b` with broadcasting; no gradient flows to `condition`."""
    return Where.apply(a, b, condition=_condition_array(condition))


def masked_fill(x, mask, value) -> Tensor:
    """A copy of `x` with `value` wherever `mask` is True."""
    return MaskedFill.apply(x, mask=_condition_array(mask), value=value)


def concatenate(tensors, axis=0) -> Tensor:
    return Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def stack(tensors, axis=0) -> Tensor:
    return Stack.apply(*tensors, axis=axis)


def split(x, split_size_or_sections, axis=0) -> tuple:
    """PyTorch's split: an int gives chunks of that size (the last may be smaller); a list
    gives the chunk sizes, which must add up to the axis length."""
    length = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        sizes = [split_size_or_sections] * (length // split_size_or_sections)
        if length % split_size_or_sections:
            sizes.append(length % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but axis {axis} of "
                             f"shape {x.shape} has length {length}")
    axis = axis % x.ndim
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(GetItem.apply(x, index=index))
        start += size
    return tuple(pieces)


def matmul(a, b) -> Tensor:
    return MatMul.apply(a, b)


def _no_grad_compare(numpy_function):
    def compare(a, b):
        a_data = a.data if isinstance(a, Tensor) else a
        b_data = b.data if isinstance(b, Tensor) else b
        return Tensor._make(np.asarray(numpy_function(a_data, b_data)), False)
    return compare


def _pow(base, exponent):
    return Pow.apply(base, exponent)


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


# --------------------------------------------------------------------------------------------
# The registry: every Tensor operator and method comes from this table.
# --------------------------------------------------------------------------------------------

TENSOR_METHODS = {
    "__add__": lambda a, b: Add.apply(a, b),
    "__radd__": lambda a, b: Add.apply(b, a),
    "__sub__": lambda a, b: Sub.apply(a, b),
    "__rsub__": lambda a, b: Sub.apply(b, a),
    "__mul__": lambda a, b: Mul.apply(a, b),
    "__rmul__": lambda a, b: Mul.apply(b, a),
    "__truediv__": lambda a, b: Div.apply(a, b),
    "__rtruediv__": lambda a, b: Div.apply(b, a),
    "__pow__": _pow,
    "__rpow__": lambda a, b: Pow.apply(b, a),
    "__matmul__": matmul,
    "__rmatmul__": lambda a, b: MatMul.apply(b, a),
    "__neg__": lambda x: Neg.apply(x),
    "__getitem__": lambda x, index: GetItem.apply(x, index=index),
    "__gt__": _no_grad_compare(np.greater),
    "__ge__": _no_grad_compare(np.greater_equal),
    "__lt__": _no_grad_compare(np.less),
    "__le__": _no_grad_compare(np.less_equal),
    "__eq__": _no_grad_compare(np.equal),
    "__ne__": _no_grad_compare(np.not_equal),
    "matmul": matmul,
    "exp": lambda x: Exp.apply(x),
    "log": lambda x: Log.apply(x),
    "sqrt": lambda x: Sqrt.apply(x),
    "tanh": lambda x: Tanh.apply(x),
    "sigmoid": lambda x: Sigmoid.apply(x),
    "relu": lambda x: Relu.apply(x),
    "sum": lambda x, axis=None, keepdims=False: Sum.apply(x, axis=axis, keepdims=keepdims),
    "mean": lambda x, axis=None, keepdims=False: Mean.apply(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis=None, keepdims=False: Max.apply(x, axis=axis, keepdims=keepdims),
    "var": lambda x, axis=None, keepdims=False, correction=1: Var.apply(
        x, axis=axis, keepdims=keepdims, correction=correction),
    "reshape": _reshape,
    "view": _reshape,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "permute": _permute,
    "T": property(_T),
    "masked_fill": masked_fill,
    "split": split,
}

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
