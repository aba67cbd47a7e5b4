"""Convolution kernels, reference: 2-D convolution (NCHW) by im2col and one matrix product.

Contract shared with numba/conv.py (the ops in tensorlite/ops/conv.py call these through
tensorlite.kernels; a 1-D convolution arrives here with H = 1). All geometry arguments are
already checked and are pairs of ints (h, w); padding is symmetric zero padding.

The math. With x zero-padded by (ph, pw), output position (oh, ow) of a convolution reads the
kernel window whose tap (i, j) sits at row oh * sh + i * dh, column ow * sw + j * dw. Laying
each window out as a column gives `cols` (im2col, `unfold`): (N, C * kh * kw, L), L = Ho * Wo.
Then, per group g of channels (C / groups inputs, O / groups outputs each),

    y[n, g]         = W[g] @ cols[n, g]                  (O/g, L) = (O/g, K) @ (K, L)
    grad_cols[n, g] = W[g]^T @ grad[n, g]                and grad_x = fold(grad_cols)
    grad_W[g]       = sum over n of grad[n, g] @ cols[n, g]^T

with K = C / groups * kh * kw. `fold` (col2im) is unfold's adjoint: it adds every column back
onto the window it came from, so a pixel covered by several windows receives the sum.

The spatial size (Ho, Wo) of `grad` is taken from grad itself, not recomputed: a transposed
convolution whose output_padding is at least its stride is the adjoint of a convolution whose
output is cropped to (Ho, Wo), and the same kernels serve it.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size, kernel, stride, padding, dilation):
    """Positions of a kernel window along one axis: (size + 2p - d (k - 1) - 1) // s + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _padded(x, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _windows(x, kernel_size, dilation, padding, stride, out_hw):
    """A read-only view (N, C, kh, kw, Ho, Wo) of the padded x: [n, c, i, j, oh, ow] is
    x_padded[n, c, oh * sh + i * dh, ow * sw + j * dw]."""
    xp = _padded(x, padding)
    (kh, kw), (dh, dw), (sh, sw) = kernel_size, dilation, stride
    sn, sc, s_row, s_col = xp.strides
    return as_strided(xp, xp.shape[:2] + (kh, kw) + tuple(out_hw),
                      (sn, sc, s_row * dh, s_col * dw, s_row * sh, s_col * sw), writeable=False)


def _grouped_cols(x, kernel_size, dilation, padding, stride, out_hw, groups):
    """im2col of x split by groups: (N, groups, C / groups * kh * kw, Ho * Wo), a copy."""
    n, c = x.shape[:2]
    windows = _windows(x, kernel_size, dilation, padding, stride, out_hw)
    # explicit sizes throughout: -1 cannot be inferred when the batch is empty
    return windows.reshape(n, groups, (c // groups) * kernel_size[0] * kernel_size[1],
                           out_hw[0] * out_hw[1])


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """y (N, O, Ho, Wo) of x (N, C, H, W) and weight (O, C // groups, kh, kw), plus bias (O,)
    unless None; Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1, likewise Wo."""
    n = x.shape[0]
    o, c_group, kh, kw = weight.shape
    out_hw = tuple(conv_output_size(x.shape[2 + a], weight.shape[2 + a], stride[a], padding[a],
                               dilation[a]) for a in range(2))
    cols = _grouped_cols(x, (kh, kw), dilation, padding, stride, out_hw, groups)  # (N, G, K, L)
    w = weight.reshape(groups, o // groups, c_group * kh * kw)  # (G, O/G, K)
    y = np.matmul(w, cols)  # (N, G, O/G, L)
    y = y.reshape(n, o, *out_hw)
    if bias is not None:
        y += bias.reshape(1, o, 1, 1)
    return y.astype(x.dtype, copy=False)


def conv2d_backward_input(grad, weight, input_shape, stride, padding, dilation, groups):
    """d loss / d x of conv2d, of shape input_shape (N, C, H, W), from grad (N, O, Ho, Wo):
    the transposed convolution (conv_transpose2d's forward)."""
    n, o, ho, wo = grad.shape
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]  # C / groups * kh * kw
    w = weight.reshape(groups, o // groups, k)  # (G, O/G, K)
    g = grad.reshape(n, groups, o // groups, ho * wo)  # (N, G, O/G, L)
    cols = np.matmul(np.swapaxes(w, -1, -2), g)  # (N, G, K, L)
    cols = cols.reshape(n, groups * k, ho * wo)  # (N, C kh kw, L)
    return _col2im(cols, input_shape, weight.shape[2:], dilation, padding, stride, (ho, wo))


def conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation, groups):
    """d loss / d weight of conv2d, of shape weight_shape (O, C // groups, kh, kw)."""
    n, o, ho, wo = grad.shape
    cols = _grouped_cols(x, weight_shape[2:], dilation, padding, stride, (ho, wo), groups)
    k = cols.shape[2]
    # Both operands with the batch folded into the contraction: one product per group.
    cols = cols.transpose(1, 2, 0, 3).reshape(groups, k, n * ho * wo)  # (G, K, N L)
    g = grad.reshape(n, groups, o // groups, ho * wo)
    g = g.transpose(1, 2, 0, 3).reshape(groups, o // groups, n * ho * wo)  # (G, O/G, N L)
    grad_weight = np.matmul(g, np.swapaxes(cols, -1, -2))  # (G, O/G, K)
    return grad_weight.reshape(weight_shape).astype(x.dtype, copy=False)


def unfold(x, kernel_size, dilation, padding, stride):
    """im2col: (N, C, H, W) -> (N, C * kh * kw, L), as torch.nn.functional.unfold."""
    n, c, h, w = x.shape
    out_hw = tuple(conv_output_size((h, w)[a], kernel_size[a], stride[a], padding[a], dilation[a])
                   for a in range(2))
    windows = _windows(x, kernel_size, dilation, padding, stride, out_hw)
    return windows.reshape(n, c * kernel_size[0] * kernel_size[1], out_hw[0] * out_hw[1])


def fold(cols, output_size, kernel_size, dilation, padding, stride):
    """col2im, unfold's adjoint: (N, C * kh * kw, L) -> (N, C, H, W), overlaps summed."""
    kh, kw = kernel_size
    n = cols.shape[0]
    c = cols.shape[1] // (kh * kw)
    out_hw = tuple(conv_output_size(output_size[a], kernel_size[a], stride[a], padding[a],
                                    dilation[a]) for a in range(2))
    return _col2im(cols, (n, c) + tuple(output_size), kernel_size, dilation, padding, stride,
                   out_hw)


def _col2im(cols, input_shape, kernel_size, dilation, padding, stride, out_hw):
    """Add each column of cols (N, C kh kw, Ho Wo) onto its window of a zero (N, C, H, W)
    image padded by `padding`, then drop the padding."""
    n, c, h, w = input_shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    ho, wo = out_hw
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            padded[:, :, rows, columns] += cols[:, :, i, j]
    return np.ascontiguousarray(padded[:, :, ph:ph + h, pw:pw + w])
