"""Padding, `F.pad`, as torch's: `pad` lists (before, after) pairs starting from the LAST
dimension, (left, right, top, bottom, front, back); a negative amount crops instead.

Modes:

    constant   the border is `value`: one op, ConstantPad, whose backward is ConstantPad again
               with the amounts negated and value 0 (padding's adjoint is cropping, and
               cropping's is padding with zeros), so every order of derivative is that op
    reflect    x[1], x[0] | x[0] ... x[W-1] | x[W-2], x[W-3]  (the edge is not repeated)
    replicate  x[0], x[0] | x[0] ... x[W-1] | x[W-1], x[W-1]
    circular   x[W-2], x[W-1] | x[0] ... x[W-1] | x[0], x[1]   (negative amounts crop first,
               and the rest wraps around what is left, as torch)

The other three modes read, along each padded dimension, the input at an index map computed
with torch's formulas (which also hold for negative amounts), as `x[..., index]` with the
existing GetItem op: its backward adds the gradient back at those indices (np.add.at, since
border elements are read twice) and is differentiable in turn.
"""

from __future__ import annotations

import numpy as np

from tensorlite.autograd.function import Function
from tensorlite.ops.index import GetItem
from tensorlite.tensor import Tensor

__all__ = ["pad"]

_MODES = ("constant", "reflect", "replicate", "circular")


class ConstantPad(Function):
    """x with `widths` ((before, after) per dimension, first to last; negative crops) of
    `value` around it."""

    def forward(self, x, widths, value=0):
        self.widths = widths
        out_shape = tuple(n + before + after for n, (before, after) in zip(x.shape, widths))
        out = np.full(out_shape, value, dtype=x.dtype)
        # the part of x that survives cropping, and where it lands in out
        source = tuple(slice(max(-before, 0), n - max(-after, 0))
                       for n, (before, after) in zip(x.shape, widths))
        target = tuple(slice(max(before, 0), m - max(after, 0))
                       for m, (before, after) in zip(out_shape, widths))
        out[target] = x[source]
        return out

    def backward(self, grad):
        negated = tuple((-before, -after) for before, after in self.widths)
        return (ConstantPad.run(grad, widths=negated, value=0),)


def _index_map(mode, size, before, after):
    """For each output position along one dimension, the input position torch's kernels read."""
    k = np.arange(size + before + after) - before  # position relative to the input's start
    if mode == "reflect":
        return np.where(k < 0, -k, np.where(k >= size, 2 * (size - 1) - k, k))
    if mode == "replicate":
        return np.clip(k, 0, size - 1)
    if len(k) == 0:  # cropped to nothing: no wrap-around to compute
        return k
    # circular, as torch: crop first, then wrap around what is left
    start = max(-before, 0)
    kept = size - start - max(-after, 0)
    return start + (np.arange(size + before + after) - max(before, 0)) % kept


def _widths(shape, pad):
    """((before, after) per dimension, first to last) from torch's last-dimension-first list."""
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    ndim = len(shape)
    return tuple([(0, 0)] * (ndim - len(pairs)) + pairs[::-1])


def pad(input, pad, mode="constant", value=None) -> Tensor:
    """As torch's `F.pad`: see the module docstring for `pad` and the modes. `value` (default
    0) fills the border in constant mode; the other modes take none. Reflect, replicate and
    circular pad the last 1, 2 or 3 dimensions of an input with one or two more (a batch and
    a channel dimension, or only a channel one), as torch."""
    shape = tuple(input.shape)
    ndim = len(shape)
    if not isinstance(pad, (tuple, list)) or not all(
            isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad):
        raise TypeError(f"pad: pad must be a tuple of ints, got {pad!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pad)}")
    if len(pad) // 2 > ndim:
        raise ValueError(f"pad: padding length should be at most twice the input's number of "
                         f"dimensions, but got padding length {len(pad)} for an input of shape "
                         f"{shape}")
    if mode not in _MODES:
        raise ValueError(f"pad: unknown padding mode {mode!r}; choose one of {_MODES}")
    widths = _widths(shape, pad)
    out_shape = tuple(n + before + after for n, (before, after) in zip(shape, widths))
    if min(out_shape, default=0) < 0:
        raise ValueError(f"pad: padding {pad} makes the output shape {out_shape} of input "
                         f"shape {shape} negative")
    if mode == "constant":
        return ConstantPad.apply(input, widths=widths, value=0 if value is None else value)
    if value is not None and value != 0:
        raise ValueError(f"pad: padding mode {mode!r} doesn't take a value argument")
    padded_dims = len(pad) // 2
    if ndim not in (padded_dims + 1, padded_dims + 2):
        raise NotImplementedError(
            f"pad: padding size {len(pad)} is not supported for a {ndim}-D input in mode "
            f"{mode!r}: as torch, a {padded_dims + 1}-D or {padded_dims + 2}-D input is needed "
            f"(the padded dimensions, a channel dimension, and optionally a batch one)")
    padded_axes = range(ndim - padded_dims, ndim)
    if mode != "circular":
        # torch's reflect and replicate kernels: every dimension but the batch one non-empty,
        # and an output that is not empty along all the padded dimensions at once
        if 0 in shape[ndim - padded_dims - 1:]:
            raise ValueError(f"pad: mode {mode!r} expects an input with possibly 0 batch size "
                             f"and other non-zero dimensions, got input shape {shape}")
        if all(out_shape[axis] < 1 for axis in padded_axes):
            raise ValueError(f"pad: input of shape {shape} is too small for padding {pad} in "
                             f"mode {mode!r}: calculated output shape {out_shape}")
    for axis in padded_axes:
        before, after = widths[axis]
        size = shape[axis]
        if mode == "reflect" and (before >= size or after >= size):
            raise ValueError(f"pad: padding size should be less than the corresponding input "
                             f"dimension in mode 'reflect', but got padding {(before, after)} at "
                             f"dimension {axis} of input shape {shape}")
        if mode != "circular" or out_shape[axis] == 0:
            continue  # a circular padding that crops to nothing is empty there, as torch's
        if size == 0:
            raise ValueError(f"pad: mode 'circular' needs non-empty padded dimensions, got input "
                             f"shape {shape}")
        kept = size - max(-before, 0) - max(-after, 0)
        if kept <= 0:
            raise ValueError(f"pad: padding {(before, after)} at dimension {axis} of input shape "
                             f"{shape} crops it to nothing and then pads it in mode 'circular': "
                             f"there is nothing left to wrap around")
        if before > kept or after > kept:
            raise ValueError(f"pad: padding {(before, after)} at dimension {axis} of input "
                             f"shape {shape} would wrap around more than once in mode "
                             f"'circular'")
    if not any(widths[axis] != (0, 0) for axis in range(ndim - padded_dims, ndim)):
        return ConstantPad.apply(input, widths=widths, value=0)  # a copy, as torch's
    out = input
    for axis in range(ndim - padded_dims, ndim):
        before, after = widths[axis]
        if before == after == 0:
            continue
        index = _index_map(mode, shape[axis], before, after)
        out = GetItem.apply(out, index=(slice(None),) * axis + (index,))
    return out
