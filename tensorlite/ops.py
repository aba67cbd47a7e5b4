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

import builtins

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.api import tensor_backward
from tensorlite.autograd.engine import retain_grad
from tensorlite.autograd.function import Function, IndexedGrad
from tensorlite.autograd.graphviz import to_dot
from tensorlite.tensor import Tensor

_UNSET = object()  # "argument not passed", so that passing both spellings can be told apart

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
        # Where the exponent is 0 and the base is 0, b^(e-1) is inf (and 0 * inf = nan):
        # backward uses b^0 there instead, harmless since the factor e = 0 makes that gradient
        # 0 anyway. Only there: elsewhere b^(e-1) must stay, as its derivative in e is needed
        # for second derivatives.
        zero_exponent = exponent == 0
        self.zero_exponent = zero_exponent & (base == 0) if zero_exponent.any() else zero_exponent
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


def _normalize_axes(axis, ndim, op=None):
    """axis (None, int, or tuple; negatives allowed) -> sorted tuple of non-negative axes.
    `op` names the operation in the error message."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    who = f"{op}: " if op else ""
    if ndim == 0:
        # Like PyTorch, a scalar accepts axis 0 or -1, and reducing it changes nothing.
        if any(a not in (0, -1) for a in axes):
            raise ValueError(f"{who}axis {axes} is out of bounds for a 0-dimensional tensor")
        return ()
    normalized = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{who}axis {a} is out of bounds for a tensor with {ndim} "
                             f"dimensions")
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
        self.axes = _normalize_axes(axis, x.ndim, "sum")
        self.keepdims = keepdims
        return np.asarray(x.sum(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = grad.reshape(_kept_shape(self.input_shape, self.axes))
        return (BroadcastTo.run(grad, shape=self.input_shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.input_shape = x.shape
        self.axes = _normalize_axes(axis, x.ndim, "mean")
        self.keepdims = keepdims
        self.count = int(np.prod([x.shape[a] for a in self.axes]))
        return np.asarray(x.mean(axis=self.axes, keepdims=keepdims))

    def backward(self, grad):
        grad = grad.reshape(_kept_shape(self.input_shape, self.axes)) / self.count
        return (BroadcastTo.run(grad, shape=self.input_shape),)


class Max(Function):
    """Maximum over axes. Where several elements tie for the maximum, the gradient is split
    equally among them (so it still sums to the incoming gradient), as in PyTorch's amax."""

    reduce = staticmethod(np.max)

    def forward(self, x, axis=None, keepdims=False):
        self.axes = _normalize_axes(axis, x.ndim, self.name.lower())
        out_kept = self.reduce(x, axis=self.axes, keepdims=True)
        # Which elements are maxima, each weighted by 1/(number of ties): a constant, as the
        # gradient of max is piecewise constant in x.
        is_max = x == out_kept
        self.share = is_max / is_max.sum(axis=self.axes, keepdims=True).astype(x.dtype)
        self.kept_shape = out_kept.shape
        return out_kept if keepdims else np.asarray(np.squeeze(out_kept, self.axes))

    def backward(self, grad):
        return (grad.reshape(self.kept_shape) * self.share,)


class Min(Max):
    """Minimum over axes, ties splitting the gradient as in `Max` (PyTorch's amin)."""

    reduce = staticmethod(np.min)


class Var(Function):
    """Variance over axes with `correction` (1 = unbiased, PyTorch's default; 0 = NumPy's)."""

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.axes = _normalize_axes(axis, x.ndim, "var")
        self.keepdims = keepdims
        count = int(np.prod([x.shape[a] for a in self.axes]))
        self.divisor = builtins.max(count - correction, 0)
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
            # a Python float (inf for divisor 0) keeps float32 gradients float32
            return (grad * float(np.float64(2.0) / self.divisor) * centered,)


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
        if sorted(d % builtins.max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
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
# More elementwise functions (PyTorch's names)
# --------------------------------------------------------------------------------------------


class Abs(Function):
    def forward(self, x):
        self.sign = np.sign(x)  # the slope: a constant, 0 at the kink as in PyTorch
        return np.abs(x)

    def backward(self, grad):
        return (grad * self.sign,)


class Clamp(Function):
    """x limited to [low, high] (either bound may be None). The gradient passes where x is
    inside the bounds, ends included, as in PyTorch."""

    def forward(self, x, low=None, high=None):
        self.inside = np.ones(x.shape, dtype=bool)
        if low is not None:
            self.inside &= x >= low
        if high is not None:
            self.inside &= x <= high
        return np.clip(x, low, high).astype(x.dtype, copy=False)

    def backward(self, grad):
        return (grad * self.inside,)


class Maximum(Function):
    """Elementwise maximum with broadcasting; where a == b the gradient is split in halves."""

    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("maximum", a, b)
        out = np.maximum(a, b)
        self.share_a = _winner_share(a > b, a == b, out.dtype)
        return out

    def backward(self, grad):
        return grad * self.share_a, grad * (1 - self.share_a)


class Minimum(Function):
    """Elementwise minimum with broadcasting; where a == b the gradient is split in halves."""

    def forward(self, a, b):
        if a.shape != b.shape:
            _broadcast_check("minimum", a, b)
        out = np.minimum(a, b)
        self.share_a = _winner_share(a < b, a == b, out.dtype)
        return out

    def backward(self, grad):
        return grad * self.share_a, grad * (1 - self.share_a)


def _winner_share(a_wins, tie, dtype):
    """The share of the gradient that goes to `a`: 1 where it wins, 1/2 on a tie, else 0."""
    dtype = dtype if np.dtype(dtype).kind == "f" else np.float64
    return (a_wins + 0.5 * tie).astype(dtype)


class Sin(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return np.sin(x)

    def backward(self, grad):
        x, = self.saved
        return (grad * Cos.run(x),)


class Cos(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return np.cos(x)

    def backward(self, grad):
        x, = self.saved
        return (-grad * Sin.run(x),)


class Log1p(Function):
    """log(1 + x), accurate for small x."""

    def forward(self, x):
        self.save_for_backward(x)
        return np.log1p(x)

    def backward(self, grad):
        x, = self.saved
        return (grad / (1 + x),)


class Expm1(Function):
    """exp(x) - 1, accurate for small x."""

    def forward(self, x):
        y = np.expm1(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad * (y + 1),)


class Square(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, grad):
        x, = self.saved
        return (grad * 2 * x,)


class Rsqrt(Function):
    """1 / sqrt(x)."""

    def forward(self, x):
        y = 1 / np.sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved  # d x^(-1/2) / dx = -1/2 x^(-3/2) = -1/2 y^3
        return (grad * -0.5 * y * y * y,)


class StepFunction(Function):
    """sign, floor, ceil, round: piecewise constant, so the gradient is zero (as in PyTorch)."""

    def forward(self, x, function):
        return np.asarray(function(x))

    def backward(self, grad):
        return (grad * 0,)


# --------------------------------------------------------------------------------------------
# More reductions and scans
# --------------------------------------------------------------------------------------------


class CumSum(Function):
    """Running sum along one axis; `reverse=True` sums from the end (that is its backward)."""

    def forward(self, x, axis, reverse=False):
        self.axis, self.reverse = axis, reverse
        if reverse:
            return np.flip(np.cumsum(np.flip(x, axis), axis), axis)
        return np.cumsum(x, axis)

    def backward(self, grad):
        # out_i = sum_{j <= i} x_j, so dL/dx_j = sum_{i >= j} grad_i: a reversed running sum.
        return (CumSum.run(grad, axis=self.axis, reverse=not self.reverse),)


class LogSumExp(Function):
    """log(sum(exp(x))) over axes, with the maximum subtracted first so exp never overflows."""

    def forward(self, x, axes, keepdims=False):
        self.kept_shape = _kept_shape(x.shape, axes)
        shift = x.max(axis=axes, keepdims=True) if x.size else np.zeros(self.kept_shape, x.dtype)
        shift = np.where(np.isfinite(shift), shift, 0)  # rows of -inf: log(0) = -inf, no nan
        with np.errstate(divide="ignore"):
            out = np.log(np.exp(x - shift).sum(axis=axes, keepdims=True)) + shift
        out = out.astype(x.dtype, copy=False)
        out = out if keepdims else out.reshape(tuple(
            size for i, size in enumerate(out.shape) if i not in axes))
        self.save_for_backward(x, out)
        return out

    def backward(self, grad):
        x, out = self.saved  # d/dx = softmax(x) = exp(x - logsumexp(x))
        return (grad.reshape(self.kept_shape) * Exp.run(x - out.reshape(self.kept_shape)),)


class Norm(Function):
    """The vector p-norm over axes: p = 2 (default), 1, inf, -inf, 0 (count of non-zeros) or
    any other p > 0. The gradient at x = 0 is 0 (a subgradient), never nan."""

    def forward(self, x, p, axes, keepdims=False):
        self.p, self.kept_shape = p, _kept_shape(x.shape, axes)
        magnitude = np.abs(x)
        self.sign = np.sign(x)
        if p == 2:
            out = np.sqrt((x * x).sum(axis=axes, keepdims=True))
        elif p == 1:
            out = magnitude.sum(axis=axes, keepdims=True)
        elif p in (np.inf, -np.inf):
            reduce = np.max if p == np.inf else np.min
            out = reduce(magnitude, axis=axes, keepdims=True)
            is_extreme = magnitude == out  # ties split the gradient, as in max
            ties = is_extreme.sum(axis=axes, keepdims=True).astype(x.dtype)
            self.share = self.sign * is_extreme / ties
        elif p == 0:
            out = (x != 0).sum(axis=axes, keepdims=True).astype(x.dtype)
        else:
            out = (magnitude ** p).sum(axis=axes, keepdims=True) ** (1 / p)
        self.is_zero = out == 0  # where the norm is 0, so is x: its gradient is 0 there
        out = out.astype(x.dtype, copy=False)
        out = out if keepdims else out.reshape(tuple(
            size for i, size in enumerate(out.shape) if i not in axes))
        self.save_for_backward(x, out)
        return out

    def backward(self, grad):
        x, out = self.saved
        grad = grad.reshape(self.kept_shape)
        if self.p == 2:  # d|x| = x / |x|
            return (grad * x / (out.reshape(self.kept_shape) + self.is_zero),)
        if self.p == 1:
            return (grad * self.sign,)
        if self.p in (np.inf, -np.inf):
            return (grad * self.share,)
        if self.p == 0:
            return (grad * 0 * x,)
        # d(sum |x|^p)^(1/p) = sign(x) |x|^(p-1) / norm^(p-1)
        magnitude = x * self.sign
        norm = out.reshape(self.kept_shape) + self.is_zero
        return (grad * self.sign * (magnitude / norm) ** (self.p - 1),)


class Prod(Function):
    """Product along one axis. Its gradient is the product of the *other* elements, computed
    without dividing by x, so it is right when some elements are zero."""

    def forward(self, x, axis, keepdims=False):
        self.axis, self.kept_shape = axis, _kept_shape(x.shape, (axis,))
        self.save_for_backward(x)
        return np.asarray(np.prod(x, axis=axis, keepdims=keepdims))

    def backward(self, grad):
        x, = self.saved
        return (grad.reshape(self.kept_shape) * ProductOfOthers.run(x, axis=self.axis),)


def _products_of_others(x):
    """out_i = prod_{j != i} x_j along the last axis: (product of those before i) times
    (product of those after i), both running products, so no division by a zero x_j."""
    ones = np.ones_like(x[..., :1])
    before = np.cumprod(np.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
    after = np.flip(np.cumprod(np.concatenate([ones, np.flip(x[..., 1:], -1)], axis=-1),
                               axis=-1), -1)
    return before * after


class ProductOfOthers(Function):
    """out_i = prod_{j != i} x_j along an axis: the gradient of `Prod`, as an op so that prod
    has a second derivative."""

    def forward(self, x, axis):
        self.axis = axis
        self.save_for_backward(x)
        return np.moveaxis(_products_of_others(np.moveaxis(x, axis, -1)), -1, axis)

    def backward(self, grad):
        if isinstance(grad, Tensor):
            raise RuntimeError("prod: derivatives beyond the second are not supported")
        x, = self.saved
        x_last, grad_last = np.moveaxis(x, self.axis, -1), np.moveaxis(grad, self.axis, -1)
        n = x_last.shape[-1]
        # d out_i / d x_k = prod_{j not in {i, k}} x_j (k != i): row i of `without_i` is x with
        # x_i set to 1, whose products of others are exactly those; the diagonal is 0.
        without_i = np.repeat(x_last[..., None, :], n, axis=-2)
        without_i[..., np.arange(n), np.arange(n)] = 1
        jacobian = _products_of_others(without_i)
        jacobian[..., np.arange(n), np.arange(n)] = 0
        grad_x = np.einsum("...i,...ik->...k", grad_last, jacobian)
        return (np.moveaxis(grad_x, -1, self.axis),)


# --------------------------------------------------------------------------------------------
# More shape ops
# --------------------------------------------------------------------------------------------


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


class Einsum(Function):
    """np.einsum with explicit output subscripts (see `einsum`). The gradient of operand i is
    itself an einsum: of the output gradient with the other operands, producing operand i's
    subscripts (indices that occur in operand i alone were summed: their gradient is broadcast)."""

    def forward(self, *operands, inputs, output):
        self.inputs, self.output = inputs, output
        self.shapes = tuple(a.shape for a in operands)
        self.save_for_backward(*operands)
        return np.asarray(np.einsum(",".join(inputs) + "->" + output, *operands))

    def backward(self, grad):
        operands = self.saved
        grads = []
        for i, subscripts in enumerate(self.inputs):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [j for j in range(len(operands)) if j != i]
            elsewhere = set(self.output).union(*(self.inputs[j] for j in others))
            kept = "".join(c for c in subscripts if c in elsewhere)
            spec = ",".join([self.output] + [self.inputs[j] for j in others]) + "->" + kept
            grad_i = Einsum.run(grad, *[operands[j] for j in others],
                                inputs=tuple(spec.split("->")[0].split(",")), output=kept)
            if kept != subscripts:  # summed-out indices: the gradient is the same along them
                shape = self.shapes[i]
                grad_i = grad_i.reshape(tuple(n if c in elsewhere else 1
                                              for c, n in zip(subscripts, shape)))
                grad_i = BroadcastTo.run(grad_i, shape=shape)
            grads.append(grad_i)
        return tuple(grads)


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


def concatenate(tensors, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """The tensors joined along an existing axis `dim` (alias `axis`; default 0)."""
    return Concatenate.apply(*tensors, axis=either_keyword("concatenate", "dim", dim, "axis",
                                                           axis, 0))


cat = concatenate


def stack(tensors, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """The tensors (all of one shape) joined along a new axis `dim` (alias `axis`; default 0)."""
    return Stack.apply(*tensors, axis=either_keyword("stack", "dim", dim, "axis", axis, 0))


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
# PyTorch's keywords: dim= / keepdim= beside NumPy's axis= / keepdims=
# --------------------------------------------------------------------------------------------

def either_keyword(op, torch_name, torch_value, numpy_name, numpy_value, default):
    """The value of an argument that has a PyTorch spelling (dim, keepdim) and a NumPy one
    (axis, keepdims): either works; both at once is a TypeError naming the op."""
    if numpy_value is _UNSET:
        return default if torch_value is _UNSET else torch_value
    if torch_value is not _UNSET:
        raise TypeError(f"{op}: got both {torch_name}= and {numpy_name}= (two spellings of the "
                        f"same argument); pass one")
    return numpy_value


def _dim_keepdim(op, dim, keepdim, axis, keepdims, default_dim=None):
    return (either_keyword(op, "dim", dim, "axis", axis, default_dim),
            bool(either_keyword(op, "keepdim", keepdim, "keepdims", keepdims, False)))


def _one_axis(op, dim, ndim):
    """A single dim (negatives allowed) -> non-negative axis, or an error naming the op."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    size = builtins.max(ndim, 1)  # a 0-d tensor accepts dim 0 or -1, as in PyTorch
    if not -size <= dim < size:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected a dim in [{-size}, {size - 1}])")
    return int(dim) % size


def _drop_axis(shape, axis):
    return shape[:axis] + shape[axis + 1:]


def _sum(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET):
    """Sum over `dim` (None: all; an int or a tuple); `axis`/`keepdims` are the same arguments."""
    dim, keepdim = _dim_keepdim("sum", dim, keepdim, axis, keepdims)
    return Sum.apply(x, axis=dim, keepdims=keepdim)


def _mean(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET):
    dim, keepdim = _dim_keepdim("mean", dim, keepdim, axis, keepdims)
    return Mean.apply(x, axis=dim, keepdims=keepdim)


def _correction(op, correction, unbiased):
    if unbiased is not _UNSET:
        if correction is not _UNSET:
            raise TypeError(f"{op}: got both correction= and unbiased=; pass one")
        return 1 if unbiased else 0
    return 1 if correction is _UNSET else correction


def _var(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET, correction=_UNSET,
         unbiased=_UNSET):
    """Variance over `dim` with `correction` (1, PyTorch's default, is unbiased) or `unbiased`.
    (The second positional argument is keepdim, as it always was here.)"""
    dim, keepdim = _dim_keepdim("var", dim, keepdim, axis, keepdims)
    return Var.apply(x, axis=dim, keepdims=keepdim,
                     correction=_correction("var", correction, unbiased))


def std(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET, correction=_UNSET,
        unbiased=_UNSET) -> Tensor:
    """Standard deviation: the square root of `var` with the same arguments."""
    dim, keepdim = _dim_keepdim("std", dim, keepdim, axis, keepdims)
    return Sqrt.apply(Var.apply(x, axis=dim, keepdims=keepdim,
                                correction=_correction("std", correction, unbiased)))


class ValuesIndices(tuple):
    """(values, indices), as PyTorch's max/min/topk/sort return: unpack it or use the names."""

    __slots__ = ()

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])

    def __repr__(self):
        return f"ValuesIndices(values={self[0]!r}, indices={self[1]!r})"


def _along_axis_index(index, axis):
    """A NumPy index that picks, at each position of `index`, element index[..] along `axis`
    (PyTorch's gather): `index` itself on `axis`, the position's own coordinate elsewhere."""
    ndim = index.ndim
    parts = [np.arange(n).reshape((1,) * d + (n,) + (1,) * (ndim - d - 1))
             for d, n in enumerate(index.shape)]
    parts[axis] = index
    return tuple(parts)


def _take_along(op, x, indices, axis, keepdim):
    """(values, indices) for indices along `axis` computed on the data: the values go through
    GetItem, so the gradient reaches exactly the picked elements."""
    scalar = x.ndim == 0
    if scalar:
        x = Reshape.apply(x, shape=(1,))
    values = GetItem.apply(x, index=_along_axis_index(indices, axis))
    if scalar:  # a 0-d input gives 0-d results, keepdim or not, as in PyTorch
        values, indices = Reshape.apply(values, shape=()), indices.reshape(())
    elif not keepdim:
        values = Reshape.apply(values, shape=_drop_axis(values.shape, axis))
        indices = indices.reshape(_drop_axis(indices.shape, axis))
    return ValuesIndices(values, Tensor._make(indices.astype(np.int64, copy=False), False))


def _extremum(op, reduce_op, pick, pairwise):
    """max / min: over everything (values), over `dim` (values, indices, as torch), over
    `axis` (values only, as before), or elementwise against another tensor."""
    def extremum(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET):
        if isinstance(dim, (Tensor, np.ndarray)):  # torch.max(a, b) is maximum(a, b)
            return pairwise.apply(x, dim)
        if dim is _UNSET or dim is None:
            # values only: over everything, or over `axis` (any axes), as before
            keep = bool(either_keyword(op, "keepdim", keepdim, "keepdims", keepdims, False))
            return reduce_op.apply(x, axis=None if axis is _UNSET else axis, keepdims=keep)
        if axis is not _UNSET:
            raise TypeError(f"{op}: got both dim= and axis= (two spellings of the same "
                            f"argument); pass one")
        keepdim = bool(either_keyword(op, "keepdim", keepdim, "keepdims", keepdims, False))
        axis = _one_axis(op, dim, x.ndim)
        data = x.data if x.ndim else x.data.reshape(1)
        if data.shape[axis] == 0:
            raise IndexError(f"{op}: dim {dim} of shape {x.shape} is empty")
        return _take_along(op, x, pick(data, axis=axis, keepdims=True), axis, keepdim)
    extremum.__name__ = op
    extremum.__doc__ = (f"PyTorch's {op}: `x.{op}()` the {op}imum over all elements; "
                        f"`x.{op}(dim, keepdim=False)` a (values, indices) pair; "
                        f"`x.{op}(axis=..., keepdims=...)` values only (any axes, ties split "
                        f"the gradient); `x.{op}(other)` elementwise.")
    return extremum


def _amax(reduce_op, op):
    def amax(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET):
        dim, keepdim = _dim_keepdim(op, dim, keepdim, axis, keepdims)
        return reduce_op.apply(x, axis=dim, keepdims=keepdim)
    amax.__name__ = op
    return amax


def _arg_extremum(op, pick):
    def arg_extremum(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET):
        dim, keepdim = _dim_keepdim(op, dim, keepdim, axis, keepdims)
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.size == 0:
            raise ValueError(f"{op}: the tensor of shape {data.shape} is empty")
        if dim is None:  # the index into the flattened tensor, as torch
            result = pick(data.reshape(-1))
            if keepdim:
                result = np.reshape(result, (1,) * data.ndim)
        else:
            axis = _one_axis(op, dim, data.ndim)
            result = pick(data if data.ndim else data.reshape(1), axis=axis, keepdims=keepdim)
            if data.ndim == 0:
                result = result.reshape(())
        return Tensor._make(np.asarray(result, dtype=np.int64), False)
    arg_extremum.__name__ = op
    arg_extremum.__doc__ = f"Index of the {op[3:]}imum (int64, no gradient); over all " \
                           f"elements (flattened) when dim is None."
    return arg_extremum


def _sort_order(data, axis, descending):
    """Stable argsort along `axis`, largest first when `descending`."""
    if descending:
        data = -(data.astype(np.int64) if data.dtype.kind in "bu" else data)
    return np.argsort(data, axis=axis, kind="stable")


def topk(x, k, dim=-1, largest=True, sorted=True) -> ValuesIndices:
    """The k largest (or smallest) elements along `dim` and their indices, largest first (the
    order is sorted whether or not `sorted` is asked for)."""
    axis = _one_axis("topk", dim, x.ndim)
    length = x.shape[axis] if x.ndim else 1
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= length:
        raise ValueError(f"topk: k={k!r} is out of range for dim {dim} of size {length} "
                         f"(shape {x.shape})")
    data = x.data if x.ndim else x.data.reshape(1)
    order = _sort_order(data, axis, descending=largest)
    indices = order[(slice(None),) * axis + (slice(0, k),)]
    return _take_along("topk", x, indices, axis, keepdim=True)


def sort(x, dim=-1, descending=False, stable=False) -> ValuesIndices:
    """(sorted values, their indices) along `dim`; ties keep their order (always stable)."""
    axis = _one_axis("sort", dim, x.ndim)
    data = x.data if x.ndim else x.data.reshape(1)
    return _take_along("sort", x, _sort_order(data, axis, descending), axis, keepdim=True)


def argsort(x, dim=-1, descending=False, stable=False) -> Tensor:
    """The indices that sort `x` along `dim` (int64, no gradient)."""
    return sort(x, dim=dim, descending=descending)[1]


def cumsum(x, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """Running sum along `dim` (required, as in PyTorch)."""
    dim = either_keyword("cumsum", "dim", dim, "axis", axis, _UNSET)
    if dim is _UNSET:
        raise TypeError("cumsum: missing the dim argument")
    if x.ndim == 0:
        _one_axis("cumsum", dim, 0)
        return CumSum.apply(x.reshape(1), axis=0).reshape(())
    return CumSum.apply(x, axis=_one_axis("cumsum", dim, x.ndim))


def logsumexp(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET) -> Tensor:
    """log(sum(exp(x))) over `dim` (an int or a tuple; None: all), computed stably."""
    dim, keepdim = _dim_keepdim("logsumexp", dim, keepdim, axis, keepdims)
    return LogSumExp.apply(x, axes=_normalize_axes(dim, x.ndim, "logsumexp"), keepdims=keepdim)


def norm(x, p=2, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET) -> Tensor:
    """The vector p-norm over `dim` (None: all elements): p = 2 ('fro'), 1, inf, -inf, 0 or
    any other p > 0. Gradient 0 at x = 0."""
    dim, keepdim = _dim_keepdim("norm", dim, keepdim, axis, keepdims)
    if p == "fro":
        p = 2
    if isinstance(p, str) or not (p >= 0 or p == -np.inf):
        raise ValueError(f"norm: p={p!r} is not supported (use 2, 1, inf, -inf, 0, 'fro' or a "
                         f"positive number)")
    return Norm.apply(x, p=p, axes=_normalize_axes(dim, x.ndim, "norm"), keepdims=keepdim)


def prod(x, dim=_UNSET, keepdim=_UNSET, *, axis=_UNSET, keepdims=_UNSET) -> Tensor:
    """Product over `dim` (an int; None: all elements). The gradient is right with zeros."""
    dim, keepdim = _dim_keepdim("prod", dim, keepdim, axis, keepdims)
    if dim is None or x.ndim == 0:
        if dim is not None:
            _one_axis("prod", dim, 0)
        out = Prod.apply(Reshape.apply(x, shape=(-1,)), axis=0)
        return Reshape.apply(out, shape=(1,) * x.ndim) if keepdim else out
    return Prod.apply(x, axis=_one_axis("prod", dim, x.ndim), keepdims=keepdim)


# ---- elementwise --------------------------------------------------------------------------

def abs(x) -> Tensor:  # noqa: A001 (PyTorch's name)
    return Abs.apply(x)


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002 (PyTorch's names)
    """x limited to [min, max]; numbers give a Clamp op (gradient where not clamped), tensor
    bounds go through maximum/minimum (so they get gradients too)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, (Tensor, np.ndarray)) or isinstance(max, (Tensor, np.ndarray)):
        out = x if min is None else Maximum.apply(x, min)
        return out if max is None else Minimum.apply(out, max)
    return Clamp.apply(x, low=min, high=max)


clip = clamp


def maximum(a, b) -> Tensor:
    """Elementwise maximum (broadcasting); ties split the gradient equally."""
    return Maximum.apply(a, b)


def minimum(a, b) -> Tensor:
    """Elementwise minimum (broadcasting); ties split the gradient equally."""
    return Minimum.apply(a, b)


def _elementwise(op_class):
    def function(x):
        return op_class.apply(x)
    function.__name__ = op_class.__name__.lower()
    return function


exp, log, sqrt, tanh, sigmoid, relu = (_elementwise(c) for c in (Exp, Log, Sqrt, Tanh, Sigmoid,
                                                                 Relu))
sin, cos, log1p, expm1, square, rsqrt = (_elementwise(c) for c in (Sin, Cos, Log1p, Expm1, Square,
                                                                   Rsqrt))


def sign(x) -> Tensor:
    return StepFunction.apply(x, function=np.sign)


def floor(x) -> Tensor:
    return StepFunction.apply(x, function=np.floor)


def ceil(x) -> Tensor:
    return StepFunction.apply(x, function=np.ceil)


def round(x, decimals=0) -> Tensor:  # noqa: A001 (PyTorch's name)
    """Round half to even, as PyTorch (and NumPy) do; zero gradient."""
    return StepFunction.apply(x, function=lambda a: np.round(a, decimals))


# ---- shape ---------------------------------------------------------------------------------

def _sizes(op, sizes):
    """`f(2, 3)` or `f((2, 3))` -> (2, 3)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not all(isinstance(n, (int, np.integer)) for n in sizes):
        raise TypeError(f"{op}: sizes must be ints, got {sizes!r}")
    return tuple(int(n) for n in sizes)


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


def chunk(x, chunks, dim=0) -> tuple:
    """Split into `chunks` pieces of equal size along `dim` (the last may be smaller, and there
    may be fewer pieces), as torch.chunk."""
    if not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    axis = _one_axis("chunk", dim, x.ndim)
    size = -(-x.shape[axis] // chunks)  # ceil
    return split(x, builtins.max(size, 1), dim=axis)


def _integer_index(op, index):
    index = index.data if isinstance(index, Tensor) else np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must hold integers, got dtype {index.dtype}")
    return index


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


# ---- einsum --------------------------------------------------------------------------------

def _einsum_subscripts(spec, operands):
    """`spec` -> (input subscripts, output subscripts), explicit, with '...' spelled out in
    unused letters; repeated indices within one operand (diagonals) are refused."""
    spec = spec.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise ValueError(f"einsum: '{spec}' has {len(inputs)} operands, got {len(operands)} "
                         f"tensors")
    letters = set(spec) - set(".,->")
    if not all(c.isalpha() for c in letters):
        raise ValueError(f"einsum: '{spec}' may contain only letters, ',', '->' and '...'")
    spare = iter(sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") - letters))
    ellipsis_length = 0
    for subscripts, operand in zip(inputs, operands):
        named = len(subscripts.replace("...", ""))
        if "..." in subscripts:
            ellipsis_length = builtins.max(ellipsis_length, operand.ndim - named)
        elif named != operand.ndim:
            raise ValueError(f"einsum: subscripts '{subscripts}' name {named} dimensions, but "
                             f"the operand has shape {operand.shape}")
    ellipsis = "".join(next(spare) for _ in range(ellipsis_length))
    spelled = []
    for subscripts, operand in zip(inputs, operands):
        if "..." in subscripts:
            own = operand.ndim - len(subscripts.replace("...", ""))
            if own < 0:
                raise ValueError(f"einsum: subscripts '{subscripts}' name more dimensions than "
                                 f"the operand's shape {operand.shape}")
            subscripts = subscripts.replace("...", ellipsis[ellipsis_length - own:])
        spelled.append(subscripts)
    if not arrow:  # implicit output: the ellipsis, then the letters used once, sorted
        counts = "".join(inputs).replace("...", "")
        output = "..." * bool(ellipsis_length) + "".join(
            sorted(c for c in set(counts) if counts.count(c) == 1))
    output = output.replace("...", ellipsis)
    for position, subscripts in enumerate(spelled + [output]):
        repeated = sorted({c for c in subscripts if subscripts.count(c) > 1})
        if repeated:
            where = "the output" if position == len(spelled) else f"operand {position}"
            raise ValueError(f"einsum: index '{repeated[0]}' repeats in {where} of '{spec}'; "
                             f"diagonals are not supported (take them by indexing)")
    unknown = set(output) - set("".join(spelled))
    if unknown:
        raise ValueError(f"einsum: output index '{sorted(unknown)[0]}' of '{spec}' is in no "
                         f"operand")
    return tuple(spelled), output


def einsum(spec, *operands) -> Tensor:
    """Einstein summation, as torch.einsum / np.einsum ('...' supported, operands may also be
    passed as one list). Differentiable to any order: each gradient is itself an einsum."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    tensors = [o if isinstance(o, Tensor) else Tensor(o) for o in operands]
    inputs, output = _einsum_subscripts(spec, tensors)
    sizes = {}
    for subscripts, t in zip(inputs, tensors):
        for c, n in zip(subscripts, t.shape):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise ValueError(f"einsum: index '{c}' of '{spec}' has sizes {sizes[c]} and {n} "
                                 f"(operand shapes {[t.shape for t in tensors]})")
            sizes[c] = builtins.max(sizes[c], n)
    return Einsum.apply(*tensors, inputs=inputs, output=output)


# ---- dtype conversions and small helpers -------------------------------------------------

def _dtype(op, dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: {dtype!r} is not a dtype (use e.g. tl.float32, 'float64', "
                        f"tl.int64)") from None
    if dtype.kind == "f" and dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: tensorlite computes in float32 or float64, not {dtype}")
    return dtype


def _to(x, *args, dtype=None, **ignored_device_options):
    """Convert to `dtype` (tl.float64, np.float32, 'float32', ...). A device ('cpu') is
    accepted and ignored: tensorlite runs on the CPU. Returns x itself if nothing changes;
    a float result keeps the gradient, an integer or boolean one is cut from the graph."""
    for arg in args:
        if isinstance(arg, str) and arg.split(":")[0] == "cpu":
            continue
        if isinstance(arg, Tensor):
            arg = arg.dtype
        if dtype is not None:
            raise TypeError(f"to: two dtypes given ({dtype!r} and {arg!r})")
        dtype = arg
    if dtype is None:
        return x
    dtype = _dtype("to", dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind != "f":
        return Tensor._make(x.data.astype(dtype), False)
    return Cast.apply(x, dtype=dtype)


def _no_grad_unary(op, numpy_function):
    def unary(x):
        try:
            return Tensor._make(np.asarray(numpy_function(x.data)), False)
        except TypeError:
            raise TypeError(f"{op}: not supported for dtype {x.dtype} (integer or boolean "
                            f"tensors only)") from None
    return unary


def _no_grad_binary(op, numpy_function, reflected=False):
    """An operator without a gradient (integer/boolean arithmetic): NumPy on the data."""
    def binary(a, b):
        if reflected:
            a, b = b, a
        a_data = a.data if isinstance(a, Tensor) else a
        b_data = b.data if isinstance(b, Tensor) else b
        try:
            return Tensor._make(np.asarray(numpy_function(a_data, b_data)), False)
        except TypeError:
            raise TypeError(f"{op}: not supported for dtypes {np.result_type(a_data).name} and "
                            f"{np.result_type(b_data).name}") from None
        except ValueError:
            raise ValueError(f"{op}: shapes {np.shape(a_data)} and {np.shape(b_data)} cannot be "
                             f"broadcast together") from None
    return binary


# --------------------------------------------------------------------------------------------
# The registry: every Tensor operator and method comes from this table.
# --------------------------------------------------------------------------------------------

# torch.* functions with the same behaviour as the Tensor methods (re-exported as tl.*).
sum = _sum  # noqa: A001 (PyTorch's names shadow builtins here; this module uses builtins.*)
mean, var = _mean, _var
max = _extremum("max", Max, np.argmax, Maximum)  # noqa: A001
min = _extremum("min", Min, np.argmin, Minimum)  # noqa: A001
amax, amin = _amax(Max, "amax"), _amax(Min, "amin")
argmax, argmin = _arg_extremum("argmax", np.argmax), _arg_extremum("argmin", np.argmin)
expand, repeat = _expand, _repeat

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
    "__abs__": abs,
    "__getitem__": lambda x, index: GetItem.apply(x, index=index),
    "__gt__": _no_grad_compare(np.greater),
    "__ge__": _no_grad_compare(np.greater_equal),
    "__lt__": _no_grad_compare(np.less),
    "__le__": _no_grad_compare(np.less_equal),
    "__eq__": _no_grad_compare(np.equal),
    "__ne__": _no_grad_compare(np.not_equal),
    # integer and boolean arithmetic: no gradient
    "__floordiv__": _no_grad_binary("floor_divide (//)", np.floor_divide),
    "__rfloordiv__": _no_grad_binary("floor_divide (//)", np.floor_divide, reflected=True),
    "__mod__": _no_grad_binary("remainder (%)", np.remainder),
    "__rmod__": _no_grad_binary("remainder (%)", np.remainder, reflected=True),
    "__and__": _no_grad_binary("bitwise_and (&)", np.bitwise_and),
    "__rand__": _no_grad_binary("bitwise_and (&)", np.bitwise_and, reflected=True),
    "__or__": _no_grad_binary("bitwise_or (|)", np.bitwise_or),
    "__ror__": _no_grad_binary("bitwise_or (|)", np.bitwise_or, reflected=True),
    "__xor__": _no_grad_binary("bitwise_xor (^)", np.bitwise_xor),
    "__rxor__": _no_grad_binary("bitwise_xor (^)", np.bitwise_xor, reflected=True),
    "__invert__": _no_grad_unary("bitwise_not (~)", np.invert),
    "matmul": matmul,
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "relu": relu,
    "abs": abs,
    "clamp": clamp,
    "clip": clamp,
    "maximum": maximum,
    "minimum": minimum,
    "sin": sin,
    "cos": cos,
    "log1p": log1p,
    "expm1": expm1,
    "square": square,
    "rsqrt": rsqrt,
    "sign": sign,
    "floor": floor,
    "ceil": ceil,
    "round": round,
    "sum": _sum,
    "mean": _mean,
    "max": max,
    "min": min,
    "amax": amax,
    "amin": amin,
    "argmax": argmax,
    "argmin": argmin,
    "var": _var,
    "std": std,
    "norm": norm,
    "prod": prod,
    "logsumexp": logsumexp,
    "cumsum": cumsum,
    "topk": topk,
    "sort": sort,
    "argsort": argsort,
    "reshape": _reshape,
    "view": _reshape,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "permute": _permute,
    "T": property(_T),
    "flatten": flatten,
    "squeeze": squeeze,
    "unsqueeze": unsqueeze,
    "expand": _expand,
    "repeat": _repeat,
    "chunk": chunk,
    "split": split,
    "index_select": index_select,
    "gather": gather,
    "scatter_add": scatter_add,
    "masked_fill": masked_fill,
    "numel": lambda x: x.data.size,
    "tolist": lambda x: x.data.tolist(),
    "to": _to,
    "float": lambda x: _to(x, np.float32),
    "double": lambda x: _to(x, np.float64),
    "long": lambda x: _to(x, np.int64),
    "int": lambda x: _to(x, np.int32),
    "bool": lambda x: _to(x, np.bool_),
    "astype": lambda x, dtype: Cast.apply(x, dtype=np.dtype(dtype)),
    # the engine
    "backward": tensor_backward,
    "retain_grad": retain_grad,
    "to_dot": to_dot,
}

# Registry entries that have no derivative at all (comparisons, integer arithmetic, indices,
# conversions to Python): no gradient flows through them.
NO_GRADIENT_METHODS = frozenset({
    "__gt__", "__ge__", "__lt__", "__le__", "__eq__", "__ne__", "__floordiv__", "__rfloordiv__",
    "__mod__", "__rmod__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__",
    "__invert__", "argmax", "argmin", "argsort", "numel", "tolist", "long", "int", "bool",
    "backward", "retain_grad", "to_dot",  # the engine itself, not ops
})

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
