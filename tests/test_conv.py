"""The convolution ops (tensorlite/ops/conv.py) against torch, and their derivatives.

Forward values and first gradients of F.conv1d, conv2d, conv_transpose2d, unfold and fold are
compared with torch's in float64 on Hypothesis-drawn geometries. Gradients and second
derivatives are checked against finite differences (gradcheck, gradgradcheck, float64, random
upstream gradients): each op's backward is written with the others, so gradgradcheck covers
the backward of every op of the family. Bad arguments raise one ValueError naming the op and
the shapes. (The kernels themselves are checked in tests/test_conv_kernels.py.)
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, strategies as st

import tensorlite as tl
import tensorlite.functional as F
from tensorlite.testing import assert_within_rounding, gradcheck, gradgradcheck, rounding_bound


def as_torch(*arrays):
    return [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]


def as_tl(*arrays):
    return [None if a is None else tl.Tensor(a, requires_grad=True) for a in arrays]


def compare_with_torch(ours, theirs, arrays, rng):
    """ours(*tensors) and theirs(*torch tensors): the same output, and the same gradients of
    every input for a random upstream gradient (float64, to rounding)."""
    mine = as_tl(*arrays)
    reference = as_torch(*arrays)
    y, y_torch = ours(*mine), theirs(*reference)
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=1e-10, atol=1e-12)
    grad = rng.standard_normal(tuple(y.shape))
    y.backward(tl.Tensor(grad))
    y_torch.backward(torch.tensor(grad))
    for position, (a, b) in enumerate(zip(mine, reference)):
        if a is not None:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"gradient of input {position}")


@st.composite
def conv_cases(draw, dims=2):
    """(rng, n, c, spatial, o, kernel, stride, padding, dilation, groups, bias, batched)."""
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    same = draw(st.booleans())
    stride = (1,) * dims if same else tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = "same" if same else tuple(draw(st.integers(0, 2)) for _ in range(dims))
    pad = (0,) * dims if same else padding
    spatial = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7))
                    for d, k, p in zip(dilation, kernel, pad))
    return (np.random.default_rng(draw(st.integers(0, 2**32 - 1))), draw(st.integers(1, 2)), c,
            spatial, o, kernel, stride, padding, dilation, groups, draw(st.booleans()),
            draw(st.booleans()))


SAME_PADDING_WARNING = "ignore:Using padding='same':UserWarning"  # torch's, about its speed


@pytest.mark.filterwarnings(SAME_PADDING_WARNING)
@given(case=conv_cases(dims=2))
def test_conv2d_matches_torch(case):
    rng, n, c, spatial, o, kernel, stride, padding, dilation, groups, with_bias, batched = case
    x = rng.standard_normal(((n,) if batched else ()) + (c,) + spatial)
    weight = rng.standard_normal((o, c // groups) + kernel)
    bias = rng.standard_normal(o) if with_bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    compare_with_torch(lambda x, w, b=None: F.conv2d(x, w, b, **geometry),
                       lambda x, w, b=None: TF.conv2d(x, w, b, **geometry),
                       [x, weight] + ([bias] if with_bias else []), rng)


@pytest.mark.filterwarnings(SAME_PADDING_WARNING)
@given(case=conv_cases(dims=1))
def test_conv1d_matches_torch(case):
    rng, n, c, spatial, o, kernel, stride, padding, dilation, groups, with_bias, batched = case
    x = rng.standard_normal(((n,) if batched else ()) + (c,) + spatial)
    weight = rng.standard_normal((o, c // groups) + kernel)
    bias = rng.standard_normal(o) if with_bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    compare_with_torch(lambda x, w, b=None: F.conv1d(x, w, b, **geometry),
                       lambda x, w, b=None: TF.conv1d(x, w, b, **geometry),
                       [x, weight] + ([bias] if with_bias else []), rng)


@given(data=st.data())
def test_conv_transpose2d_matches_torch(data):
    draw = data.draw
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(2))
    spatial = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    out = [(spatial[a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1)
           + output_padding[a] + 1 for a in range(2)]
    if min(out) < 1:
        padding = (0, 0)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batched = draw(st.booleans())
    x = rng.standard_normal(((2,) if batched else ()) + (c_in,) + spatial)
    weight = rng.standard_normal((c_in, c_out // groups) + kernel)
    bias = rng.standard_normal(c_out)
    geometry = dict(stride=stride, padding=padding, output_padding=output_padding,
                    groups=groups, dilation=dilation)
    compare_with_torch(lambda x, w, b: F.conv_transpose2d(x, w, b, **geometry),
                       lambda x, w, b: TF.conv_transpose2d(x, w, b, **geometry),
                       [x, weight, bias], rng)


@given(data=st.data())
def test_unfold_and_fold_match_torch(data):
    draw = data.draw
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7))
                 for d, k, p in zip(dilation, kernel, padding))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batched = draw(st.booleans())
    geometry = dict(kernel_size=kernel, dilation=dilation, padding=padding, stride=stride)
    x = rng.standard_normal(((2,) if batched else ()) + (3,) + size)
    compare_with_torch(lambda x: F.unfold(x, **geometry), lambda x: TF.unfold(x, **geometry),
                       [x], rng)
    cols = TF.unfold(torch.tensor(x), **geometry).numpy()
    compare_with_torch(lambda c: F.fold(c, size, **geometry),
                       lambda c: TF.fold(c, size, **geometry), [rng.standard_normal(cols.shape)],
                       rng)


# Second order: every op, with the variants named in its case; float64, random upstream
# gradients (gradcheck's and gradgradcheck's default cotangents are random normal).

def conv2d_case(rng, n=1, c=2, hw=(4, 4), o=2, kernel=(3, 2), bias=True, **geometry):
    groups = geometry.get("groups", 1)
    arrays = [rng.standard_normal((n, c) + hw), rng.standard_normal((o, c // groups) + kernel)]
    if bias:
        arrays.append(rng.standard_normal(o))
    return (lambda x, w, b=None: F.conv2d(x, w, b, **geometry)), arrays


SECOND_ORDER = {
    "conv2d": lambda rng: conv2d_case(rng),
    "conv2d groups": lambda rng: conv2d_case(rng, c=4, o=4, groups=2),
    "conv2d depthwise": lambda rng: conv2d_case(rng, groups=2, padding=1),
    "conv2d dilation": lambda rng: conv2d_case(rng, hw=(5, 4), dilation=(2, 1), padding=(1, 0)),
    "conv2d stride": lambda rng: conv2d_case(rng, n=2, hw=(5, 5), stride=(2, 3), padding=1),
    "conv2d same even": lambda rng: conv2d_case(rng, hw=(4, 5), kernel=(2, 4), padding="same"),
    "conv2d no bias": lambda rng: conv2d_case(rng, bias=False, padding=(0, 1)),
    "conv1d": lambda rng: ((lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2,
                                                     groups=2)),
                           [rng.standard_normal((2, 4, 9)), rng.standard_normal((2, 2, 3)),
                            rng.standard_normal(2)]),
    "conv1d same even": lambda rng: ((lambda x, w: F.conv1d(x, w, padding="same")),
                                     [rng.standard_normal((2, 3, 6)),
                                      rng.standard_normal((2, 3, 4))]),
    "conv_transpose2d stride 2 output_padding": lambda rng: (
        (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)),
        [rng.standard_normal((2, 3, 3, 2)), rng.standard_normal((3, 2, 3, 3)),
         rng.standard_normal(2)]),
    "conv_transpose2d groups": lambda rng: (
        (lambda x, w: F.conv_transpose2d(x, w, groups=2, stride=(1, 2), dilation=(2, 1))),
        [rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((4, 1, 2, 2))]),
    "conv_transpose2d output_padding past the stride": lambda rng: (
        (lambda x, w: F.conv_transpose2d(x, w, output_padding=1, dilation=2)),
        [rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 2, 2))]),
    "unfold": lambda rng: ((lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1,
                                               stride=(2, 1))),
                           [rng.standard_normal((1, 2, 5, 6))]),
    "fold": lambda rng: ((lambda c: F.fold(c, (5, 6), (2, 3), dilation=(1, 2), padding=1,
                                           stride=(2, 1))),
                         [rng.standard_normal((1, 12, 12))]),
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_gradients_and_second_derivatives(name):
    fn, arrays = SECOND_ORDER[name](np.random.default_rng(7))
    # fold of unfold is linear: square it, so that second derivatives are not all zero
    squared = (lambda *a: fn(*a) * fn(*a)) if name in ("unfold", "fold") else fn
    assert gradcheck(fn, arrays)
    assert gradgradcheck(squared, arrays)


def test_lenet_shapes_agree_with_torch_in_float32():
    """The LeNet-5 layers at batch 8, float32, through the default kernel set, against the
    exact result (torch in float64 on the same values), ours and torch's float32 alike.

    Bounds: each output sums n terms, and the error of an earlier stage enters scaled by the
    later weights, so a result is within rounding_bound(magnitude, n) with n the terms summed
    along its chain of sums and magnitude the same computation on absolute values (|x|, |w|,
    |b|, in float64): conv1 26 terms (5 x 5 + bias), conv2 151 (6 x 5 x 5 + bias), the loss's
    2 y one, conv2's input gradient 16 x 5 x 5 = 400, conv1's 6 x 5 x 5 = 150, and the weight
    and bias gradients sum over the batch's positions, 8 x 10 x 10 = 800 for conv2 and
    8 x 28 x 28 = 6272 for conv1."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    w1 = (0.2 * rng.standard_normal((6, 1, 5, 5))).astype(np.float32)
    w2 = (0.1 * rng.standard_normal((16, 6, 5, 5))).astype(np.float32)
    b1, b2 = rng.standard_normal(6).astype(np.float32), rng.standard_normal(16).astype(np.float32)

    def run(conv2d, tensors):
        y = conv2d(conv2d(tensors[0], tensors[1], tensors[2], padding=2)[:, :, ::2, ::2],
                   tensors[3], tensors[4])
        (y * y).sum().backward()
        return [y] + [t.grad for t in tensors]

    def numpy(value):
        return value.detach().numpy() if isinstance(value, torch.Tensor) else value.numpy()

    arrays = (x, w1, b1, w2, b2)
    ours = run(F.conv2d, as_tl(*arrays))
    theirs = run(TF.conv2d, as_torch(*arrays))
    exact = run(TF.conv2d, as_torch(*(a.astype(np.float64) for a in arrays)))
    magnitude = run(TF.conv2d, as_torch(*(np.abs(a).astype(np.float64) for a in arrays)))
    forward = 26 + 151
    terms = [forward, forward + 1 + 400 + 150, forward + 1 + 400 + 6272, forward + 1 + 400 + 6272,
             forward + 1 + 800, forward + 1 + 800]
    names = ["y", "grad x", "grad w1", "grad b1", "grad w2", "grad b2"]
    for name, n, mine, torch_result, e, m in zip(names, terms, ours, theirs, exact, magnitude):
        bound = rounding_bound(numpy(m), n, np.float32)
        assert_within_rounding(numpy(mine), numpy(e), bound, f"ours, {name}")
        assert_within_rounding(numpy(torch_result), numpy(e), bound, f"torch, {name}")


# ----------------------------------------------------------------------------------------
# errors: one ValueError naming the op and the shapes

def zeros(*shape):
    return tl.Tensor(np.zeros(shape))


ERRORS = [
    (lambda: F.conv2d(zeros(1, 3, 5, 5), zeros(4, 2, 3, 3)),
     r"conv2d: input of shape \(1, 3, 5, 5\) has 3 channels, but weight of shape \(4, 2, 3, 3\)"),
    (lambda: F.conv2d(zeros(1, 4, 5, 5), zeros(3, 2, 3, 3), groups=2),
     r"conv2d: groups=2 must divide.*\(3, weight shape \(3, 2, 3, 3\)\)"),
    (lambda: F.conv2d(zeros(1, 3, 5, 5), zeros(3, 1, 3, 3), groups=2),
     r"conv2d: groups=2 must divide both the input channels \(3, input shape"),
    (lambda: F.conv2d(zeros(1, 1, 2, 5), zeros(1, 1, 3, 3)),
     r"conv2d: kernel of size \(3, 3\).*larger than the input of shape \(1, 1, 2, 5\)"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 1, 3, 3), stride=0),
     r"conv2d: stride must be positive, got 0"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 1, 3, 3), dilation=(1, -1)),
     r"conv2d: dilation must be positive"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 1, 3, 3), padding=-1),
     r"conv2d: padding must be non-negative, got -1"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 1, 3, 3), padding="full"),
     r"conv2d: padding must be an int, a tuple, 'valid' or 'same', got 'full'"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 1, 3, 3), stride=2, padding="same"),
     r"conv2d: padding='same' needs stride 1"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(1, 3, 3)),
     r"conv2d: weight must be 4-D .* got shape \(1, 3, 3\)"),
    (lambda: F.conv2d(zeros(5, 5), zeros(1, 1, 3, 3)),
     r"conv2d: expected a 4-D input \(N, C, H, W\) or an unbatched 3-D one, got shape \(5, 5\)"),
    (lambda: F.conv2d(zeros(1, 1, 5, 5), zeros(2, 1, 3, 3), zeros(3)),
     r"conv2d: bias of shape \(3,\) does not match the 2 output channels"),
    (lambda: F.conv1d(zeros(1, 2, 5), zeros(1, 3, 3)),
     r"conv1d: input of shape \(1, 2, 5\) has 2 channels, but weight of shape \(1, 3, 3\)"),
    (lambda: F.conv1d(zeros(1, 2, 5), zeros(1, 2, 3), stride=(1, 1)),
     r"conv1d: stride must be an int or a tuple of 1 ints"),
    (lambda: F.conv_transpose2d(zeros(1, 2, 3, 3), zeros(2, 1, 3, 3), stride=2,
                                output_padding=2),
     r"conv_transpose2d: output_padding \(2, 2\) must be smaller than the stride \(2, 2\) or "
     r"the dilation \(1, 1\)"),
    (lambda: F.conv_transpose2d(zeros(1, 2, 3, 3), zeros(3, 1, 3, 3)),
     r"conv_transpose2d: input of shape \(1, 2, 3, 3\) has 2 channels, but weight of shape "
     r"\(3, 1, 3, 3\)"),
    (lambda: F.conv_transpose2d(zeros(1, 2, 1, 1), zeros(2, 1, 1, 1), padding=1),
     r"conv_transpose2d: .* give an empty output"),
    (lambda: F.conv2d(zeros(1, 1, 3, 3), zeros(1, 1, 0, 2)),
     r"conv2d: weight of shape \(1, 1, 0, 2\) has a zero-sized dimension \(kernel size should "
     r"be greater than zero.*input of shape \(1, 1, 3, 3\)"),
    (lambda: F.conv2d(zeros(1, 1, 3, 3), zeros(0, 1, 2, 2)),
     r"conv2d: weight of shape \(0, 1, 2, 2\) has a zero-sized dimension"),
    (lambda: F.conv1d(zeros(1, 1, 3), zeros(1, 1, 0)),
     r"conv1d: weight of shape \(1, 1, 0\) has a zero-sized dimension"),
    (lambda: F.conv_transpose2d(zeros(1, 1, 3, 3), zeros(1, 1, 0, 2)),
     r"conv_transpose2d: weight of shape \(1, 1, 0, 2\) has a zero-sized dimension"),
    (lambda: F.conv_transpose2d(zeros(1, 1, 3, 3), zeros(1, 0, 2, 2)),
     r"conv_transpose2d: weight of shape \(1, 0, 2, 2\) has a zero-sized dimension"),
    (lambda: F.unfold(zeros(1, 1, 2, 2), 3),
     r"unfold: kernel_size \(3, 3\) with dilation \(1, 1\) does not fit in the image of size "
     r"\(2, 2\)"),
    (lambda: F.fold(zeros(1, 4, 5), (3, 3), 2),
     r"fold: input of shape \(1, 4, 5\) has 5 columns, but output_size \(3, 3\) .* has "
     r"2 x 2 = 4 windows"),
    (lambda: F.fold(zeros(1, 5, 4), (3, 3), 2),
     r"fold: input of shape \(1, 5, 4\): dimension 5 is not divisible by the kernel's 4 taps"),
]


@pytest.mark.parametrize("index", range(len(ERRORS)))
def test_bad_arguments_raise_one_clear_value_error(index):
    call, message = ERRORS[index]
    with pytest.raises(ValueError, match=message):
        call()


def test_mixed_dtypes_are_a_type_error():
    with pytest.raises(TypeError, match="conv2d: input, weight and bias must share one floating "
                                        "dtype, got input float32, weight float64"):
        F.conv2d(tl.Tensor(np.zeros((1, 1, 3, 3), np.float32)), zeros(1, 1, 2, 2))
    with pytest.raises(TypeError, match="conv2d: expected a floating input, got int64"):
        F.conv2d(tl.Tensor(np.zeros((1, 1, 3, 3), np.int64)), zeros(1, 1, 2, 2))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch_matches_torch(kernel_set, transposed, dtype):
    """N = 0: torch's output shape, and zero gradients of the weight and bias."""
    x = np.zeros((0, 3, 5, 5), dtype)
    w = np.ones((3, 2, 3, 3) if transposed else (4, 3, 3, 3), dtype)
    b = np.ones(2 if transposed else 4, dtype)
    ours_f, theirs_f = ((F.conv_transpose2d, TF.conv_transpose2d) if transposed
                        else (F.conv2d, TF.conv2d))
    mine, theirs = as_tl(x, w, b), as_torch(x, w, b)
    y, y_t = ours_f(*mine, stride=2), theirs_f(*theirs, stride=2)
    assert y.shape == tuple(y_t.shape) and y.dtype == dtype
    y.sum().backward()
    y_t.sum().backward()
    for a, t in zip(mine, theirs):
        assert a.grad.shape == tuple(t.grad.shape)
        np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())
