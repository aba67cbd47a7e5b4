"""Convolution kernels, Numba: 2-D convolution (NCHW) by im2col and single-threaded BLAS.

Same contract as numpy/conv.py (the ops in tensorlite/ops/conv.py call these through
tensorlite.kernels; a 1-D convolution arrives here with H = 1). All geometry arguments are
already checked and are pairs of ints (h, w); padding is symmetric zero padding. See
``tensorlite.kernels.numba`` for the techniques and the reproducibility rules.

The batch is cut into one contiguous chunk of images per thread. A chunk's thread lays out one
image's windows as columns in its own scratch buffer (im2col, sized for one image, so that it
stays in cache) and multiplies them with the weight by one BLAS call per group, BLAS running on
that thread, from the prange loop, as matmul.py does. The input gradient is the same in reverse
(one GEMM into the scratch columns, then col2im adds them onto the image); the weight gradient
accumulates a chunk's images into the chunk's own partial (GEMM with beta = 1), and the
partials are added in chunk order. A 1x1 convolution with stride 1 and no padding skips
im2col: the image already is its column matrix.

Short rows. A row of a 14x14 image is 10 to 14 elements: copying windows row by row spends
more time starting loops than moving data (im2col took three times as long as the GEMMs on
LeNet's second layer). With stride 1 the kernels therefore use a "wide" layout (below) where
each window row is one long contiguous run. Inner loops also index slices from 0: an index that
might be negative, such as `q + offset`, costs a wraparound test per element and stopped LLVM
from vectorising (a 6x slower loop).

Reproducibility: every output element is computed by one thread in a fixed order, except the
weight gradient, whose per-chunk partials depend on the thread count (the chunks are the
threads' shares); the same inputs and thread count give the same bytes.
"""

import numba
import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ..numpy.conv import conv_output_size
from ._common import _OPTS, _is_float
from ._gemm import _blas_constants, _xxgemm

_NO_TRANS, _TRANS = np.int8(ord("n")), np.int8(ord("t"))


# ----------------------------------------------------------------------------
# Shared pieces: the valid range of a tap, im2col and col2im of one image, a row-major GEMM

@njit(**_OPTS)
def _valid(out, size, stride, padding, tap, dilation):
    """The output positions [lo, hi) along one axis whose tap lands inside the image:
    0 <= o * stride - padding + tap * dilation < size."""
    first = padding - tap * dilation  # o * stride must reach this
    lo = 0 if first <= 0 else (first + stride - 1) // stride
    last = size - 1 + padding - tap * dilation  # and must not pass this
    hi = 0 if last < 0 else min(out, last // stride + 1)
    return lo, max(lo, hi)


@njit(**_OPTS)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """cols (C kh kw, ho wo) = the windows of one image x (C, H, W), zero outside it.
    (Inner loops index slices from 0: an index that might be negative, such as
    `ow + shift`, costs a wraparound test per element and stops vectorisation.)"""
    zero = x.dtype.type(0)
    for c in range(x.shape[0]):
        for i in range(kh):
            row_lo, row_hi = _valid(ho, x.shape[1], sh, ph, i, dh)
            for j in range(kw):
                col_lo, col_hi = _valid(wo, x.shape[2], sw, pw, j, dw)
                row = cols[(c * kh + i) * kw + j]
                first = col_lo * sw + j * dw - pw  # the input column of output column col_lo
                for oh in range(ho):
                    segment = row[oh * wo:(oh + 1) * wo]
                    if oh < row_lo or oh >= row_hi:
                        for q in range(wo):
                            segment[q] = zero
                        continue
                    for q in range(col_lo):
                        segment[q] = zero
                    for q in range(col_hi, wo):
                        segment[q] = zero
                    source = x[c, oh * sh - ph + i * dh, first:]
                    target = segment[col_lo:col_hi]
                    for q in range(col_hi - col_lo):
                        target[q] = source[q * sw]


@njit(**_OPTS)
def _col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """x (C, H, W) = the columns of cols (C kh kw, ho wo) added onto their windows."""
    x[:] = x.dtype.type(0)
    for c in range(x.shape[0]):
        for i in range(kh):
            row_lo, row_hi = _valid(ho, x.shape[1], sh, ph, i, dh)
            for j in range(kw):
                col_lo, col_hi = _valid(wo, x.shape[2], sw, pw, j, dw)
                row = cols[(c * kh + i) * kw + j]
                first = col_lo * sw + j * dw - pw
                for oh in range(row_lo, row_hi):
                    source = row[oh * wo + col_lo:oh * wo + col_hi]
                    target = x[c, oh * sh - ph + i * dh, first:]
                    for q in range(col_hi - col_lo):
                        target[q * sw] += source[q]


@njit(**_OPTS)
def _address(a):
    """The address of a's first element, as a signed integer (so offsets add as integers)."""
    return np.int64(a.ctypes.data)


@njit(**_OPTS)
def _gemm(kind, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m, n) = alpha op(A) @ op(B) + beta C on addresses, BLAS on this thread;
    lda/ldb are the row lengths of A and B as stored. (Column-major C^T = B^T A^T.)"""
    _xxgemm(kind, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc)


def _chunks(n_items):
    """One contiguous chunk of batch items per thread (fewer if the batch is smaller)."""
    return max(1, min(numba.get_num_threads(), n_items))


# ----------------------------------------------------------------------------
# conv2d, conv2d_backward_input, conv2d_backward_weight by im2col + GEMM
# reference: reference.conv2d, reference.conv2d_backward_input, reference.conv2d_backward_weight
#
# The wide layout (stride 1). With x zero-padded to (Hp, Wp), output pixel (oh, ow) reads tap
# (i, j) at flat index q + i dh Wp + j dw of the padded plane, q = oh Wp + ow. So if the
# columns are indexed by q, in rows of Wp of which the first Wo are outputs, row (c, i, j) of
# the column matrix is the padded plane c read from offset i dh Wp + j dw on, for
# M = (Ho - 1) Wp + Wo elements: im2col is one long copy per row instead of one short copy per
# output row, and col2im one long add. The GEMMs do (Wp - Wo) / Wp more work, on columns that
# are dropped (forward), are zero (input gradient: grad is laid out wide with zeros there) or
# are zeroed (weight gradient, so that an infinity there cannot make a NaN).

@njit(**_OPTS)
def _im2col_wide(xp, cols, kh, kw, dh, dw):
    """cols (C kh kw, M), row (c, i, j) = padded plane c of xp (C, Hp, Wp) flattened, from
    offset i dh Wp + j dw on (stride 1)."""
    channels, hp, wp = xp.shape
    m = cols.shape[1]
    flat = xp.reshape(-1)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                start = (c * hp + i * dh) * wp + j * dw
                source = flat[start:start + m]
                target = cols[(c * kh + i) * kw + j]
                for q in range(m):
                    target[q] = source[q]


@njit(**_OPTS)
def _zero_unused(cols, wp, wo):
    """Zero the columns Wo..Wp-1 of each output row in the wide layout (the last row stops
    at Wo), so that they add nothing even where the input holds an infinity."""
    m = cols.shape[1]
    zero = cols.dtype.type(0)
    for r in range(cols.shape[0]):
        row = cols[r]
        for start in range(wo, m, wp):
            for q in range(start, start + wp - wo):
                row[q] = zero


@njit(**_OPTS)
def _col2im_wide(cols, padded, kh, kw, dh, dw):
    """padded (C, Hp, Wp) = the wide columns of cols (C kh kw, M) added onto their windows."""
    channels, hp, wp = padded.shape
    m = cols.shape[1]
    flat = padded.reshape(-1)
    flat[:] = padded.dtype.type(0)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                start = (c * hp + i * dh) * wp + j * dw
                target = flat[start:start + m]
                source = cols[(c * kh + i) * kw + j]
                for q in range(m):
                    target[q] += source[q]


@njit(parallel=True, **_OPTS)
def _forward_gemm(x, w, bias, has_bias, out, kh, kw, sh, sw, ph, pw, dh, dw, groups, wide,
                  chunks, kind, one, zero):
    """wide: x is already padded (ph = pw = 0 here) and the stride is 1."""
    n_items, channels, hx, wx = x.shape
    o, k = w.shape  # (O, C / groups * kh * kw)
    ho, wo = out.shape[2], out.shape[3]
    row = wx if wide else wo  # the length of an output row in the column matrices
    m = (ho - 1) * row + wo
    compact = row == wo  # the GEMM can write straight into out
    o_group = o // groups
    size = x.itemsize
    pointwise = kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    x_ptr, w_ptr, out_ptr = _address(x), _address(w), _address(out)
    for chunk in prange(chunks):
        cols = np.empty((0 if pointwise else channels * kh * kw, m), x.dtype)
        y = np.empty((0 if compact else o, m), x.dtype)
        for n in range(chunk * n_items // chunks, (chunk + 1) * n_items // chunks):
            if pointwise:  # the image is its own column matrix (C, H W)
                cols_ptr = x_ptr + n * channels * hx * wx * size
            else:
                if wide:
                    _im2col_wide(x[n], cols, kh, kw, dh, dw)
                else:
                    _im2col(x[n], cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
                cols_ptr = _address(cols)
            y_ptr = out_ptr + n * o * ho * wo * size if compact else _address(y)
            for g in range(groups):
                # y[g] (O/g, M) = w[g] (O/g, K) @ cols[g] (K, M)
                _gemm(kind, _NO_TRANS, _NO_TRANS, o_group, m, k, one,
                      w_ptr + g * o_group * k * size, k, cols_ptr + g * k * m * size, m, zero,
                      y_ptr + g * o_group * m * size, m)
            if compact and not has_bias:
                continue
            for c in range(o):  # the output rows out of the wide rows, plus the bias
                add = bias[c] if has_bias else out.dtype.type(0)
                for oh in range(ho):
                    target = out[n, c, oh]
                    if compact:
                        for q in range(wo):
                            target[q] += add
                    else:
                        source = y[c, oh * row:oh * row + wo]
                        if has_bias:
                            for q in range(wo):
                                target[q] = source[q] + add
                        else:
                            for q in range(wo):
                                target[q] = source[q]


@njit(parallel=True, **_OPTS)
def _backward_input_gemm(grad, w, dx, kh, kw, sh, sw, ph, pw, dh, dw, groups, wide, chunks, kind,
                         one, zero):
    """wide: grad is laid out in rows of Wp = W + 2 pw, zero past its own Wo, and the stride
    is 1."""
    n_items, o, ho, row = grad.shape
    channels, h, width = dx.shape[1], dx.shape[2], dx.shape[3]
    hp, wp = h + 2 * ph, width + 2 * pw
    k = w.shape[1]
    # wide: up to the last full window of the last row (grad is zero past its own Wo)
    m = (ho - 1) * row + wp - (kw - 1) * dw if wide else ho * row
    o_group = o // groups
    size = grad.itemsize
    # a pointwise gradient the size of the image (not cropped) is its own column matrix
    pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
                 and m == h * width)
    grad_ptr, w_ptr, dx_ptr = _address(grad), _address(w), _address(dx)
    for chunk in prange(chunks):
        cols = np.empty((0 if pointwise else channels * kh * kw, m), grad.dtype)
        padded = np.empty((channels, hp, wp) if wide and not pointwise else (0, 0, 0),
                          grad.dtype)
        for n in range(chunk * n_items // chunks, (chunk + 1) * n_items // chunks):
            cols_ptr = dx_ptr + n * channels * h * width * size if pointwise else _address(cols)
            for g in range(groups):
                # cols[g] (K, M) = w[g]^T (K, O/g) @ grad[n, g] (O/g, M)
                _gemm(kind, _TRANS, _NO_TRANS, k, m, o_group, one,
                      w_ptr + g * o_group * k * size, k,
                      grad_ptr + (n * o + g * o_group) * ho * row * size, ho * row, zero,
                      cols_ptr + g * k * m * size, m)
            if pointwise:
                continue
            if wide:
                _col2im_wide(cols, padded, kh, kw, dh, dw)
                for c in range(channels):
                    for r in range(h):
                        source = padded[c, r + ph, pw:pw + width]
                        target = dx[n, c, r]
                        for q in range(width):
                            target[q] = source[q]
            else:
                _col2im(cols, dx[n], kh, kw, sh, sw, ph, pw, dh, dw, ho, row)


@njit(parallel=True, **_OPTS)
def _backward_weight_gemm(grad, x, partial, kh, kw, sh, sw, ph, pw, dh, dw, groups, wide, wo,
                          chunks, kind, one, zero):
    """wide: x is already padded (ph = pw = 0 here), grad is laid out in rows of Wp, zero past
    its own width wo, and the stride is 1."""
    n_items, o, ho, row = grad.shape
    channels, hx, wx = x.shape[1], x.shape[2], x.shape[3]
    k = partial.shape[2]
    m = (ho - 1) * row + wo
    o_group = o // groups
    size = grad.itemsize
    pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
                 and m == hx * wx)
    grad_ptr, x_ptr, partial_ptr = _address(grad), _address(x), _address(partial)
    for chunk in prange(chunks):
        cols = np.empty((0 if pointwise else channels * kh * kw, m), grad.dtype)
        start = chunk * n_items // chunks
        for n in range(start, (chunk + 1) * n_items // chunks):
            if pointwise:
                cols_ptr = x_ptr + n * channels * hx * wx * size
            else:
                if wide:
                    _im2col_wide(x[n], cols, kh, kw, dh, dw)
                    if row != wo:
                        _zero_unused(cols, row, wo)
                else:
                    _im2col(x[n], cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
                cols_ptr = _address(cols)
            for g in range(groups):
                # partial[chunk, g] (K, O/g) (+)= cols[g] (K, M) @ grad[n, g]^T (M, O/g): the
                # transpose of the weight gradient, which BLAS computes faster in this shape
                # (long K, few outputs: 1.7x on LeNet's second layer)
                _gemm(kind, _NO_TRANS, _TRANS, k, o_group, m, one,
                      cols_ptr + g * k * m * size, m,
                      grad_ptr + (n * o + g * o_group) * ho * row * size, ho * row,
                      zero if n == start else one,
                      partial_ptr + (chunk * o + g * o_group) * k * size, o_group)
    # the chunks' partials, added in chunk order
    total = partial[0]
    for chunk in range(1, chunks):
        total += partial[chunk]


# ----------------------------------------------------------------------------
# Python-side helpers

def _padded(x, padding):
    """x (N, C, H, W) zero-padded by (ph, pw) on each side, C-contiguous."""
    ph, pw = padding
    x = np.ascontiguousarray(x)
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _wide(grad, width):
    """grad (N, O, Ho, Wo) in rows of `width` >= Wo, zero past Wo, C-contiguous."""
    grad = np.ascontiguousarray(grad)
    if grad.shape[3] == width:
        return grad
    out = np.zeros(grad.shape[:3] + (width,), grad.dtype)
    out[..., :grad.shape[3]] = grad
    return out


# ----------------------------------------------------------------------------
# The kernels the ops call

def _supported(*arrays):
    return _is_float(*arrays) and len({a.dtype for a in arrays}) == 1 and all(
        a.size for a in arrays)


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """y (N, O, Ho, Wo) of x (N, C, H, W) and weight (O, C // groups, kh, kw), plus bias (O,)
    unless None -- see reference.conv2d."""
    if not _supported(x, weight, *(() if bias is None else (bias,))):
        return reference.conv2d(x, weight, bias, stride, padding, dilation, groups)
    (n, _, h, w), (o, _, kh, kw) = x.shape, weight.shape
    out_hw = tuple(conv_output_size((h, w)[a], (kh, kw)[a], stride[a], padding[a], dilation[a])
                   for a in range(2))
    weight = np.ascontiguousarray(weight)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros(1, x.dtype)
    out = np.empty((n, o) + out_hw, x.dtype)
    wide = tuple(stride) == (1, 1)  # then x is padded here, and the kernel pads no more
    x = _padded(x, padding) if wide else np.ascontiguousarray(x)
    _forward_gemm(x, weight.reshape(o, -1), bias, has_bias, out, kh, kw, *stride,
                  *((0, 0) if wide else padding), *dilation, groups, wide, _chunks(n),
                  *_blas_constants(x.dtype))
    return out


def conv2d_backward_input(grad, weight, input_shape, stride, padding, dilation, groups):
    """d loss / d x of conv2d, of shape input_shape (N, C, H, W), from grad (N, O, Ho, Wo)
    -- see reference.conv2d_backward_input."""
    if not _supported(grad, weight) or 0 in input_shape:
        return reference.conv2d_backward_input(grad, weight, input_shape, stride, padding,
                                               dilation, groups)
    grad = np.ascontiguousarray(grad)
    weight = np.ascontiguousarray(weight)
    o, _, kh, kw = weight.shape
    dx = np.empty(tuple(input_shape), grad.dtype)
    wide = tuple(stride) == (1, 1)
    if wide:
        grad = _wide(grad, input_shape[3] + 2 * padding[1])
    _backward_input_gemm(grad, weight.reshape(o, -1), dx, kh, kw, *stride, *padding, *dilation,
                         groups, wide, _chunks(grad.shape[0]), *_blas_constants(grad.dtype))
    return dx


def conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation, groups):
    """d loss / d weight of conv2d, of shape weight_shape (O, C // groups, kh, kw) -- see
    reference.conv2d_backward_weight."""
    if not _supported(grad, x):
        return reference.conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation,
                                                groups)
    grad = np.ascontiguousarray(grad)
    x = np.ascontiguousarray(x)
    o, c_group, kh, kw = weight_shape
    chunks = _chunks(grad.shape[0])
    k = c_group * kh * kw
    partial = np.empty((chunks, groups, k, o // groups), grad.dtype)  # transposed, per group
    wide = tuple(stride) == (1, 1)
    wo = grad.shape[3]
    if wide:
        x = _padded(x, padding)
        grad = _wide(grad, x.shape[3])
    _backward_weight_gemm(grad, x, partial, kh, kw, *stride, *((0, 0) if wide else padding),
                          *dilation, groups, wide, wo, chunks, *_blas_constants(grad.dtype))
    return np.ascontiguousarray(partial[0].transpose(0, 2, 1)).reshape(weight_shape)


# ----------------------------------------------------------------------------
# unfold and fold: im2col and col2im, one image per iteration
# reference: reference.unfold, reference.fold

@njit(parallel=True, **_OPTS)
def _unfold(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    for n in prange(x.shape[0]):
        _im2col(x[n], cols[n], kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)


@njit(parallel=True, **_OPTS)
def _fold(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    for n in prange(x.shape[0]):
        _col2im(cols[n], x[n], kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)


def unfold(x, kernel_size, dilation, padding, stride):
    """im2col: (N, C, H, W) -> (N, C * kh * kw, L) -- see reference.unfold."""
    if not _supported(x):
        return reference.unfold(x, kernel_size, dilation, padding, stride)
    n, c, h, w = x.shape
    out_hw = tuple(conv_output_size((h, w)[a], kernel_size[a], stride[a], padding[a],
                                              dilation[a]) for a in range(2))
    cols = np.empty((n, c * kernel_size[0] * kernel_size[1], out_hw[0] * out_hw[1]), x.dtype)
    _unfold(np.ascontiguousarray(x), cols, *kernel_size, *stride, *padding, *dilation, *out_hw)
    return cols


def fold(cols, output_size, kernel_size, dilation, padding, stride):
    """col2im, unfold's adjoint: (N, C * kh * kw, L) -> (N, C, H, W) -- see reference.fold."""
    if not _supported(cols):
        return reference.fold(cols, output_size, kernel_size, dilation, padding, stride)
    n = cols.shape[0]
    c = cols.shape[1] // (kernel_size[0] * kernel_size[1])
    out_hw = tuple(conv_output_size(output_size[a], kernel_size[a], stride[a],
                                              padding[a], dilation[a]) for a in range(2))
    x = np.empty((n, c) + tuple(output_size), cols.dtype)
    _fold(np.ascontiguousarray(cols), x, *kernel_size, *stride, *padding, *dilation, *out_hw)
    return x
