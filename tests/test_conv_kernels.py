"""Both kernel sets compute the convolution kernels' math, to within rounding.

conv2d, conv2d_backward_input, conv2d_backward_weight, unfold and fold of
tensorlite/kernels/numba/conv.py and of their reference, tensorlite/kernels/numpy/conv.py, are
checked on Hypothesis-drawn geometries (odd sizes, size-1 dimensions, stride, padding, dilation
and groups, depthwise included, non-contiguous inputs) in float32 and float64, against the
exact result: the reference evaluated in float64 on the same values. Each output element of a
convolution is a sum of products, so its rounding error is bounded by
tl.testing.rounding_bound with n = the number of terms summed per element (C / groups * kh * kw
products for the forward, plus the bias) and the magnitude = the same computation on absolute
values. The Numba set's paths (GEMM with wide columns for stride 1, GEMM with general im2col,
for any groups, depthwise included) are all reached by the draws.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tensorlite.kernels import numba as jitted, numpy as reference
from tensorlite.testing import assert_within_rounding, rounding_bound

IMPLEMENTATIONS = {"numpy": reference, "numba": jitted}
LAYOUTS = ["contiguous", "strided", "channels_last"]


def make_array(rng, shape, dtype, layout):
    """A standard-normal array of `shape` stored contiguously, as every other element of a
    wider array ('strided'), or as a transposed (N, H, W, C)-ordered array ('channels_last',
    4-D only)."""
    if layout == "strided":
        return rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
    if layout == "channels_last" and len(shape) == 4:
        n, c, h, w = shape
        return rng.standard_normal((n, h, w, c)).astype(dtype).transpose(0, 3, 1, 2)
    return rng.standard_normal(shape).astype(dtype)


def out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@st.composite
def geometries(draw):
    """(rng, dtype, layout, n, c, h, w, o, kernel, stride, padding, dilation, groups)."""
    if draw(st.booleans()):  # depthwise: one input and one output channel per group
        groups = draw(st.integers(1, 4))
        c_group = o_group = 1
    else:
        groups = draw(st.integers(1, 3))
        c_group, o_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (1, 2), (2, 3)]))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    h = draw(st.integers(max(1, spans[0] - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, spans[1] - 2 * padding[1]), 9))
    return (np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
            draw(st.sampled_from([np.float32, np.float64])), draw(st.sampled_from(LAYOUTS)),
            draw(st.integers(1, 3)), groups * c_group, h, w, groups * o_group, kernel, stride,
            padding, dilation, groups)


def check(actual, exact, magnitude, n_terms, dtype, what):
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, not {np.dtype(dtype)}"
    assert_within_rounding(actual, exact, rounding_bound(magnitude, n_terms, dtype), what)


def wide(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@given(case=geometries(), with_bias=st.booleans())
def test_conv2d_forward(name, case, with_bias):
    rng, dtype, layout, n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    x = make_array(rng, (n, c, h, w), dtype, layout)
    weight = make_array(rng, (o, c // groups) + kernel, dtype, layout)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    y = IMPLEMENTATIONS[name].conv2d(x, weight, bias, stride, padding, dilation, groups)
    x64, w64 = wide(x, weight)
    b64 = None if bias is None else np.asarray(bias, np.float64)
    exact = reference.conv2d(x64, w64, b64, stride, padding, dilation, groups)
    magnitude = reference.conv2d(np.abs(x64), np.abs(w64), None if b64 is None else np.abs(b64),
                                 stride, padding, dilation, groups)
    n_terms = c // groups * kernel[0] * kernel[1] + 2
    check(y, exact, magnitude, n_terms, dtype, f"{name} conv2d")


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@given(case=geometries(), crop=st.booleans())
def test_conv2d_backward_input_and_weight(name, case, crop):
    """Both gradients from a random upstream gradient; with `crop`, the gradient is one row and
    column short of the convolution's output, as for a transposed convolution whose
    output_padding is not less than its stride."""
    rng, dtype, layout, n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    ho, wo = (out_size((h, w)[a], kernel[a], stride[a], padding[a], dilation[a])
              for a in range(2))
    if crop:
        ho, wo = max(1, ho - 1), max(1, wo - 1)
    x = make_array(rng, (n, c, h, w), dtype, layout)
    weight = make_array(rng, (o, c // groups) + kernel, dtype, layout)
    grad = make_array(rng, (n, o, ho, wo), dtype, layout)
    kernels = IMPLEMENTATIONS[name]
    grad_x = kernels.conv2d_backward_input(grad, weight, x.shape, stride, padding, dilation,
                                           groups)
    grad_w = kernels.conv2d_backward_weight(grad, x, weight.shape, stride, padding, dilation,
                                            groups)
    x64, w64, g64 = wide(x, weight, grad)
    exact = reference.conv2d_backward_input(g64, w64, x.shape, stride, padding, dilation, groups)
    magnitude = reference.conv2d_backward_input(np.abs(g64), np.abs(w64), x.shape, stride,
                                                padding, dilation, groups)
    check(grad_x, exact, magnitude, o // groups * kernel[0] * kernel[1] + 1, dtype,
          f"{name} conv2d_backward_input")
    exact = reference.conv2d_backward_weight(g64, x64, weight.shape, stride, padding, dilation,
                                             groups)
    magnitude = reference.conv2d_backward_weight(np.abs(g64), np.abs(x64), weight.shape, stride,
                                                 padding, dilation, groups)
    check(grad_w, exact, magnitude, n * ho * wo + 1, dtype, f"{name} conv2d_backward_weight")


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@given(case=geometries())
def test_unfold_and_fold(name, case):
    """unfold copies (exactly); fold adds up to kh kw columns onto each pixel."""
    rng, dtype, layout, n, c, h, w, _, kernel, stride, padding, dilation, _ = case
    kernels = IMPLEMENTATIONS[name]
    x = make_array(rng, (n, c, h, w), dtype, layout)
    cols = kernels.unfold(x, kernel, dilation, padding, stride)
    windows = [out_size((h, w)[a], kernel[a], stride[a], padding[a], dilation[a])
               for a in range(2)]
    assert cols.shape == (n, c * kernel[0] * kernel[1], windows[0] * windows[1])
    assert cols.dtype == dtype
    for row in range(cols.shape[1]):  # element by element from the definition
        channel, tap = divmod(row, kernel[0] * kernel[1])
        i, j = divmod(tap, kernel[1])
        for oh in range(windows[0]):
            r = oh * stride[0] - padding[0] + i * dilation[0]
            for ow in range(windows[1]):
                col = ow * stride[1] - padding[1] + j * dilation[1]
                inside = 0 <= r < h and 0 <= col < w
                assert cols[:, row, oh * windows[1] + ow].tolist() == (
                    x[:, channel, r, col].tolist() if inside else [0.0] * n)
    columns = make_array(rng, cols.shape, dtype, layout)
    folded = kernels.fold(columns, (h, w), kernel, dilation, padding, stride)
    c64, = wide(columns)
    exact = reference.fold(c64, (h, w), kernel, dilation, padding, stride)
    magnitude = reference.fold(np.abs(c64), (h, w), kernel, dilation, padding, stride)
    check(folded, exact, magnitude, kernel[0] * kernel[1] + 1, dtype, f"{name} fold")


def test_fold_is_the_adjoint_of_unfold():
    """<unfold(x), y> = <x, fold(y)> for the reference (in float64, to rounding)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    geometry = ((3, 2), (2, 1), (1, 2), (2, 1))  # kernel, dilation, padding, stride
    cols = reference.unfold(x, *geometry)
    y = rng.standard_normal(cols.shape)
    left, right = (cols * y).sum(), (x * reference.fold(y, (7, 6), *geometry)).sum()
    assert abs(left - right) <= 1e-12 * (np.abs(cols * y).sum())


@pytest.mark.parametrize("depthwise", [False, True])
def test_numba_kernels_repeat_their_bytes(depthwise):
    """Same inputs and thread count, same bytes (the weight gradient's partials are added in
    a fixed order)."""
    rng = np.random.default_rng(1)
    groups = 4 if depthwise else 1
    x = rng.standard_normal((5, 4, 9, 8)).astype(np.float32)
    weight = rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32)
    grad = rng.standard_normal((5, 4, 9, 8)).astype(np.float32)
    geometry = ((1, 1), (1, 1), (1, 1), groups)
    for kernel, args in ((jitted.conv2d, (x, weight, None)),
                         (jitted.conv2d_backward_input, (grad, weight, x.shape)),
                         (jitted.conv2d_backward_weight, (grad, x, weight.shape))):
        first, second = kernel(*args, *geometry), kernel(*args, *geometry)
        assert first.tobytes() == second.tobytes(), kernel.__name__


def test_numba_conv_of_a_1x1_kernel_is_a_product():
    """A pointwise convolution reads the image as its own column matrix."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4, 6))
    weight = rng.standard_normal((7, 5, 1, 1))
    y = jitted.conv2d(x, weight, None, (1, 1), (0, 0), (1, 1), 1)
    exact = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    assert_within_rounding(y, exact, rounding_bound(
        np.einsum("oc,nchw->nohw", np.abs(weight[:, :, 0, 0]), np.abs(x)), 6, np.float64))
