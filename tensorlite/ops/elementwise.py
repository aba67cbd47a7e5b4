"""Elementwise ops: arithmetic (NumPy broadcasting; the engine's `unbroadcast` reduces the
gradients), unary functions, comparisons and integer/boolean operators (no gradient), dtype casts."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite.autograd.function import Function
from tensorlite.ops.arguments import _broadcast_check, _dtype, _to_dtype_argument
from tensorlite.tensor import Tensor


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
        # np.maximum keeps NaN, as torch's relu does, and is ~10x faster than np.where(x > 0, x, 0)
        y = np.maximum(x, 0)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (grad * (y > 0),)  # the mask is a constant: relu'' = 0


class Cast(Function):
    def forward(self, x, dtype):
        self.input_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.input_dtype),)


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


def _no_grad_compare(numpy_function):
    def compare(a, b):
        a_data = a.data if isinstance(a, Tensor) else a
        b_data = b.data if isinstance(b, Tensor) else b
        return Tensor._make(np.asarray(numpy_function(a_data, b_data)), False)
    return compare


def _pow(base, exponent):
    return Pow.apply(base, exponent)


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


def _to(x, *args, dtype=None, device=None, non_blocking=False, copy=False,
        memory_format=None):
    """As torch's `Tensor.to`: `to(dtype)`, `to(device)`, `to(device, dtype)`, `to(other)`
    (other's dtype), or the keywords. The device must be the CPU (`"cpu"`, `tl.device("cpu")`);
    any other raises a one-line RuntimeError. Returns x itself if nothing changes (unless
    `copy=True`); a float result keeps the gradient, an integer or boolean one is cut from the
    graph."""
    dtype = _to_dtype_argument("to", args, dtype, device)
    if dtype is None or _dtype("to", dtype) == x.dtype:
        return Clone.apply(x) if copy else x
    dtype = _dtype("to", dtype)
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


class Clone(Function):
    """A copy with its own memory; the gradient passes through unchanged."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad):
        return (grad,)


def clone(x) -> Tensor:
    """A copy of `x` in new memory that stays in the graph (torch's `clone`)."""
    return Clone.apply(x)


def contiguous(x) -> Tensor:
    """`x` itself when its memory is C-contiguous, else a contiguous copy (torch's
    `contiguous`)."""
    return x if x._data.flags.c_contiguous else Clone.apply(x)


# ---- type promotion, as torch's ---------------------------------------------------------------
# NumPy widens float32 with int64 to float64; torch keeps the float operand's dtype, and keeps
# an integer tensor integer with a Python int. The operators therefore settle the result dtype
# first, the torch way, and cast the operands to it.

_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}
_DEFAULT_OF_CATEGORY = (np.dtype(np.bool_), np.dtype(np.int64), np.dtype(np.float32))


def _operand(x):
    """(category, dtype, priority) of an operand: a tensor with dimensions outranks a 0-d one,
    which outranks a Python number, within one category. None for what is left to NumPy."""
    if isinstance(x, Tensor):
        kind = _CATEGORY.get(x._data.dtype.kind)
        return None if kind is None else (kind, x._data.dtype, 2 if x._data.ndim else 1)
    if isinstance(x, (bool, np.bool_)):
        return 0, None, 0
    if isinstance(x, (int, np.integer)):
        return 1, None, 0
    if isinstance(x, float):
        return 2, None, 0
    return None


def _result_dtype(a, b):
    info_a, info_b = _operand(a), _operand(b)
    if info_a is None or info_b is None:
        return None
    category = builtins.max(info_a[0], info_b[0])
    top = [info for info in (info_a, info_b) if info[0] == category]
    priority = builtins.max(info[2] for info in top)
    dtypes = [info[1] for info in top if info[2] == priority]
    if dtypes[0] is None:
        return _DEFAULT_OF_CATEGORY[category]
    return np.result_type(*dtypes)


def _promoted(a, b, true_divide=False):
    """a and b cast to the dtype torch gives `a op b` (true division: a float one)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a._data.dtype == b._data.dtype and (not true_divide or a._data.dtype.kind == "f"):
            return a, b
    elif isinstance(a, Tensor) and a._data.dtype.kind == "f" and isinstance(b, (int, float)):
        return a, b  # the usual `x * 2.0`: the number takes x's dtype when applied
    elif isinstance(b, Tensor) and b._data.dtype.kind == "f" and isinstance(a, (int, float)):
        return a, b
    dtype = _result_dtype(a, b)
    if dtype is None:
        return a, b
    if true_divide and dtype.kind != "f":
        dtype = _DEFAULT_OF_CATEGORY[2]
    if isinstance(a, Tensor) and isinstance(b, Tensor) and \
            np.result_type(a._data.dtype, b._data.dtype) == dtype:
        return a, b  # NumPy promotes the same way inside the op: no cast nodes in the graph
    return _cast_operand(a, dtype), _cast_operand(b, dtype)


def _cast_operand(x, dtype):
    if isinstance(x, Tensor):
        if x._data.dtype == dtype:
            return x
        if dtype.kind == "f" and x._data.dtype.kind == "f":
            return Cast.apply(x, dtype=dtype)
        return Tensor._make(x._data.astype(dtype), False) if not x._requires_grad else \
            Cast.apply(x, dtype=dtype)
    return np.asarray(x, dtype=dtype)


def _binary(op, reflected=False, true_divide=False):
    apply = op.apply

    if reflected:
        def method(a, b):
            b, a = _promoted(b, a, true_divide)
            return apply(b, a)
    elif true_divide:
        def method(a, b):
            a, b = _promoted(a, b, true_divide)
            return apply(a, b)
    else:
        def method(a, b):
            if type(b) is Tensor and a._data.dtype == b._data.dtype:  # nothing to promote
                return apply(a, b)
            a, b = _promoted(a, b)
            return apply(a, b)
    return method


def pow(input, exponent) -> Tensor:  # noqa: A001 (PyTorch's name)
    """input ** exponent, either a Tensor or a number, with torch's result dtype."""
    if not isinstance(input, Tensor):
        return _binary(Pow, reflected=True)(exponent, input)
    return _binary(Pow)(input, exponent)
