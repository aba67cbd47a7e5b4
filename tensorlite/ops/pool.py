"""Pooling ops behind `F.max_pool1d/2d`, `F.avg_pool1d/2d` and `F.adaptive_avg_pool2d`, with
torch's arguments, checks and output sizes.

Layout. Inputs are (N, C, H, W) or unbatched (C, H, W) for the 2-D pools, (N, C, L) or (C, L)
for the 1-D ones; every op hands the kernels (tensorlite/kernels/{numpy,numba}/pool.py) an
(N, C, H, W) array, a 1-D pool being a 2-D one with H = 1 and a kernel of height 1, and
reshapes the result back.

Gradients. All three pools are linear in the input once the windows are fixed (max pooling's
arg-max positions are fixed for a given input), so each backward is itself a linear op and
each pair is adjoint:

    MaxPool2d        forward: the window maxima and their positions (the kernel)
    MaxPoolBackward  the gradient scattered (added) to those positions; its own backward
                     gathers at the same positions (MaxPoolGather), whose backward scatters
    AvgPool2d        window means;  AvgPoolBackward spreads each gradient over its window,
                     and its backward is AvgPool2d again
    AdaptiveAvgPool2d  y = A_h x A_w^T with A the (out, in) averaging matrices; its backward
                     A_h^T g A_w, whose backward is the forward again

so gradients of every order are the same two kernels, and a create_graph backward records
them like any other op.
"""

from __future__ import annotations

import operator

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.kernels.numpy.pool import avg_pool2d_divisors, pool_output_size
from tensorlite.tensor import Tensor

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d"]


# --------------------------------------------------------------------------------------------
# argument checks (torch's rules and messages)

def _int(op, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {value!r}")
    return int(value)


def _pair(op, name, value, default=None, dims=2):
    """`value` as a tuple of `dims` ints: an int is repeated; a sequence must hold 1 or `dims`
    ints (torch's rule); None or an empty sequence gives `default` where one is allowed."""
    if value is None or (default is not None and isinstance(value, (tuple, list))
                         and len(value) == 0):
        if default is None:
            raise ValueError(f"{op}: {name} is required")
        return default
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, dims):
            words = "a single int, or a tuple of two ints" if dims == 2 else "a single int"
            raise ValueError(f"{op}: {name} must be {words}, got {tuple(value)!r}")
        values = tuple(_int(op, name, v) for v in value)
        return values * dims if len(values) == 1 else values
    return (_int(op, name, value),) * dims


def _check_input(op, x, dims):
    """The input's shape as (N, C, H, W) (H = 1 for a 1-D pool); unbatched inputs get N = 1."""
    shape = tuple(x.shape)
    if len(shape) not in (dims + 1, dims + 2):
        raise ValueError(f"{op}: expected a {dims + 1}-D (unbatched) or {dims + 2}-D (batched) "
                         f"input, got shape {shape}")
    if any(n == 0 for n in shape[-dims - 1:]):
        raise ValueError(f"{op}: expected non-zero sizes except for the batch, got shape {shape}")
    batch = shape[:-dims - 1] or (1,)
    spatial = shape[-dims:] if dims == 2 else (1,) + shape[-1:]
    return batch + (shape[-dims - 1],) + spatial


def _geometry(op, x_shape, kernel_size, stride, padding, dilation, ceil_mode, dims):
    """Check kernel, stride, padding, dilation as torch does and return them as (h, w) pairs
    (a 1-D pool: (1, k), (1, s), (0, p), (1, d)) with the output size (Ho, Wo)."""
    kernel = _pair(op, "kernel_size", kernel_size, dims=dims)
    stride = _pair(op, "stride", stride, default=kernel, dims=dims)
    padding = _pair(op, "padding", padding, dims=dims)
    dilation = _pair(op, "dilation", dilation, dims=dims)
    for name, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                              ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(values) < low:
            relation = "greater than zero" if low else "non-negative"
            raise ValueError(f"{op}: {name} must be {relation}, got {values}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding should be at most half of kernel size, but got "
                         f"padding={padding} and kernel_size={kernel}")
    if dims == 1:
        kernel, stride, padding, dilation = ((1,) + kernel, (1,) + stride, (0,) + padding,
                                             (1,) + dilation)
    out = tuple(pool_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a],
                                 ceil_mode) for a in (0, 1))
    if min(out) < 1:
        shown = x_shape[1:] if dims == 2 else (x_shape[1], x_shape[3])
        raise ValueError(f"{op}: given input size {shown}, the calculated output size "
                         f"{out if dims == 2 else out[1:]} is too small")
    return kernel, stride, padding, dilation, out


def _output_shape(input_shape, dims, out4):
    """A pool's output shape: input_shape with its last `dims` (1 or 2) sizes replaced by the
    kernel's output (N, C, Ho, Wo)."""
    return tuple(input_shape[:len(input_shape) - dims]) + tuple(out4[4 - dims:])


# --------------------------------------------------------------------------------------------
# max pooling

def _empty_windows(size, out, kernel, stride, padding, dilation):
    """(out,) bool along one axis: the windows none of whose kernel offsets lands inside
    [0, size) (dilation can step over the whole input from the padding)."""
    starts = np.arange(out) * stride - padding
    skipped = -(np.minimum(starts, 0) // dilation)  # offsets before the first one inside
    return (skipped >= kernel) | (starts + skipped * dilation >= size)


def _without_empty_windows(indices, shape4, kernel, stride, padding, dilation):
    """indices for the backward: a window with no input element keeps torch's index, which
    can name another row's element (row * W + W when its row is inside but no column is), so
    it is replaced by H * W, past the plane, where the backward kernels send nothing."""
    H, W = shape4[2:]
    Ho, Wo = indices.shape[2:]
    rows = _empty_windows(H, Ho, kernel[0], stride[0], padding[0], dilation[0])
    cols = _empty_windows(W, Wo, kernel[1], stride[1], padding[1], dilation[1])
    if not (rows.any() or cols.any()):
        return indices
    return np.where(rows[:, None] | cols[None, :], H * W, indices)


class MaxPool2d(Function):
    """Window maxima of x (..., H, W) viewed as (N, C, H, W); the arg-max positions are kept
    (and returned as `indices` by `max_pool2d(..., return_indices=True)`)."""

    def forward(self, x, shape4, dims, kernel_size, stride, padding, dilation, ceil_mode,
                indices_out=None):
        # shape4: x's shape as (N, C, H, W), a 1-D pool's (N, C, L) as (N, C, 1, L); dims: 1 or 2
        y, indices = kernels.max_pool2d(x.reshape(shape4), kernel_size, stride, padding,
                                        dilation, ceil_mode)  # (N, C, Ho, Wo)
        if indices_out is not None:  # return_indices: the caller's list receives torch's
            indices_out.append(indices)
        self.indices = _without_empty_windows(indices, shape4, kernel_size, stride, padding,
                                              dilation)
        self.input_shape, self.shape4 = x.shape, shape4
        self.output_shape = _output_shape(x.shape, dims, y.shape)
        return y.reshape(self.output_shape)

    def backward(self, grad):
        return (MaxPoolBackward.run(grad, indices=self.indices, input_shape=self.input_shape,
                                    shape4=self.shape4),)


class MaxPoolBackward(Function):
    """grad (the output's shape) added at its window's arg-max in zeros of the input's shape:
    a scatter at fixed positions, linear in grad. Its backward gathers at the same positions."""

    def forward(self, grad, indices, input_shape, shape4):
        self.indices, self.shape4 = indices, shape4  # (N, C, Ho, Wo); the input as (N, C, H, W)
        self.output_shape = grad.shape
        return kernels.max_pool2d_backward(grad.reshape(indices.shape), indices,
                                           shape4).reshape(input_shape)

    def backward(self, g):
        return (MaxPoolGather.run(g, indices=self.indices, output_shape=self.output_shape,
                                  shape4=self.shape4),)


class MaxPoolGather(Function):
    """g (the input's shape) read at the arg-max positions: the adjoint of MaxPoolBackward,
    and its backward (the scatter) in turn."""

    def forward(self, g, indices, output_shape, shape4):
        self.indices, self.input_shape, self.shape4 = indices, g.shape, shape4
        N, C = indices.shape[:2]
        # explicit sizes: -1 cannot be inferred for an empty batch
        planes = g.reshape(N, C, self.shape4[2] * self.shape4[3])  # (N, C, H * W)
        where = indices.reshape(N, C, indices.shape[2] * indices.shape[3])
        size = planes.shape[-1]
        picked = np.take_along_axis(planes, np.minimum(where, size - 1), axis=-1)
        if where.size and where.max() >= size:  # windows without an input element read 0
            picked = np.where(where < size, picked, 0)
        return picked.reshape(output_shape)

    def backward(self, grad):
        return (MaxPoolBackward.run(grad, indices=self.indices, input_shape=self.input_shape,
                                    shape4=self.shape4),)


def _max_pool(op, dims, input, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    shape4 = _check_input(op, input, dims)
    kernel, stride, padding, dilation, _ = _geometry(op, shape4, kernel_size, stride, padding,
                                                     dilation, ceil_mode, dims)
    indices = [] if return_indices else None
    out = MaxPool2d.apply(input, shape4=shape4, dims=dims, kernel_size=kernel, stride=stride,
                          padding=padding, dilation=dilation, ceil_mode=bool(ceil_mode),
                          indices_out=indices)
    return (out, Tensor(indices[0].reshape(out.shape))) if return_indices else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """As torch's `F.max_pool2d` on (N, C, H, W) or (C, H, W): the maximum of each
    kernel_size window, windows `stride` apart (default: kernel_size), the input padded with
    -inf by `padding` (at most half the kernel) and sampled every `dilation` elements. With
    ceil_mode the output size rounds up, keeping only windows that start inside the input or
    its left padding. return_indices also gives each maximum's flat position h * W + w in its
    plane (int64). The gradient goes to the first maximum of each window."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation,
                     ceil_mode, return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """As torch's `F.max_pool1d` on (N, C, L) or (C, L): max_pool2d along the last axis
    (indices are positions along L)."""
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation,
                     ceil_mode, return_indices)


# --------------------------------------------------------------------------------------------
# average pooling

class AvgPool2d(Function):
    """Window means of x (..., H, W) viewed as (N, C, H, W). With divisor_override each window
    sum is divided by it instead: the kernel's mean times (its divisor / the override)."""

    def forward(self, x, shape4, dims, kernel_size, stride, padding, ceil_mode,
                count_include_pad, divisor_override=None):
        self.params = dict(shape4=shape4, dims=dims, kernel_size=kernel_size, stride=stride,
                           padding=padding, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad, divisor_override=divisor_override)
        self.input_shape = x.shape
        y = kernels.avg_pool2d(x.reshape(shape4), kernel_size, stride, padding, ceil_mode,
                               count_include_pad)  # (N, C, Ho, Wo)
        if divisor_override is not None:
            y = y * _override_factor(shape4, y.shape[-2:], self.params).astype(y.dtype)
        return y.reshape(_output_shape(x.shape, dims, y.shape))

    def backward(self, grad):
        return (AvgPoolBackward.run(grad, input_shape=self.input_shape, **self.params),)


def _override_factor(shape4, out_shape, params):
    """(Ho, Wo): the divisor the kernel used over divisor_override."""
    divisors = avg_pool2d_divisors(shape4[2:], tuple(out_shape), params["kernel_size"],
                                   params["stride"], params["padding"], True)
    return divisors / float(params["divisor_override"])


class AvgPoolBackward(Function):
    """grad spread evenly over each window (the adjoint of AvgPool2d, whose backward it is);
    its own backward is AvgPool2d."""

    def forward(self, grad, input_shape, shape4, dims, kernel_size, stride, padding, ceil_mode,
                count_include_pad, divisor_override=None):
        self.params = dict(shape4=shape4, dims=dims, kernel_size=kernel_size, stride=stride,
                           padding=padding, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad, divisor_override=divisor_override)
        grad4 = grad.reshape(shape4[:2] + ((1,) if dims == 1 else grad.shape[-2:-1])
                             + grad.shape[-1:])  # (N, C, Ho, Wo)
        if divisor_override is not None:
            grad4 = grad4 * _override_factor(shape4, grad4.shape[-2:],
                                             self.params).astype(grad.dtype)
        grad_x = kernels.avg_pool2d_backward(grad4, shape4, kernel_size, stride, padding,
                                             ceil_mode, count_include_pad)
        return grad_x.reshape(input_shape)

    def backward(self, g):
        return (AvgPool2d.run(g, **self.params),)


def _avg_pool(op, dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    shape4 = _check_input(op, input, dims)
    kernel, stride, padding, _, _ = _geometry(op, shape4, kernel_size, stride, padding, 1,
                                              ceil_mode, dims)
    if divisor_override is not None:
        divisor_override = _int(op, "divisor_override", divisor_override)
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must not be zero")
        if count_include_pad is False:
            # the override replaces the divisor whatever count_include_pad says
            count_include_pad = True
    return AvgPool2d.apply(input, shape4=shape4, dims=dims, kernel_size=kernel, stride=stride,
                           padding=padding, ceil_mode=bool(ceil_mode),
                           count_include_pad=bool(count_include_pad),
                           divisor_override=divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """As torch's `F.avg_pool2d` on (N, C, H, W) or (C, H, W): the mean of each window (see
    max_pool2d for kernel_size, stride, padding and ceil_mode). The divisor counts the zero
    padding when count_include_pad (but not what ceil_mode adds past it), else only the
    elements inside the input; divisor_override replaces it."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """As torch's `F.avg_pool1d` on (N, C, L) or (C, L): avg_pool2d along the last axis."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None)


# --------------------------------------------------------------------------------------------
# adaptive average pooling

def _averaging_matrix(size, out, dtype):
    """(out, size): row i averages input positions floor(i size / out) to
    ceil((i + 1) size / out) - 1, torch's adaptive windows."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool2d(Function):
    """y = A_h x A_w^T on the last two axes: each output the mean of its adaptive window."""

    def forward(self, x, rows, cols):
        self.rows, self.cols = rows, cols  # (Ho, H), (Wo, W)
        return np.matmul(np.matmul(rows, x), cols.T)

    def backward(self, grad):
        return (AdaptiveAvgPoolBackward.run(grad, rows=self.rows, cols=self.cols),)


class AdaptiveAvgPoolBackward(Function):
    """grad_x = A_h^T grad A_w, the adjoint of AdaptiveAvgPool2d; its backward is that op."""

    def forward(self, grad, rows, cols):
        self.rows, self.cols = rows, cols
        return np.matmul(np.matmul(rows.T, grad), cols)

    def backward(self, g):
        return (AdaptiveAvgPool2d.run(g, rows=self.rows, cols=self.cols),)


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """As torch's `F.adaptive_avg_pool2d` on (N, C, H, W) or (C, H, W): output_size (an int,
    or a pair whose None entries keep that input size) windows per axis, window i spanning
    floor(i H / out) to ceil((i + 1) H / out), so windows differ in size by at most one and
    may overlap. output_size 1 is the global average."""
    op = "adaptive_avg_pool2d"
    shape = tuple(input.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"{op}: expected a 3-D (unbatched) or 4-D (batched) input, got shape "
                         f"{shape}")
    if any(n == 0 for n in shape[-3:]):
        raise ValueError(f"{op}: expected non-zero sizes except for the batch, got shape {shape}")
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        sizes = tuple(shape[-2 + a] if s is None else _int(op, "output_size", s)
                      for a, s in enumerate(output_size))
    else:
        sizes = (_int(op, "output_size", operator.index(output_size)),) * 2
    if min(sizes) < 0:
        raise ValueError(f"{op}: output_size must be non-negative, got {sizes}")
    dtype = input.dtype if np.dtype(input.dtype).kind == "f" else np.float64
    rows = _averaging_matrix(shape[-2], sizes[0], dtype)
    cols = _averaging_matrix(shape[-1], sizes[1], dtype)
    return AdaptiveAvgPool2d.apply(input, rows=rows, cols=cols)
