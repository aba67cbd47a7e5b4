"""Pooling kernels, reference (NCHW; a 1-D pool arrives here with H = 1).

Contract shared with numba/pool.py (the ops in tensorlite/ops/pool.py call these through
tensorlite.kernels). Geometry arguments are checked pairs of ints (h, w).

Windows, as PyTorch places them: output row oh covers input rows
oh * stride - padding + i * dilation for i < kernel, and the number of output rows is
floor((H + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, or with ceil_mode the ceiling,
less one if the last window would start at or past the end of the input and its left padding.
Each kernel here walks the kernel offsets (i, j) in row-major order and handles all windows at
once with one strided slice per offset, so the order of comparisons and additions within a
window is the row-major order that torch's loops and the Numba kernels use.
"""

import numpy as np


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """Number of windows along one axis (torch's pooling_output_shape)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _padded(x, fill, kernel_size, stride, padding, dilation, out_shape):
    """x inside a border of `fill`: `padding` before, and after as much as the last window
    reaches (which in ceil_mode can exceed `padding`)."""
    widths = [(0, 0), (0, 0)]
    for axis in (0, 1):
        size = x.shape[2 + axis]
        reach = (out_shape[axis] - 1) * stride[axis] + dilation[axis] * (kernel_size[axis] - 1) + 1
        widths.append((padding[axis], max(0, reach - size - padding[axis])))
    return np.pad(x, widths, constant_values=fill)


def _offsets(kernel_size, stride, dilation, out_shape):
    """For each kernel offset (i, j), row-major: the strided slices of the padded input that
    hold that element of every window, and its position relative to the window's start."""
    for i in range(kernel_size[0]):
        rows = slice(i * dilation[0], i * dilation[0] + (out_shape[0] - 1) * stride[0] + 1,
                     stride[0])
        for j in range(kernel_size[1]):
            cols = slice(j * dilation[1], j * dilation[1] + (out_shape[1] - 1) * stride[1] + 1,
                         stride[1])
            yield (Ellipsis, rows, cols), i * dilation[0], j * dilation[1]


def _out_shape(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    return tuple(pool_output_size(x_shape[2 + a], kernel_size[a], stride[a], padding[a],
                                  dilation[a], ceil_mode) for a in (0, 1))


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, indices): y (N, C, Ho, Wo) the window maxima (padding counts as -inf), indices int64
    of the same shape, each the flat position h * W + w of the maximum in its input plane, as
    torch's return_indices (the first maximum when several are equal).

    As torch: a NaN counts as larger than everything (the last NaN of a window wins), and a
    window of -inf values reports its first element inside the input."""
    H, W = x.shape[2:]
    Ho, Wo = _out_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    padded = _padded(x, lowest, kernel_size, stride, padding, dilation, (Ho, Wo))
    rows0 = np.arange(Ho) * stride[0] - padding[0]  # (Ho,) first input row of each window
    cols0 = np.arange(Wo) * stride[1] - padding[1]  # (Wo,)
    y = np.full(x.shape[:2] + (Ho, Wo), lowest, dtype=x.dtype)
    # Until a larger value comes, each window points at its first offset past the top and left
    # padding, as torch's (past the input too, for a window that only dilation puts entirely
    # in the padding: its gradient then goes nowhere).
    first_row = rows0 + -(np.minimum(rows0, 0) // dilation[0]) * dilation[0]
    first_col = cols0 + -(np.minimum(cols0, 0) // dilation[1]) * dilation[1]
    indices = np.broadcast_to(first_row[:, None] * W + first_col[None, :], y.shape)
    for window, di, dj in _offsets(kernel_size, stride, dilation, (Ho, Wo)):
        r, c = rows0 + di, cols0 + dj
        inside = ((r >= 0) & (r < H))[:, None] & ((c >= 0) & (c < W))[None, :]  # (Ho, Wo)
        v = padded[window]
        take = inside & ((v > y) | np.isnan(v))
        y = np.where(take, v, y)
        indices = np.where(take, r[:, None] * W + c[None, :], indices)
    return y, np.array(indices, dtype=np.int64)


def max_pool2d_backward(grad, indices, input_shape):
    """d loss / d x: each grad element added at its window's arg-max (nowhere for a window
    without an input element, whose index lies past the plane)."""
    N, C, H, W = input_shape
    grad_x = np.zeros((N * C, H * W + 1), dtype=grad.dtype)  # + 1: where those go
    planes = np.arange(N * C)[:, None]
    n_out = indices.shape[-2] * indices.shape[-1]  # explicit: -1 fails for an empty batch
    np.add.at(grad_x, (planes, np.minimum(indices.reshape(N * C, n_out), H * W)),
              grad.reshape(N * C, n_out))
    grad_x = grad_x[:, :-1]
    return grad_x.reshape(input_shape)


def avg_pool2d_divisors(input_hw, out_shape, kernel_size, stride, padding, count_include_pad):
    """(Ho, Wo) divisor of each window, as torch: with count_include_pad the window clipped to
    the padded input, else only its elements inside the input. Separable, so an outer product."""
    counts = []
    for axis in (0, 1):
        start = np.arange(out_shape[axis]) * stride[axis] - padding[axis]
        end = np.minimum(start + kernel_size[axis], input_hw[axis] + padding[axis])
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, input_hw[axis])
        counts.append(end - start)
    return counts[0][:, None] * counts[1][None, :]


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Window means (N, C, Ho, Wo); the divisor counts padding when count_include_pad."""
    out_shape = _out_shape(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    padded = _padded(x, 0, kernel_size, stride, padding, (1, 1), out_shape)
    total = np.zeros(x.shape[:2] + out_shape, dtype=x.dtype)
    for window, _, _ in _offsets(kernel_size, stride, (1, 1), out_shape):
        total += padded[window]
    divisor = avg_pool2d_divisors(x.shape[2:], out_shape, kernel_size, stride, padding,
                                  count_include_pad)
    return (total / np.maximum(divisor, 1).astype(x.dtype)).astype(x.dtype, copy=False)


def avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad):
    """d loss / d x of avg_pool2d: each grad element spread evenly over its window."""
    x_shape = tuple(input_shape)
    out_shape = grad.shape[2:]
    divisor = avg_pool2d_divisors(x_shape[2:], out_shape, kernel_size, stride, padding,
                                  count_include_pad)
    share = grad / np.maximum(divisor, 1).astype(grad.dtype)  # (N, C, Ho, Wo)
    padded = _padded(np.zeros(x_shape, dtype=grad.dtype), 0, kernel_size, stride, padding,
                     (1, 1), out_shape)
    for window, _, _ in _offsets(kernel_size, stride, (1, 1), out_shape):
        padded[window] += share
    H, W = x_shape[2:]
    return padded[..., padding[0]:padding[0] + H, padding[1]:padding[1] + W].copy()
