"""The tensor operations: one small `Function` class per op, forward and backward side by side.

Conventions: `forward` receives NumPy arrays and returns one; `backward` receives the gradient of
the output and returns one gradient per tensor input (None where an input needs none). Gradients
may come back in the output's broadcast shape: the engine's `unbroadcast` reduces them.

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
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        return grad * self.b, grad * self.a


class Div(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("div", a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        grad_a = grad / self.b
        grad_b = -grad_a * self.a / self.b if self.needs_input_grad[1] else None
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
        self.base, self.exponent = base, exponent
        self.out = base ** exponent
        return self.out

    def backward(self, grad):
        # d(b^e)/db = e b^(e-1); written with where so that b^0 at b = 0 gets 0, not 0 * inf.
        with np.errstate(divide="ignore", invalid="ignore"):
            grad_base = np.where(self.exponent == 0, 0,
                                 grad * self.exponent * self.base ** (self.exponent - 1))
        grad_exponent = None
        if self.needs_input_grad[1]:
            # d(b^e)/de = b^e log b, defined for b > 0.
            grad_exponent = grad * self.out * np.log(self.base)
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
        # 1-D operands become matrices for the kernel and lose that axis again afterwards.
        self.a_was_vector, self.b_was_vector = a.ndim == 1, b.ndim == 1
        self.a = a[None, :] if self.a_was_vector else a
        self.b = b[:, None] if self.b_was_vector else b
        out = kernels.current.matmul(self.a, self.b)
        if self.a_was_vector:
            out = out[..., 0, :]
        if self.b_was_vector:
            out = out[..., 0]
        return out

    def backward(self, grad):
        if self.b_was_vector:
            grad = grad[..., None]
        if self.a_was_vector:
            grad = grad[..., None, :]
        grad_a, grad_b = kernels.current.matmul_backward(grad, self.a, self.b)
        if self.a_was_vector:
            grad_a = grad_a.reshape(grad_a.shape[:-2] + (-1,)).sum(
                axis=tuple(range(grad_a.ndim - 2)))
        if self.b_was_vector:
            grad_b = grad_b.reshape(grad_b.shape[:-2] + (-1,)).sum(
                axis=tuple(range(grad_b.ndim - 2)))
        return grad_a, grad_b


# --------------------------------------------------------------------------------------------
# Elementwise functions
# --------------------------------------------------------------------------------------------


class Exp(Function):
    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, grad):
        return (grad * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, grad):
        return (grad / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = np.sqrt(x)
        return self.y

    def backward(self, grad):
        return (grad / (2 * self.y),)


class Tanh(Function):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad):
        return (grad * (1 - self.y * self.y),)


class Sigmoid(Function):
    def forward(self, x):
        # exp of a non-positive number only: no overflow for large |x|, and no cancellation
        # (1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0).
        with np.errstate(under="ignore"):  # e^-800 -> 0 is the right answer
            exp_of_minus_abs = np.exp(-np.abs(x))
        self.y = np.where(x >= 0, 1, exp_of_minus_abs) / (1 + exp_of_minus_abs)
        return self.y

    def backward(self, grad):
        return (grad * self.y * (1 - self.y),)


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


def _expand_reduced(grad, axes, keepdims):
    """Put the reduced axes back as size-1 axes so `grad` broadcasts against the input."""
    return grad if keepdims else np.expand_dims(grad, axes)


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.input_shape = x.shape
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        return np.asarray(x.sum(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = _expand_reduced(grad, self.axes, self.keepdims)
        return (np.broadcast_to(grad, self.input_shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.input_shape = x.shape
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        self.count = int(np.prod([x.shape[a] for a in self.axes]))
        return np.asarray(x.mean(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = _expand_reduced(grad, self.axes, self.keepdims) / self.count
        return (np.broadcast_to(grad, self.input_shape),)


class Max(Function):
    """Maximum over axes. Where several elements tie for the maximum, the gradient is split
    equally among them (so it still sums to the incoming gradient), as in PyTorch's amax."""

    def forward(self, x, axis=None, keepdims=False):
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        self.x = x
        self.out_kept = x.max(axis=self.axes, keepdims=True)
        return self.out_kept if keepdims else np.asarray(np.squeeze(self.out_kept, self.axes))

    def backward(self, grad):
        is_max = self.x == self.out_kept
        ties = is_max.sum(axis=self.axes, keepdims=True)
        grad = _expand_reduced(grad, self.axes, self.keepdims)
        return (grad * is_max / ties,)


class Var(Function):
    """Variance over axes with `correction` (1 = unbiased, PyTorch's default; 0 = NumPy's)."""

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.axes = _normalize_axes(axis, x.ndim)
        self.keepdims = keepdims
        count = int(np.prod([x.shape[a] for a in self.axes]))
        self.divisor = max(count - correction, 0)
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        squares = (self.centered ** 2).sum(axis=self.axes, keepdims=keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(squares / self.divisor).astype(x.dtype, copy=False)

    def backward(self, grad):
        grad = _expand_reduced(grad, self.axes, self.keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):  # divisor 0: nan, as forward
            return (grad * (np.float64(2.0) / self.divisor) * self.centered,)


# --------------------------------------------------------------------------------------------
# Shape and indexing
# --------------------------------------------------------------------------------------------


class Reshape(Function):
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

    def forward(self, x, axis0, axis1):
        self.axis0, self.axis1 = axis0, axis1
        return x.swapaxes(axis0, axis1)

    def backward(self, grad):
        return (grad.swapaxes(self.axis0, self.axis1),)


class Permute(Function):
    def forward(self, x, dims):
        if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {tuple(dims)} is not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        self.dims = tuple(d % x.ndim for d in dims)  # argsort needs non-negative axes
        return x.transpose(self.dims)

    def backward(self, grad):
        return (grad.transpose(np.argsort(self.dims)),)


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

    def forward(self, x, index):
        self.index, self.advanced = _index_to_numpy(index)
        self.input_shape, self.dtype = x.shape, x.dtype
        return np.asarray(x[self.index])

    def backward(self, grad):
        grad_x = np.zeros(self.input_shape, dtype=self.dtype)
        if self.advanced:
            np.add.at(grad_x, self.index, grad)
        else:
            grad_x[self.index] = grad
        return (grad_x,)


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
        return tuple(np.split(grad, self.split_points, axis=self.axis))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        try:
            return np.stack(arrays, axis=axis)
        except ValueError:
            raise ValueError(f"stack: all shapes must be equal, got "
                             f"{[a.shape for a in arrays]}") from None

    def backward(self, grad):
        return tuple(np.moveaxis(grad, self.axis, 0))


class Where(Function):
    """where(condition, a, b): elements of a where condition holds, else of b."""

    def forward(self, a, b, condition):
        self.condition = condition
        return np.where(condition, a, b)

    def backward(self, grad):
        zero = np.zeros((), dtype=grad.dtype)
        return np.where(self.condition, grad, zero), np.where(self.condition, zero, grad)


class MaskedFill(Function):
    """x with `value` where mask is True (mask broadcasts against x)."""

    may_produce_infinite = True  # masked_fill(mask, -inf) is the point of the op

    def forward(self, x, mask, value):
        self.mask = mask
        return np.where(mask, np.asarray(value, dtype=x.dtype), x)

    def backward(self, grad):
        return (np.where(self.mask, np.zeros((), dtype=grad.dtype), grad),)


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
    "permute": _permute,
    "T": property(_T),
    "masked_fill": masked_fill,
    "split": split,
}

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
