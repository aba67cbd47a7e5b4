"""Convolutions, as torch.nn.functional: conv1d, conv2d, conv_transpose2d, unfold and fold.

What they compute (NCHW; see tensorlite/kernels/numpy/conv.py for the formulas). A convolution
slides a (kh, kw) window over the zero-padded input with a stride and a dilation (the spacing of
the taps) and, per group of channels, takes the dot product of each window with each filter:

    y[n, o, oh, ow] = bias[o] + sum over c in o's group, i, j of
                      weight[o, c, i, j] * x_padded[n, c, oh * sh + i * dh, ow * sw + j * dw]

`unfold` lays each window out as a column (im2col), `fold` adds columns back onto their windows
(col2im, unfold's adjoint), and conv1d is conv2d with H = 1.

Three ops, each the others' derivatives. A convolution y = conv(x, W) is linear in x and in W
separately, so its derivatives are convolutions again:

    Conv2d                 y     = conv(x, W)
    ConvTranspose2d        x'    = conv^T(y', W)       the adjoint in x: <conv(x, W), y'> = <x, x'>
    Conv2dBackwardWeight   W'    = conv_W^T(y', x)     the adjoint in W: <conv(x, W), y'> = <W, W'>

Conv2d's backward is (ConvTranspose2d(grad, W), Conv2dBackwardWeight(grad, x), grad summed for
the bias). ConvTranspose2d is bilinear in (y', W), and differentiating <x'', conv^T(y', W)> =
<conv(x'', W), y'> gives its backward: Conv2d(x'', W) for y' and Conv2dBackwardWeight(y', x'')
for W. Likewise Conv2dBackwardWeight's backward is Conv2d(x, W'') for y' and
ConvTranspose2d(y', W'') for x. Each backward is written with `.run` of these three ops, so a
create_graph backward records them and derivatives of any order follow; no second derivative
is written by hand. The public conv_transpose2d is ConvTranspose2d itself. Unfold and Fold are
linear and each other's adjoint, so each one's backward is the other.

Even kernels with padding="same" need one more row (column) of padding at the bottom (right)
than at the top (left), as torch pads. The op is then run with the larger padding on both
sides, which computes one extra leading output row, and that row is sliced off: the slice is
a recorded op like any other, so the gradient is exact.
"""

from __future__ import annotations

import numbers


from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.kernels.numpy.conv import conv_output_size
from tensorlite.ops.arguments import _check_float_dtypes
from tensorlite.tensor import Tensor

__all__ = ["conv1d", "conv2d", "conv_transpose2d", "unfold", "fold"]


def _spatial_crop(y, shape):
    """y cut to the spatial size of `shape` (N, C, H, W) where it is larger: the adjoint of a
    transposed convolution whose output_padding reaches past the last full window."""
    if tuple(y.shape[2:]) == tuple(shape[2:]):
        return y
    return y[:, :, :shape[2], :shape[3]]


class Conv2d(Function):
    """y (N, O, Ho, Wo) = conv(x (N, C, H, W), weight (O, C / groups, kh, kw)) + bias (O,)."""

    def forward(self, x, weight, bias=None, *, stride, padding, dilation, groups):
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.save_for_backward(x, weight)
        return kernels.conv2d(x, weight, bias, stride, padding, dilation, groups)

    def backward(self, grad):
        x, weight = self.saved
        needs = self.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            grad_x = ConvTranspose2d.run(grad, weight, output_shape=tuple(x.shape), **self.geometry)
        if needs[1]:
            grad_weight = Conv2dBackwardWeight.run(grad, x, weight_shape=tuple(weight.shape),
                                                   **self.geometry)
        if len(needs) > 2 and needs[2]:
            grad_bias = grad.sum(axis=(0, 2, 3))
        return grad_x, grad_weight, grad_bias


class ConvTranspose2d(Function):
    """x (output_shape) = conv^T(y (N, O, Ho, Wo), weight (O, C / groups, kh, kw)) + bias (C,):
    each input pixel y[n, o] adds weight[o] times itself onto its window of x. Conv2d's input
    gradient, and F.conv_transpose2d (whose weight is (C_in, C_out / groups, kh, kw): the same
    layout, read the other way)."""

    def forward(self, y, weight, bias=None, *, output_shape, stride, padding, dilation, groups):
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.save_for_backward(y, weight)
        x = kernels.conv2d_backward_input(y, weight, output_shape, stride, padding, dilation,
                                          groups)  # (N, C, H, W), a fresh array
        if bias is not None:
            x += bias.reshape(1, -1, 1, 1)
        return x

    def backward(self, grad):
        y, weight = self.saved
        needs = self.needs_input_grad
        grad_y = grad_weight = grad_bias = None
        if needs[0]:
            grad_y = _spatial_crop(Conv2d.run(grad, weight, **self.geometry), y.shape)
        if needs[1]:
            grad_weight = Conv2dBackwardWeight.run(y, grad, weight_shape=tuple(weight.shape),
                                                   **self.geometry)
        if len(needs) > 2 and needs[2]:
            grad_bias = grad.sum(axis=(0, 2, 3))
        return grad_y, grad_weight, grad_bias


class Conv2dBackwardWeight(Function):
    """weight' (weight_shape) = sum over n of the correlation of y' (N, O, Ho, Wo) with the
    windows of x (N, C, H, W): Conv2d's weight gradient, as an op of (y', x)."""

    def forward(self, grad, x, *, weight_shape, stride, padding, dilation, groups):
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.save_for_backward(grad, x)
        return kernels.conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation,
                                              groups)

    def backward(self, grad_of_weight):
        grad, x = self.saved
        needs = self.needs_input_grad
        d_grad = d_x = None
        if needs[0]:
            d_grad = _spatial_crop(Conv2d.run(x, grad_of_weight, **self.geometry), grad.shape)
        if needs[1]:
            d_x = ConvTranspose2d.run(grad, grad_of_weight, output_shape=tuple(x.shape),
                                      **self.geometry)
        return d_grad, d_x


class Unfold(Function):
    """(N, C, H, W) -> (N, C kh kw, L): each window as a column (im2col)."""

    def forward(self, x, *, kernel_size, dilation, padding, stride):
        self.geometry = dict(kernel_size=kernel_size, dilation=dilation, padding=padding,
                             stride=stride)
        self.input_hw = tuple(x.shape[2:])
        return kernels.unfold(x, kernel_size, dilation, padding, stride)

    def backward(self, grad):
        return (Fold.run(grad, output_size=self.input_hw, **self.geometry),)


class Fold(Function):
    """(N, C kh kw, L) -> (N, C, H, W): each column added onto its window (col2im)."""

    def forward(self, cols, *, output_size, kernel_size, dilation, padding, stride):
        self.geometry = dict(kernel_size=kernel_size, dilation=dilation, padding=padding,
                             stride=stride)
        return kernels.fold(cols, output_size, kernel_size, dilation, padding, stride)

    def backward(self, grad):
        return (Unfold.run(grad, **self.geometry),)


# --------------------------------------------------------------------------------------------
# Argument checks: one ValueError naming the op and the shapes, before any kernel runs.

def _ints(op, name, value, dims, minimum):
    """`value` (an int, or a tuple/list of `dims` ints) as a tuple of `dims` ints >= minimum."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    if len(values) != dims or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                      for v in values):
        raise ValueError(f"{op}: {name} must be an int or a tuple of {dims} ints, got {value!r}")
    if any(v < minimum for v in values):
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {what}, got {value!r}")
    return tuple(int(v) for v in values)


def _check_input_rank(op, input, dims):
    if input.ndim not in (dims + 1, dims + 2):
        layout = "(N, C, L)" if dims == 1 else "(N, C, H, W)"
        raise ValueError(f"{op}: expected a {dims + 2}-D input {layout} or an unbatched "
                         f"{dims + 1}-D one, got shape {tuple(input.shape)}")


def _check_bias(op, bias, channels):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias of shape {tuple(bias.shape)} does not match the "
                         f"{channels} output channels (expected ({channels},))")


def _check_weight_size(op, input, weight, axes, channels_name):
    """As torch: the kernel's sizes and the output channels (weight's `axes`, the channel axis
    first) must be positive; an empty weight would otherwise reach a reshape or give an
    output of the wrong size."""
    w_shape = tuple(weight.shape)
    if any(w_shape[a] == 0 for a in axes):
        raise ValueError(f"{op}: weight of shape {w_shape} has a zero-sized dimension (kernel "
                         f"size should be greater than zero, and {channels_name} at least 1), "
                         f"input of shape {tuple(input.shape)}")


def _conv_arguments(op, input, weight, bias, stride, padding, dilation, groups, dims):
    """Check a convolution's arguments; returns (stride, padding, extra, dilation), tuples of
    `dims` ints, where padding is applied on both sides and `extra` (0 or 1 per axis) is the
    number of leading output rows to drop ("same" with an even effective kernel)."""
    _check_input_rank(op, input, dims)
    if weight.ndim != dims + 2:
        layout = "(out_channels, in_channels / groups, " + ("k)" if dims == 1 else "kh, kw)")
        raise ValueError(f"{op}: weight must be {dims + 2}-D {layout}, got shape "
                         f"{tuple(weight.shape)}")
    _check_weight_size(op, input, weight, (0,) + tuple(range(2, dims + 2)), "out_channels")
    _check_float_dtypes(op, input, (("weight", weight), ("bias", bias)))
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    stride = _ints(op, "stride", stride, dims, 1)
    dilation = _ints(op, "dilation", dilation, dims, 1)
    in_shape, w_shape = tuple(input.shape), tuple(weight.shape)
    channels = in_shape[-dims - 1]
    out_channels = w_shape[0]
    if channels % groups or out_channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide both the input channels "
                         f"({channels}, input shape {in_shape}) and the output channels "
                         f"({out_channels}, weight shape {w_shape})")
    if w_shape[1] * groups != channels:
        raise ValueError(f"{op}: input of shape {in_shape} has {channels} channels, but weight "
                         f"of shape {w_shape} with groups={groups} expects "
                         f"{w_shape[1] * groups} (weight.shape[1] * groups)")
    _check_bias(op, bias, out_channels)
    kernel = w_shape[2:]
    reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel))  # effective kernel - 1
    extra = (0,) * dims
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * dims
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' needs stride 1 (as torch), got "
                                 f"stride={stride}")
            # torch pads reach // 2 before and the rest after: pad the larger amount on both
            # sides and drop the extra leading output.
            extra = tuple(r % 2 for r in reach)
            padding = tuple(r - r // 2 for r in reach)
        else:
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same', got "
                             f"{padding!r}")
    else:
        padding = _ints(op, "padding", padding, dims, 0)
    spatial = in_shape[-dims:]
    if any(s + 2 * p < r + 1 for s, p, r in zip(spatial, padding, reach)):
        raise ValueError(f"{op}: kernel of size {kernel} with dilation {dilation} (spanning "
                         f"{tuple(r + 1 for r in reach)}) is larger than the input of shape "
                         f"{in_shape} padded by {padding}")
    return stride, padding, extra, dilation


def _as_tensor(x):
    return x if isinstance(x, Tensor) or x is None else Tensor(x)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """As torch's F.conv2d: input (N, C, H, W) or unbatched (C, H, W), weight
    (O, C / groups, kh, kw), bias (O,) or None; padding an int, a pair, 'valid' or 'same'
    (stride 1; an even effective kernel gets its extra row and column at the bottom and
    right). Returns (N, O, Ho, Wo), Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1."""
    input, weight, bias = _as_tensor(input), _as_tensor(weight), _as_tensor(bias)
    stride, padding, extra, dilation = _conv_arguments(
        "conv2d", input, weight, bias, stride, padding, dilation, groups, 2)
    unbatched = input.ndim == 3
    x = input.reshape((1,) + tuple(input.shape)) if unbatched else input
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    y = (Conv2d.apply(x, weight, **geometry) if bias is None
         else Conv2d.apply(x, weight, bias, **geometry))  # (N, O, Ho, Wo)
    if any(extra):
        y = y[:, :, extra[0]:, extra[1]:]
    return y.reshape(tuple(y.shape[1:])) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """As torch's F.conv1d: input (N, C, L) or unbatched (C, L), weight (O, C / groups, k),
    bias (O,) or None; padding an int, a 1-tuple, 'valid' or 'same'. Computed as conv2d with
    H = 1. Returns (N, O, Lo), Lo = (L + 2 p - d (k - 1) - 1) // s + 1."""
    input, weight, bias = _as_tensor(input), _as_tensor(weight), _as_tensor(bias)
    (s,), (p,), (e,), (d,) = _conv_arguments("conv1d", input, weight, bias, stride, padding,
                                             dilation, groups, 1)
    unbatched = input.ndim == 2
    x = input.reshape((1,) + tuple(input.shape)) if unbatched else input
    n, c, length = x.shape
    x = x.reshape((n, c, 1, length))  # (N, C, 1, L)
    w = weight.reshape((weight.shape[0], weight.shape[1], 1, weight.shape[2]))
    geometry = dict(stride=(1, s), padding=(0, p), dilation=(1, d), groups=int(groups))
    y = (Conv2d.apply(x, w, **geometry) if bias is None
         else Conv2d.apply(x, w, bias, **geometry))  # (N, O, 1, Lo)
    if e:
        y = y[:, :, :, e:]
    y = y.reshape((n, y.shape[1], y.shape[3]))
    return y.reshape(tuple(y.shape[1:])) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """As torch's F.conv_transpose2d (note its argument order): the adjoint of conv2d in its
    input. input (N, C_in, H, W) or unbatched, weight (C_in, C_out / groups, kh, kw), bias
    (C_out,) or None. Returns (N, C_out, Ho, Wo) with
    Ho = (H - 1) sh - 2 ph + dh (kh - 1) + output_padding_h + 1, where output_padding (less
    than the stride or the dilation) adds rows at the bottom that no window covers fully."""
    op = "conv_transpose2d"
    input, weight, bias = _as_tensor(input), _as_tensor(weight), _as_tensor(bias)
    _check_input_rank(op, input, 2)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (in_channels, out_channels / groups, kh, "
                         f"kw), got shape {tuple(weight.shape)}")
    _check_weight_size(op, input, weight, (1, 2, 3), "out_channels / groups")
    _check_float_dtypes(op, input, (("weight", weight), ("bias", bias)))
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    stride = _ints(op, "stride", stride, 2, 1)
    dilation = _ints(op, "dilation", dilation, 2, 1)
    padding = _ints(op, "padding", padding, 2, 0)
    output_padding = _ints(op, "output_padding", output_padding, 2, 0)
    in_shape, w_shape = tuple(input.shape), tuple(weight.shape)
    channels = in_shape[-3]
    if channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels ({channels}, "
                         f"input shape {in_shape})")
    if w_shape[0] != channels:
        raise ValueError(f"{op}: input of shape {in_shape} has {channels} channels, but weight "
                         f"of shape {w_shape} expects {w_shape[0]} (weight.shape[0])")
    for a in range(2):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ValueError(f"{op}: output_padding {output_padding} must be smaller than the "
                             f"stride {stride} or the dilation {dilation}")
    out_channels = w_shape[1] * groups
    _check_bias(op, bias, out_channels)
    out_hw = tuple((in_shape[-2 + a] - 1) * stride[a] - 2 * padding[a]
                   + dilation[a] * (w_shape[2 + a] - 1) + output_padding[a] + 1 for a in range(2))
    if min(out_hw) < 1:
        raise ValueError(f"{op}: input of shape {in_shape}, weight of shape {w_shape}, stride "
                         f"{stride}, padding {padding}, dilation {dilation} and output_padding "
                         f"{output_padding} give an empty output of size {out_hw}")
    unbatched = input.ndim == 3
    y = input.reshape((1,) + in_shape) if unbatched else input
    geometry = dict(output_shape=(y.shape[0], out_channels) + out_hw, stride=stride,
                    padding=padding, dilation=dilation, groups=int(groups))
    x = (ConvTranspose2d.apply(y, weight, **geometry) if bias is None
         else ConvTranspose2d.apply(y, weight, bias, **geometry))
    return x.reshape(tuple(x.shape[1:])) if unbatched else x


def _window_arguments(op, kernel_size, dilation, padding, stride):
    return (_ints(op, "kernel_size", kernel_size, 2, 1), _ints(op, "dilation", dilation, 2, 1),
            _ints(op, "padding", padding, 2, 0), _ints(op, "stride", stride, 2, 1))


def _blocks(op, size, kernel_size, dilation, padding, stride, shape):
    """Window positions per axis over an image of `size`; an error when there are none."""
    blocks = tuple(conv_output_size(size[a], kernel_size[a], stride[a], padding[a], dilation[a])
                   for a in range(2))
    if min(blocks) < 1:
        raise ValueError(f"{op}: kernel_size {kernel_size} with dilation {dilation} does not fit "
                         f"in the image of size {tuple(size)} padded by {padding} (input shape "
                         f"{shape})")
    return blocks


def unfold(input, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """As torch's F.unfold (im2col): input (N, C, H, W) or unbatched (C, H, W) to
    (N, C kh kw, L), column l holding the window at the l-th position (row-major), L the
    number of positions; row c kh kw + i kw + j holds tap (i, j) of channel c."""
    op = "unfold"
    input = _as_tensor(input)
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W) or an unbatched 3-D one, got "
                         f"shape {tuple(input.shape)}")
    _check_float_dtypes(op, input)
    kernel_size, dilation, padding, stride = _window_arguments(op, kernel_size, dilation, padding,
                                                               stride)
    _blocks(op, tuple(input.shape[-2:]), kernel_size, dilation, padding, stride,
            tuple(input.shape))
    unbatched = input.ndim == 3
    x = input.reshape((1,) + tuple(input.shape)) if unbatched else input
    cols = Unfold.apply(x, kernel_size=kernel_size, dilation=dilation, padding=padding,
                        stride=stride)
    return cols.reshape(tuple(cols.shape[1:])) if unbatched else cols


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """As torch's F.fold (col2im), unfold's adjoint: input (N, C kh kw, L) or unbatched
    (C kh kw, L) to (N, C, H, W) with (H, W) = output_size, each column added onto its
    window, so pixels shared by several windows receive the sum."""
    op = "fold"
    input = _as_tensor(input)
    if input.ndim not in (2, 3):
        raise ValueError(f"{op}: expected a 3-D input (N, C * kh * kw, L) or an unbatched 2-D "
                         f"one, got shape {tuple(input.shape)}")
    _check_float_dtypes(op, input)
    output_size = _ints(op, "output_size", output_size, 2, 1)
    kernel_size, dilation, padding, stride = _window_arguments(op, kernel_size, dilation, padding,
                                                               stride)
    shape = tuple(input.shape)
    taps = kernel_size[0] * kernel_size[1]
    if shape[-2] % taps:
        raise ValueError(f"{op}: input of shape {shape}: dimension {shape[-2]} is not divisible by "
                         f"the kernel's {taps} taps (kernel_size {kernel_size})")
    blocks = _blocks(op, output_size, kernel_size, dilation, padding, stride, shape)
    if shape[-1] != blocks[0] * blocks[1]:
        raise ValueError(f"{op}: input of shape {shape} has {shape[-1]} columns, but "
                         f"output_size {output_size} with kernel_size {kernel_size}, dilation "
                         f"{dilation}, padding {padding} and stride {stride} has "
                         f"{blocks[0]} x {blocks[1]} = {blocks[0] * blocks[1]} windows")
    unbatched = input.ndim == 2
    cols = input.reshape((1,) + shape) if unbatched else input
    x = Fold.apply(cols, output_size=output_size, kernel_size=kernel_size, dilation=dilation,
                   padding=padding, stride=stride)
    return x.reshape(tuple(x.shape[1:])) if unbatched else x
