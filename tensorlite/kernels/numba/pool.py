"""Pooling kernels, Numba (NCHW; a 1-D pool arrives here with H = 1).

The Numba twin of ``tensorlite/kernels/numpy/pool.py`` (same functions, same results; max
pooling bit for bit). Geometry arguments are checked pairs of ints (h, w).

Each kernel is one ``prange`` over the N * C planes: a plane's windows read and its gradient
writes only that plane, so threads never write the same place, and the order of every sum is
fixed whatever the thread count. Within a plane each window is visited once, in row-major
order, with its rows and columns clipped to the input first (the range of kernel offsets that
land inside is worked out per output row and per output column, outside the inner loops), so
the loops over a window carry no bounds tests. Elements are read as x[p, r, c] rather than
through row views made inside the loops, each of which would take a reference count on the
shared array. The backward kernels zero their plane of the input gradient themselves, in the
same parallel loop, instead of a separate np.zeros.

The wrappers make inputs C-contiguous float32 or float64 and flatten the planes, so each
kernel has two compiled specialisations; other dtypes and empty inputs go to the reference.
"""

import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ..numpy.pool import pool_output_size
from ._common import _OPTS, _as, _is_float


def _first_inside(start, step):
    """The first offset k >= 0 with start + k * step >= 0."""
    return 0 if start >= 0 else (-start + step - 1) // step


def _offset_ranges(size, out, kernel, stride, padding, dilation):
    """For each output position along one axis: its first input position and the range
    [lo, hi) of kernel offsets whose input position lies inside [0, size)."""
    starts = np.arange(out, dtype=np.int64) * stride - padding
    lo = np.array([_first_inside(int(s), dilation) for s in starts], dtype=np.int64)
    hi = np.minimum(kernel, (size - starts + dilation - 1) // dilation).astype(np.int64)
    return starts, lo, hi


# ----------------------------------------------------------------------------
# max pooling
# reference: reference.max_pool2d, reference.max_pool2d_backward

@njit(parallel=True, **_OPTS)
def _max_pool2d_forward(x, row_start, row_lo, row_hi, col_start, col_lo, col_hi, dil_h, dil_w,
                        out, indices):
    n_planes, H, W = x.shape  # (N * C, H, W)
    Ho, Wo = out.shape[1], out.shape[2]
    minus_inf = _as(x, -np.inf)
    for p in prange(n_planes):
        for oh in range(Ho):
            h0 = row_start[oh]
            i_lo = row_lo[oh]
            i_hi = row_hi[oh]
            for ow in range(Wo):
                w0 = col_start[ow]
                j_lo = col_lo[ow]
                j_hi = col_hi[ow]
                best = minus_inf
                best_at = (h0 + i_lo * dil_h) * W + w0 + j_lo * dil_w
                for i in range(i_lo, i_hi):
                    r = h0 + i * dil_h
                    for j in range(j_lo, j_hi):
                        c = w0 + j * dil_w
                        v = x[p, r, c]
                        # as torch: NaN wins. Selects, not a branch: on random data a branch
                        # is mispredicted half the time, which made this loop 20x slower.
                        take = (v > best) | (v != v)
                        best = v if take else best
                        best_at = r * W + c if take else best_at
                out[p, oh, ow] = best
                indices[p, oh, ow] = best_at


@njit(parallel=True, **_OPTS)
def _max_pool2x2_forward(x, out, indices):
    """The 2x2, stride 2 max pool of LeNet and VGG, every window inside the input: the same
    comparisons in the same order as _max_pool2d_forward, but with the window's four offsets
    known at compile time LLVM unrolls them and interleaves the windows of an output row,
    which the general loop (trip counts known only at run time) does not allow: about 4x
    faster on one thread at LeNet's first pool, (64, 6, 28, 28), 0.2 ms against 0.86 ms."""
    n_planes, H, W = x.shape
    Ho, Wo = out.shape[1], out.shape[2]
    minus_inf = _as(x, -np.inf)
    for p in prange(n_planes):
        for oh in range(Ho):
            for ow in range(Wo):
                best = minus_inf
                best_at = 2 * oh * W + 2 * ow
                for i in range(2):
                    r = 2 * oh + i
                    for j in range(2):
                        c = 2 * ow + j
                        v = x[p, r, c]
                        take = (v > best) | (v != v)
                        best = v if take else best
                        best_at = r * W + c if take else best_at
                out[p, oh, ow] = best
                indices[p, oh, ow] = best_at


@njit(parallel=True, **_OPTS)
def _max_pool2d_backward(grad, indices, grad_x):
    n_planes, n_out = grad.shape  # (N * C, Ho * Wo)
    size = grad_x.shape[1]
    zero = _as(grad, 0.0)
    for p in prange(n_planes):
        for k in range(size):
            grad_x[p, k] = zero
        for o in range(n_out):
            at = indices[p, o]
            if at < size:  # past the plane: a window without an input element
                grad_x[p, at] += grad[p, o]


def _planes(x, dtype=None):
    """x (N, C, H, W) as C-contiguous (N * C, H, W)."""
    x = np.ascontiguousarray(x, dtype=dtype)
    return x.reshape((-1,) + x.shape[2:])


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, indices) -- see reference.max_pool2d."""
    if not _is_float(x) or x.ndim != 4 or x.size == 0:
        return reference.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    N, C, H, W = x.shape
    Ho, Wo = (pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a],
                               dilation[a], ceil_mode) for a in (0, 1))
    out = np.empty((N * C, Ho, Wo), x.dtype)
    indices = np.empty((N * C, Ho, Wo), np.int64)
    if (tuple(kernel_size) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
            and tuple(dilation) == (1, 1) and 2 * Ho <= H and 2 * Wo <= W):
        _max_pool2x2_forward(_planes(x), out, indices)
    else:
        rows = _offset_ranges(H, Ho, kernel_size[0], stride[0], padding[0], dilation[0])
        cols = _offset_ranges(W, Wo, kernel_size[1], stride[1], padding[1], dilation[1])
        _max_pool2d_forward(_planes(x), *rows, *cols, dilation[0], dilation[1], out, indices)
    return out.reshape(N, C, Ho, Wo), indices.reshape(N, C, Ho, Wo)


def max_pool2d_backward(grad, indices, input_shape):
    """d loss / d x: each grad element added at its window's arg-max (indices as returned by
    max_pool2d: this kernel trusts them to be non-negative)."""
    if not _is_float(grad) or grad.size == 0:
        return reference.max_pool2d_backward(grad, indices, input_shape)
    N, C, H, W = input_shape
    grad_x = np.empty((N * C, H * W), grad.dtype)
    _max_pool2d_backward(np.ascontiguousarray(grad).reshape(N * C, -1),
                         np.ascontiguousarray(indices, dtype=np.int64).reshape(N * C, -1), grad_x)
    return grad_x.reshape(input_shape)


# ----------------------------------------------------------------------------
# average pooling
# reference: reference.avg_pool2d, reference.avg_pool2d_backward
#
# A window's divisor is the product of its row count and column count (torch's rule, see
# reference.avg_pool2d_divisors), computed per output row and column by the wrapper.

@njit(parallel=True, **_OPTS)
def _avg_pool2d_forward(x, row_start, row_lo, row_hi, row_count, col_start, col_lo, col_hi,
                        col_count, out):
    n_planes = x.shape[0]
    Ho, Wo = out.shape[1], out.shape[2]
    zero = _as(x, 0.0)
    for p in prange(n_planes):
        for oh in range(Ho):
            h0 = row_start[oh]
            for ow in range(Wo):
                w0 = col_start[ow]
                total = zero
                for r in range(h0 + row_lo[oh], h0 + row_hi[oh]):
                    for c in range(w0 + col_lo[ow], w0 + col_hi[ow]):
                        total += x[p, r, c]
                divisor = row_count[oh] * col_count[ow]
                out[p, oh, ow] = total / _as(x, divisor) if divisor > 0 else zero


@njit(parallel=True, **_OPTS)
def _avg_pool2d_backward(grad, row_start, row_lo, row_hi, row_count, col_start, col_lo, col_hi,
                         col_count, grad_x):
    n_planes, H, W = grad_x.shape
    Ho, Wo = grad.shape[1], grad.shape[2]
    zero = _as(grad, 0.0)
    for p in prange(n_planes):
        for r in range(H):
            for c in range(W):
                grad_x[p, r, c] = zero
        for oh in range(Ho):
            h0 = row_start[oh]
            for ow in range(Wo):
                w0 = col_start[ow]
                divisor = row_count[oh] * col_count[ow]
                if divisor == 0:
                    continue
                share = grad[p, oh, ow] / _as(grad, divisor)
                for r in range(h0 + row_lo[oh], h0 + row_hi[oh]):
                    for c in range(w0 + col_lo[ow], w0 + col_hi[ow]):
                        grad_x[p, r, c] += share


def _avg_geometry(input_hw, out_shape, kernel_size, stride, padding, count_include_pad):
    """Per axis: (window starts, first and past-last offsets inside the input, divisor
    factor), the last as reference.avg_pool2d_divisors."""
    geometry = []
    for a in (0, 1):
        starts, lo, hi = _offset_ranges(input_hw[a], out_shape[a], kernel_size[a], stride[a],
                                        padding[a], 1)
        if count_include_pad:
            count = np.minimum(starts + kernel_size[a], input_hw[a] + padding[a]) - starts
        else:
            count = hi - lo
        geometry += [starts, lo, hi, count.astype(np.int64)]
    return geometry


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Window means -- see reference.avg_pool2d."""
    if not _is_float(x) or x.ndim != 4 or x.size == 0:
        return reference.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)
    N, C, H, W = x.shape
    out_shape = tuple(pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a], 1,
                                       ceil_mode) for a in (0, 1))
    out = np.empty((N * C,) + out_shape, x.dtype)
    _avg_pool2d_forward(_planes(x), *_avg_geometry((H, W), out_shape, kernel_size, stride,
                                                   padding, count_include_pad), out)
    return out.reshape((N, C) + out_shape)


def avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad):
    """d loss / d x of avg_pool2d -- see reference.avg_pool2d_backward."""
    if not _is_float(grad) or grad.size == 0:
        return reference.avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding,
                                             ceil_mode, count_include_pad)
    N, C, H, W = input_shape
    grad_x = np.empty((N * C, H, W), grad.dtype)
    _avg_pool2d_backward(_planes(grad), *_avg_geometry((H, W), grad.shape[2:], kernel_size,
                                                       stride, padding, count_include_pad),
                         grad_x)
    return grad_x.reshape(input_shape)
