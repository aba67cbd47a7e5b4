"""Reductions: sum, mean, var/std, max/min (values and indices, as torch), norm, prod,
logsumexp, cumsum, and the sorting family (topk, sort, argsort, argmax/argmin)."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite.autograd.function import Function
from tensorlite.ops.arguments import (
    _along_axis_index, _dim_keepdim, _drop_axis, either_keyword, _kept_shape, _normalize_axes,
    _one_axis, _UNSET,
)
from tensorlite.ops.elementwise import Exp, Maximum, Minimum, Sqrt
from tensorlite.ops.shape import BroadcastTo, Reshape
from tensorlite.ops.index import GetItem
from tensorlite.tensor import Tensor


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


# torch.* functions with the same behaviour as the Tensor methods (re-exported as tl.*).
sum = _sum  # noqa: A001 (PyTorch's names shadow builtins here; this module uses builtins.*)


mean, var = _mean, _var


max = _extremum("max", Max, np.argmax, Maximum)  # noqa: A001


min = _extremum("min", Min, np.argmin, Minimum)  # noqa: A001


amax, amin = _amax(Max, "amax"), _amax(Min, "amin")


argmax, argmin = _arg_extremum("argmax", np.argmax), _arg_extremum("argmin", np.argmin)
