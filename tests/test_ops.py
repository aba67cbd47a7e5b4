"""Property tests for every differentiable op: forward against NumPy, backward
against finite differences (tensorlite.testing.gradcheck, float64, random
cotangent).

Inputs are kept away from points where an op is not differentiable: relu at
0, ties in max, log/sqrt of non-positive numbers. Ops that go through a kernel
(matmul, softmax, cross-entropy, gelu, layer norm, embedding, attention) run
under both kernel sets via the ``kernel_set`` fixture from conftest.py.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite import functional as F
from tensorlite.testing import gradcheck
from tensorlite.testing import strategies as tst


def assert_forward(out, expected, rtol=1e-10, atol=1e-12):
    """`out` is a Tensor with the shape and values of the NumPy result `expected`."""
    assert isinstance(out, tl.Tensor), type(out)
    expected = np.asarray(expected)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=atol)


def small_ints(low=1, high=4):
    return st.integers(low, high)


# ---------------------------------------------------------------------------
# Arithmetic with broadcasting
# ---------------------------------------------------------------------------

BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("name", list(BINARY_OPS))
@given(data=st.data())
def test_binary_op_with_broadcasting(name, data):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2), label="shapes")
    a = data.draw(tst.tensors(shape_a, min_value=-3, max_value=3), label="a")
    # keep divisors away from zero, where a / b blows up
    b = data.draw(tst.tensors(shape_b, min_value=-3, max_value=3,
                              min_magnitude=0.5 if name == "div" else None), label="b")
    op = BINARY_OPS[name]
    assert_forward(op(tl.Tensor(a), tl.Tensor(b)), op(a, b))
    assert gradcheck(op, [a, b])


@given(data=st.data())
def test_pow_tensor_exponent_with_broadcasting(data):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2), label="shapes")
    base = data.draw(tst.tensors(shape_a, min_value=0.5, max_value=3), label="base")
    exponent = data.draw(tst.tensors(shape_b, min_value=-2, max_value=2), label="exponent")
    assert_forward(tl.Tensor(base) ** tl.Tensor(exponent), base ** exponent)
    assert gradcheck(lambda a, b: a ** b, [base, exponent])


# The same lambda runs on a NumPy array (the reference) and on a Tensor, which
# covers scalar operands on either side (reflected operators: __radd__ ...).
SCALAR_OPS = {
    "x + 2.5": lambda x: x + 2.5,
    "2.5 + x": lambda x: 2.5 + x,
    "x - 2.5": lambda x: x - 2.5,
    "2.5 - x": lambda x: 2.5 - x,
    "x * -1.5": lambda x: x * -1.5,
    "-1.5 * x": lambda x: -1.5 * x,
    "3 * x (int scalar)": lambda x: 3 * x,
    "x / 4.0": lambda x: x / 4.0,
    "4.0 / x": lambda x: 4.0 / x,
    "x ** 2": lambda x: x ** 2,
    "x ** 3": lambda x: x ** 3,
    "x ** -1.0": lambda x: x ** -1.0,
    "x ** 0.5": lambda x: x ** 0.5,
    "2.0 ** x": lambda x: 2.0 ** x,
    "-x": lambda x: -x,
}


@pytest.mark.parametrize("name", list(SCALAR_OPS))
@given(x=tst.tensors(min_value=0.5, max_value=3))
def test_scalar_operands_and_reflected_operators(name, x):
    op = SCALAR_OPS[name]
    assert_forward(op(tl.Tensor(x)), op(x))
    assert gradcheck(op, [x])


@given(x=tst.tensors(min_value=-3, max_value=3, min_magnitude=0.1))
def test_integer_powers_of_negative_bases(x):
    for op in (lambda t: t ** 2, lambda t: t ** 3):
        assert_forward(op(tl.Tensor(x)), op(x))
        assert gradcheck(op, [x])


# ---------------------------------------------------------------------------
# Elementwise unary ops
# ---------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (tensorlite op, NumPy reference, element bounds keeping away from kinks)
UNARY_OPS = {
    "neg": (lambda t: -t, np.negative, dict(min_value=-5, max_value=5)),
    "exp": (lambda t: t.exp(), np.exp, dict(min_value=-5, max_value=5)),
    "log": (lambda t: t.log(), np.log, dict(min_value=0.1, max_value=10)),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, dict(min_value=0.1, max_value=10)),
    "tanh": (lambda t: t.tanh(), np.tanh, dict(min_value=-5, max_value=5)),
    "sigmoid": (lambda t: t.sigmoid(), _sigmoid, dict(min_value=-10, max_value=10)),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0),
             dict(min_value=-3, max_value=3, min_magnitude=0.01)),
}


@pytest.mark.parametrize("name", list(UNARY_OPS))
@given(data=st.data())
def test_unary_op(name, data):
    op, reference, bounds = UNARY_OPS[name]
    x = data.draw(tst.tensors(**bounds), label="x")
    assert_forward(op(tl.Tensor(x)), reference(x))
    assert gradcheck(op, [x])


def test_relu_gradient_is_zero_for_negative_inputs():
    x = tl.Tensor(np.array([-2.0, -0.5, 0.5, 2.0]), requires_grad=True)
    x.relu().backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 3.0, 4.0])


def test_sigmoid_is_stable_for_large_magnitudes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(all="raise"):  # no overflow warnings either
        out = tl.Tensor(x).sigmoid()
    np.testing.assert_allclose(out.data, [0.0, _sigmoid(-50.0), 0.5, _sigmoid(50.0), 1.0],
                               rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------------------
# Matrix multiplication
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_matmul_2d(kernel_set, data):
    n, k, m = data.draw(st.tuples(small_ints(), small_ints(), small_ints()), label="n, k, m")
    a = data.draw(tst.tensors((n, k), min_value=-2, max_value=2), label="a")
    b = data.draw(tst.tensors((k, m), min_value=-2, max_value=2), label="b")
    assert_forward(tl.Tensor(a) @ tl.Tensor(b), a @ b)
    assert gradcheck(lambda x, y: x @ y, [a, b])
    # a transposed (non-contiguous) left operand takes the same path
    a_t = np.ascontiguousarray(a.T)
    assert_forward(tl.Tensor(a_t).T @ tl.Tensor(b), a @ b)
    assert gradcheck(lambda x, y: x.T @ y, [a_t, b])


@given(data=st.data())
def test_matmul_batched_with_broadcast_batch_dims(kernel_set, data):
    batch_a, batch_b = data.draw(tst.broadcastable_shapes(2, min_dims=0, max_dims=2, max_side=3),
                                 label="batch shapes")
    n, k, m = data.draw(st.tuples(small_ints(1, 3), small_ints(1, 3), small_ints(1, 3)),
                        label="n, k, m")
    assume(len(batch_a) + len(batch_b) > 0)  # at least one side is batched
    a = data.draw(tst.tensors(batch_a + (n, k), min_value=-2, max_value=2), label="a")
    b = data.draw(tst.tensors(batch_b + (k, m), min_value=-2, max_value=2), label="b")
    assert_forward(tl.Tensor(a) @ tl.Tensor(b), np.matmul(a, b))
    assert gradcheck(lambda x, y: x @ y, [a, b])


@given(data=st.data())
def test_matmul_with_vector_operands(kernel_set, data):
    """1-D operands as in NumPy: a vector on the left is a row, on the right a column."""
    batch = data.draw(tst.shapes(min_dims=0, max_dims=2, max_side=3), label="batch")
    n, k = data.draw(st.tuples(small_ints(1, 3), small_ints(1, 3)), label="n, k")
    vector = data.draw(tst.tensors((k,), min_value=-2, max_value=2), label="vector")
    other = data.draw(tst.tensors((k,), min_value=-2, max_value=2), label="other vector")
    matrix = data.draw(tst.tensors(batch + (k, n), min_value=-2, max_value=2), label="matrix")
    matrix_t = np.ascontiguousarray(np.swapaxes(matrix, -1, -2))  # (..., n, k)
    for left, right in [(vector, matrix), (matrix_t, vector), (vector, other)]:
        assert_forward(tl.Tensor(left) @ tl.Tensor(right), np.matmul(left, right))
        assert gradcheck(lambda x, y: x @ y, [left, right])


# ---------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data())
def test_sum_and_mean_over_any_axes(name, data):
    x = data.draw(tst.tensors(min_value=-3, max_value=3), label="x")
    axis = data.draw(tst.valid_axes(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)

    def op(t):
        return getattr(t, name)(axis=axis, keepdims=keepdims)

    assert_forward(op(tl.Tensor(x)), expected)
    assert gradcheck(op, [x])


def _reduced_count(shape, axis):
    if axis is None:
        return int(np.prod(shape))
    axes = (axis,) if isinstance(axis, int) else axis
    return int(np.prod([shape[a] for a in axes]))


@given(data=st.data())
def test_var_over_any_axes(data):
    """var follows PyTorch: unbiased (correction=1) by default, correction=0 is NumPy's."""
    x = data.draw(tst.tensors(min_value=-3, max_value=3), label="x")
    axis = data.draw(tst.valid_axes(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    correction = data.draw(st.sampled_from([None, 0, 1]), label="correction")
    ddof = 1 if correction is None else correction
    assume(_reduced_count(x.shape, axis) > ddof)  # otherwise the variance is undefined
    expected = np.var(x, axis=axis, keepdims=keepdims, ddof=ddof)

    def op(t):
        if correction is None:
            return t.var(axis=axis, keepdims=keepdims)
        return t.var(axis=axis, keepdims=keepdims, correction=correction)

    assert_forward(op(tl.Tensor(x)), expected)
    assert gradcheck(op, [x])


@given(data=st.data())
def test_max_over_any_axes_without_ties(data):
    shape = data.draw(tst.shapes(), label="shape")
    # elements at least 0.25 apart: the eps=1e-6 steps never change the argmax
    x = data.draw(tst.well_separated(shape), label="x")
    axis = data.draw(tst.valid_axes(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")

    def op(t):
        return t.max(axis=axis, keepdims=keepdims)

    assert_forward(op(tl.Tensor(x)), np.max(x, axis=axis, keepdims=keepdims))
    assert gradcheck(op, [x])


def test_max_splits_the_gradient_equally_among_ties():
    """Tie-splitting, as in PyTorch's amax: each of k tied maxima gets grad / k."""
    x = tl.Tensor(np.array([[1.0, 3.0, 3.0],
                            [2.0, 2.0, 2.0],
                            [5.0, 0.0, 4.0]]), requires_grad=True)
    x.max(axis=1).backward(np.array([2.0, 3.0, 4.0]))
    np.testing.assert_allclose(x.grad, [[0.0, 1.0, 1.0],
                                        [1.0, 1.0, 1.0],
                                        [4.0, 0.0, 0.0]])

    y = tl.Tensor(np.array([[7.0, 1.0], [7.0, 7.0]]), requires_grad=True)
    y.max().backward()  # global max, three-way tie
    np.testing.assert_allclose(y.grad, [[1 / 3, 0.0], [1 / 3, 1 / 3]])

    z = tl.Tensor(np.array([[1.0, 2.0], [1.0, 0.0]]), requires_grad=True)
    z.max(axis=0, keepdims=True).backward(np.array([[6.0, 5.0]]))  # column 0 ties
    np.testing.assert_allclose(z.grad, [[3.0, 5.0], [3.0, 0.0]])


# ---------------------------------------------------------------------------
# Shape ops
# ---------------------------------------------------------------------------

@given(x=tst.tensors(min_dims=0))
def test_reshape_and_view(x):
    for new_shape in [(-1,), (x.size, 1), tuple(reversed(x.shape)), (1,) + x.shape]:
        expected = x.reshape(new_shape)
        assert_forward(tl.Tensor(x).reshape(*new_shape), expected)   # varargs form
        assert_forward(tl.Tensor(x).reshape(new_shape), expected)    # tuple form
        assert_forward(tl.Tensor(x).view(*new_shape), expected)
        assert gradcheck(lambda t: t.reshape(*new_shape), [x])


@given(data=st.data())
def test_transpose_two_axes(data):
    x = data.draw(tst.tensors(min_dims=2, max_dims=4, max_side=3), label="x")
    axis_a = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis_a")
    axis_b = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis_b")
    assert_forward(tl.Tensor(x).transpose(axis_a, axis_b), np.swapaxes(x, axis_a, axis_b))
    assert gradcheck(lambda t: t.transpose(axis_a, axis_b), [x])


@given(data=st.data())
def test_permute(data):
    x = data.draw(tst.tensors(min_dims=1, max_dims=4, max_side=3), label="x")
    dims = data.draw(st.permutations(range(x.ndim)), label="dims")
    assert_forward(tl.Tensor(x).permute(*dims), np.transpose(x, dims))
    assert gradcheck(lambda t: t.permute(*dims), [x])


@given(x=tst.tensors(shape=tst.shapes(min_dims=2, max_dims=2)))
def test_T_of_a_matrix(x):
    assert_forward(tl.Tensor(x).T, x.T)
    assert gradcheck(lambda t: t.T, [x])


# ---------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_getitem_basic_indices(data):
    """Integers, slices (steps, negative steps, empty), Ellipsis and None."""
    x = data.draw(tst.tensors(min_dims=1), label="x")
    index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True),
                      label="index")
    assert_forward(tl.Tensor(x)[index], x[index])
    assert gradcheck(lambda t: t[index], [x])


@given(data=st.data())
def test_getitem_integer_arrays_with_repeats(data):
    x = data.draw(tst.tensors(min_dims=1), label="x")
    n = x.shape[0]
    index_shape = data.draw(tst.shapes(min_dims=1, max_dims=2, max_side=5), label="index shape")
    # negative indices and repeats included: repeats must scatter-ADD in backward
    index = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(-n, n - 1)),
                      label="index")
    expected = x[index]
    assert_forward(tl.Tensor(x)[index], expected)
    assert_forward(tl.Tensor(x)[tl.Tensor(index)], expected)  # a Tensor of ints works too
    assert gradcheck(lambda t: t[index], [x])
    assert gradcheck(lambda t: t[tl.Tensor(index)], [x])


@given(data=st.data())
def test_getitem_mixed_slices_and_arrays(data):
    x = data.draw(tst.tensors(min_dims=2, max_dims=3), label="x")
    rows = data.draw(hnp.arrays(np.int64, (3,), elements=st.integers(0, x.shape[0] - 1)),
                     label="rows")
    cols = data.draw(hnp.arrays(np.int64, (3,), elements=st.integers(0, x.shape[1] - 1)),
                     label="cols")
    for index in [(slice(None), cols), (rows, cols), (rows, slice(None, None, -1)),
                  (tl.Tensor(rows), cols), (rows, Ellipsis)]:
        assert_forward(tl.Tensor(x)[index], x[index])
        assert gradcheck(lambda t: t[index], [x])


@given(data=st.data())
def test_getitem_boolean_mask(data):
    x = data.draw(tst.tensors(min_dims=1), label="x")
    mask = data.draw(hnp.arrays(np.bool_, x.shape), label="mask")
    assert_forward(tl.Tensor(x)[mask], x[mask])
    assert gradcheck(lambda t: t[mask], [x])
    rows = data.draw(hnp.arrays(np.bool_, x.shape[:1]), label="row mask")
    assert_forward(tl.Tensor(x)[rows], x[rows])
    assert gradcheck(lambda t: t[rows], [x])


def test_getitem_repeated_indices_accumulate_gradient():
    x = tl.Tensor(np.array([10.0, 20.0, 30.0]), requires_grad=True)
    x[np.array([0, 0, 2, 0, -1])].backward(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_allclose(x.grad, [7.0, 0.0, 8.0])


# ---------------------------------------------------------------------------
# Joining and splitting
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_concatenate(data):
    base = data.draw(tst.shapes(min_dims=1), label="base shape")
    axis = data.draw(st.integers(-len(base), len(base) - 1), label="axis")
    count = data.draw(st.integers(1, 3), label="count")
    arrays = []
    for i in range(count):
        shape = list(base)
        shape[axis] = data.draw(small_ints(1, 3), label=f"size {i}")
        arrays.append(data.draw(tst.tensors(tuple(shape)), label=f"array {i}"))
    expected = np.concatenate(arrays, axis=axis)
    assert_forward(tl.concatenate([tl.Tensor(a) for a in arrays], axis=axis), expected)
    assert gradcheck(lambda *ts: tl.concatenate(list(ts), axis=axis), arrays)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(tst.shapes(min_dims=0), label="shape")
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    count = data.draw(st.integers(1, 3), label="count")
    arrays = [data.draw(tst.tensors(shape), label=f"array {i}") for i in range(count)]
    assert_forward(tl.stack([tl.Tensor(a) for a in arrays], axis=axis),
                   np.stack(arrays, axis=axis))
    assert gradcheck(lambda *ts: tl.stack(list(ts), axis=axis), arrays)


@given(data=st.data())
def test_split_by_size_and_by_sizes(data):
    """PyTorch semantics: an int is a chunk size (the last chunk may be shorter),
    a list gives every chunk's size."""
    x = data.draw(tst.tensors(min_dims=1, max_side=5), label="x")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    length = x.shape[axis]
    size = data.draw(st.integers(1, length), label="size")
    cuts = sorted(data.draw(st.lists(st.integers(0, length), max_size=3), label="cuts"))
    sizes = list(np.diff([0] + cuts + [length]))

    for size_or_sizes, boundaries in [(size, list(range(size, length, size))),
                                      (sizes, list(np.cumsum(sizes)[:-1]))]:
        expected = np.split(x, boundaries, axis=axis)
        for pieces in (tl.Tensor(x).split(size_or_sizes, axis),
                       tl.split(tl.Tensor(x), size_or_sizes, axis)):
            assert len(pieces) == len(expected)
            for piece, want in zip(pieces, expected):
                assert_forward(piece, want)
        assert gradcheck(lambda t: tuple(t.split(size_or_sizes, axis)), [x])


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_where_with_broadcasting(data):
    cond_shape, a_shape, b_shape = data.draw(tst.broadcastable_shapes(3), label="shapes")
    cond = data.draw(hnp.arrays(np.bool_, cond_shape), label="cond")
    a = data.draw(tst.tensors(a_shape), label="a")
    b = data.draw(tst.tensors(b_shape), label="b")
    expected = np.where(cond, a, b)
    assert_forward(tl.where(cond, tl.Tensor(a), tl.Tensor(b)), expected)
    assert_forward(tl.where(tl.Tensor(cond), tl.Tensor(a), tl.Tensor(b)), expected)
    assert gradcheck(lambda x, y: tl.where(cond, x, y), [a, b])


@given(data=st.data())
def test_where_with_a_comparison_and_a_scalar_branch(data):
    x = data.draw(tst.tensors(min_magnitude=0.1), label="x")
    assert_forward(tl.where(tl.Tensor(x) > 0, tl.Tensor(x), 0.0), np.where(x > 0, x, 0.0))
    assert gradcheck(lambda t: tl.where(t > 0, t, 0.0), [x])


@given(data=st.data())
def test_masked_fill(data):
    x = data.draw(tst.tensors(min_dims=1), label="x")
    # a mask that broadcasts to x: some sides set to 1, some leading dims dropped
    ones = data.draw(st.lists(st.booleans(), min_size=x.ndim, max_size=x.ndim), label="ones")
    dropped = data.draw(st.integers(0, x.ndim - 1), label="dropped")
    mask_shape = tuple(1 if one else side for one, side in zip(ones, x.shape))[dropped:]
    mask = data.draw(hnp.arrays(np.bool_, mask_shape), label="mask")
    value = data.draw(st.sampled_from([0.0, -1e9, 2.5]), label="value")
    assert_forward(tl.Tensor(x).masked_fill(mask, value), np.where(mask, value, x))
    assert_forward(tl.Tensor(x).masked_fill(tl.Tensor(mask), value), np.where(mask, value, x))
    assert gradcheck(lambda t: t.masked_fill(mask, value), [x])
    # -inf is the usual fill value for attention masks
    out = tl.Tensor(x).masked_fill(mask, -np.inf)
    np.testing.assert_array_equal(out.data, np.where(mask, -np.inf, x))


# ---------------------------------------------------------------------------
# functional: softmax family
# ---------------------------------------------------------------------------

def np_log_softmax(x, axis=-1):
    shift = np.max(x, axis=axis, keepdims=True)
    shifted = x - np.where(np.isfinite(shift), shift, 0.0)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def np_softmax(x, axis=-1):
    return np.exp(np_log_softmax(x, axis))


@given(data=st.data())
def test_softmax_and_log_softmax_over_any_axis(kernel_set, data):
    x = data.draw(tst.tensors(min_dims=1, min_value=-5, max_value=5), label="x")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    assert_forward(F.softmax(tl.Tensor(x), axis=axis), np_softmax(x, axis))
    assert_forward(F.log_softmax(tl.Tensor(x), axis=axis), np_log_softmax(x, axis))
    assert gradcheck(lambda t: F.softmax(t, axis=axis), [x])
    assert gradcheck(lambda t: F.log_softmax(t, axis=axis), [x])


@given(x=tst.logits(max_magnitude=1e4, allow_neg_inf=True))
def test_softmax_and_log_softmax_are_stable_for_huge_and_masked_logits(kernel_set, x):
    probabilities = F.softmax(tl.Tensor(x), axis=-1)
    assert_forward(probabilities, np_softmax(x))
    np.testing.assert_allclose(probabilities.data.sum(axis=-1), 1.0, rtol=1e-12)
    log_probabilities = F.log_softmax(tl.Tensor(x), axis=-1)
    finite = np.isfinite(x)
    np.testing.assert_array_equal(np.isfinite(log_probabilities.data), finite)  # -inf stays -inf
    np.testing.assert_allclose(log_probabilities.data[finite], np_log_softmax(x)[finite],
                               rtol=1e-10, atol=1e-9)
    assert gradcheck(lambda t: F.softmax(t, axis=-1), [x])
    # a -inf output has no meaningful derivative (-inf - anything = -inf), so zero the
    # cotangent there by filling those entries, as a loss that never reads them would
    assert gradcheck(lambda t: F.log_softmax(t, axis=-1).masked_fill(~finite, 0.0), [x])


def np_cross_entropy(logits, targets, ignore_index):
    counted = targets != ignore_index
    rows = np.flatnonzero(counted)
    per_row = -np_log_softmax(logits)[rows, targets[rows]]
    return per_row.mean() if len(rows) else np.nan


@st.composite
def cross_entropy_problems(draw, max_magnitude=20.0, allow_neg_inf=False):
    """(logits, targets, ignore_index); targets always point at finite logits."""
    logits = draw(tst.logits(max_magnitude=max_magnitude, allow_neg_inf=allow_neg_inf))
    n, c = logits.shape
    ignore_index = draw(st.sampled_from([-100, -1, 1]))
    targets = np.empty(n, dtype=np.int64)
    for row in range(n):
        finite_classes = np.flatnonzero(np.isfinite(logits[row]))
        targets[row] = draw(st.sampled_from(list(finite_classes)))
    ignored = draw(hnp.arrays(np.bool_, (n,)))
    targets[ignored] = ignore_index
    # at least one row must count, or the loss is nan (tested separately)
    assume(np.any(targets != ignore_index))
    return logits, targets, ignore_index


@given(problem=cross_entropy_problems())
def test_cross_entropy_with_ignore_index(kernel_set, problem):
    logits, targets, ignore_index = problem

    def loss_fn(z, t):
        return F.cross_entropy(z, t, ignore_index=ignore_index)

    expected = np_cross_entropy(logits, targets, ignore_index)
    assert_forward(loss_fn(tl.Tensor(logits), targets), expected)
    assert_forward(loss_fn(tl.Tensor(logits), tl.Tensor(targets)), expected)
    # the integer targets pass through gradcheck undifferentiated
    assert gradcheck(loss_fn, [logits, targets])


@given(problem=cross_entropy_problems(max_magnitude=1e4, allow_neg_inf=True))
def test_cross_entropy_is_stable_for_huge_and_masked_logits(kernel_set, problem):
    logits, targets, ignore_index = problem
    loss = F.cross_entropy(tl.Tensor(logits), targets, ignore_index=ignore_index)
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), np_cross_entropy(logits, targets, ignore_index),
                               rtol=1e-10, atol=1e-9)
    assert gradcheck(lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index), [logits])


def test_cross_entropy_flattens_leading_axes(kernel_set):
    """(B, T, C) logits with (B, T) targets equal the flattened (B*T, C) problem."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 5))
    targets = rng.integers(0, 5, size=(2, 3))
    targets[1, 2] = -100
    loss = F.cross_entropy(tl.Tensor(logits), targets)
    flat = np_cross_entropy(logits.reshape(6, 5), targets.reshape(6), -100)
    np.testing.assert_allclose(loss.item(), flat, rtol=1e-12)
    assert gradcheck(lambda z: F.cross_entropy(z, targets), [logits])


def test_cross_entropy_default_ignore_index_and_all_ignored(kernel_set):
    logits = np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    loss = F.cross_entropy(tl.Tensor(logits), np.array([2, -100]))
    np.testing.assert_allclose(loss.item(), -np_log_softmax(logits)[0, 2])
    all_ignored = F.cross_entropy(tl.Tensor(logits), np.array([-100, -100]))
    assert np.isnan(all_ignored.item())  # mean over zero rows, as in PyTorch


# ---------------------------------------------------------------------------
# functional: gelu, layer_norm, embedding, dropout, linear, attention
# ---------------------------------------------------------------------------

def np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


@given(x=tst.tensors(min_value=-5, max_value=5))
def test_gelu_tanh_form(kernel_set, x):
    assert_forward(F.gelu(tl.Tensor(x), approximate="tanh"), np_gelu(x))
    assert gradcheck(lambda t: F.gelu(t, approximate="tanh"), [x])


def np_layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@given(data=st.data())
def test_layer_norm_with_and_without_affine(kernel_set, data):
    leading = data.draw(tst.shapes(min_dims=0, max_dims=2, max_side=3), label="leading")
    channels = data.draw(st.integers(2, 5), label="channels")
    # distinct values: rows never have (near) zero variance, where layer norm is
    # smooth but too curved for finite differences
    x = data.draw(tst.well_separated(leading + (channels,)), label="x")
    weight = data.draw(st.none() | tst.tensors((channels,), min_value=-2, max_value=2),
                       label="weight")
    bias = data.draw(st.none() | tst.tensors((channels,), min_value=-2, max_value=2),
                     label="bias")
    eps = data.draw(st.sampled_from([1e-5, 1e-2]), label="eps")

    def op(t, w, b):
        return F.layer_norm(t, t.shape[-1:], w, b, eps=eps)

    as_tensor = [None if v is None else tl.Tensor(v) for v in (x, weight, bias)]
    assert_forward(op(*as_tensor), np_layer_norm(x, weight, bias, eps), rtol=1e-9, atol=1e-10)
    assert gradcheck(op, [x, weight, bias])  # None inputs are passed through


def test_layer_norm_of_a_constant_row_is_finite(kernel_set):
    x = tl.Tensor(np.full((2, 4), 3.0), requires_grad=True)
    bias = np.array([0.5, -1.0, 0.0, 2.0])
    y = F.layer_norm(x, (4,), tl.Tensor(np.ones(4)), tl.Tensor(bias))
    np.testing.assert_allclose(y.data, np.broadcast_to(bias, (2, 4)), atol=1e-6)
    y.backward(np.arange(8.0).reshape(2, 4))
    assert np.all(np.isfinite(x.grad))


@given(data=st.data())
def test_embedding_with_repeated_indices(kernel_set, data):
    vocab = data.draw(st.integers(1, 5), label="vocab")
    dim = data.draw(st.integers(1, 4), label="dim")
    weight = data.draw(tst.tensors((vocab, dim)), label="weight")
    index_shape = data.draw(tst.shapes(min_dims=1, max_dims=2, max_side=5), label="index shape")
    index = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, vocab - 1)),
                      label="index")
    assert_forward(F.embedding(index, tl.Tensor(weight)), weight[index])
    assert_forward(F.embedding(tl.Tensor(index), tl.Tensor(weight)), weight[index])
    assert gradcheck(F.embedding, [index, weight])


def test_embedding_gradient_accumulates_repeated_rows(kernel_set):
    weight = tl.Tensor(np.zeros((3, 2)), requires_grad=True)
    out = F.embedding(np.array([[0, 2], [0, 0]]), weight)
    out.backward(np.arange(8.0).reshape(2, 2, 2))
    # row 0 is used three times: (0,1) + (4,5) + (6,7)
    np.testing.assert_allclose(weight.grad, [[10.0, 13.0], [0.0, 0.0], [2.0, 3.0]])


def seed_dropout(seed):
    """Fix the random stream dropout draws from."""
    if hasattr(tl, "manual_seed"):
        tl.manual_seed(seed)
    np.random.seed(seed)


@given(x=tst.tensors(min_value=-3, max_value=3))
def test_dropout_is_the_identity_for_p0_and_in_eval(x):
    for p, training in [(0.0, True), (0.5, False), (0.9, False)]:
        out = F.dropout(tl.Tensor(x), p, training)
        assert_forward(out, x, rtol=0, atol=0)
        assert gradcheck(lambda t: F.dropout(t, p, training), [x])


def test_dropout_mask_is_consistent_between_forward_and_backward():
    p = 0.3
    x_data = np.random.default_rng(1).uniform(0.5, 2.0, size=4000) * np.where(
        np.arange(4000) % 2, 1.0, -1.0)  # no zeros, so a zero output means "dropped"
    seed_dropout(123)
    x = tl.Tensor(x_data, requires_grad=True)
    out = F.dropout(x, p, True)
    kept = out.data != 0
    # kept elements are scaled by 1 / (1 - p), so the expected value is unchanged
    np.testing.assert_allclose(out.data[kept], x_data[kept] / (1 - p), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.05
    cotangent = np.random.default_rng(2).standard_normal(x_data.shape)
    out.backward(cotangent)
    np.testing.assert_allclose(x.grad, np.where(kept, cotangent / (1 - p), 0.0), rtol=1e-12)

    # the same seed gives the same mask
    seed_dropout(123)
    again = F.dropout(tl.Tensor(x_data), p, True)
    np.testing.assert_array_equal(again.data != 0, kept)


@given(x=tst.tensors(min_value=-3, max_value=3, min_magnitude=0.1))
def test_dropout_gradient_with_a_fixed_seed(x):
    def op(t):
        seed_dropout(7)  # same mask on every call, so finite differences make sense
        return F.dropout(t, 0.5, True)

    assert gradcheck(op, [x])


def test_dropout_with_p1_drops_everything_without_nans():
    x = tl.Tensor(np.ones((3, 4)), requires_grad=True)
    out = F.dropout(x, 1.0, True)
    np.testing.assert_array_equal(out.data, 0.0)
    out.backward(np.ones((3, 4)))
    np.testing.assert_array_equal(x.grad, 0.0)


@given(data=st.data())
def test_linear_with_and_without_bias(kernel_set, data):
    leading = data.draw(tst.shapes(min_dims=0, max_dims=2, max_side=3), label="leading")
    n_in = data.draw(st.integers(1, 4), label="in")
    n_out = data.draw(st.integers(1, 4), label="out")
    x = data.draw(tst.tensors(leading + (n_in,), min_value=-2, max_value=2), label="x")
    weight = data.draw(tst.tensors((n_out, n_in), min_value=-2, max_value=2), label="weight")
    bias = data.draw(st.none() | tst.tensors((n_out,), min_value=-2, max_value=2), label="bias")
    expected = x @ weight.T + (0.0 if bias is None else bias)
    as_tensor = [None if v is None else tl.Tensor(v) for v in (x, weight, bias)]
    assert_forward(F.linear(*as_tensor), expected)
    assert gradcheck(F.linear, [x, weight, bias])


def np_attention(q, k, v, is_causal):
    t_q, t_k, head_size = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(head_size)
    if is_causal:
        # query i sits at absolute position i + Tk - Tq (aligned to the END of the keys)
        visible = np.arange(t_k)[None, :] <= np.arange(t_q)[:, None] + (t_k - t_q)
        scores = np.where(visible, scores, -np.inf)
    return np_softmax(scores, axis=-1) @ v


@given(data=st.data())
def test_scaled_dot_product_attention(kernel_set, data):
    batch = data.draw(st.integers(1, 2), label="B")
    heads = data.draw(st.integers(1, 2), label="nh")
    t_k = data.draw(st.integers(1, 4), label="Tk")
    is_causal = data.draw(st.booleans(), label="is_causal")
    # causal attention needs Tq <= Tk (a KV cache holds earlier keys); Tq < Tk included
    t_q = data.draw(st.integers(1, t_k) if is_causal else st.integers(1, 4), label="Tq")
    head_size = data.draw(st.integers(1, 4), label="hs")
    q = data.draw(tst.tensors((batch, heads, t_q, head_size), min_value=-2, max_value=2), label="q")
    k = data.draw(tst.tensors((batch, heads, t_k, head_size), min_value=-2, max_value=2), label="k")
    v = data.draw(tst.tensors((batch, heads, t_k, head_size), min_value=-2, max_value=2), label="v")

    def attention(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, is_causal=is_causal)

    assert_forward(attention(tl.Tensor(q), tl.Tensor(k), tl.Tensor(v)),
                   np_attention(q, k, v, is_causal))
    assert gradcheck(attention, [q, k, v])


def test_causal_attention_with_one_query_sees_every_key(kernel_set):
    """Decoding with a KV cache: the single newest query attends to all keys."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 1, 4))
    k = rng.standard_normal((1, 2, 5, 4))
    v = rng.standard_normal((1, 2, 5, 4))
    causal = F.scaled_dot_product_attention(tl.Tensor(q), tl.Tensor(k), tl.Tensor(v), is_causal=True)
    full = F.scaled_dot_product_attention(tl.Tensor(q), tl.Tensor(k), tl.Tensor(v), is_causal=False)
    np.testing.assert_allclose(causal.data, full.data, rtol=1e-12)


# ---------------------------------------------------------------------------
# dtypes: float32 stays float32 through every op
# ---------------------------------------------------------------------------

FLOAT32_OPS = {
    "add scalar": lambda t: t + 1.5,
    "rsub scalar": lambda t: 1.5 - t,
    "mul": lambda t: t * t,
    "div scalar": lambda t: 2.0 / t,
    "pow": lambda t: t ** 2,
    "exp": lambda t: t.exp(),
    "log": lambda t: t.log(),
    "sqrt": lambda t: t.sqrt(),
    "tanh": lambda t: t.tanh(),
    "sigmoid": lambda t: t.sigmoid(),
    "relu": lambda t: t.relu(),
    "sum": lambda t: t.sum(axis=0),
    "mean": lambda t: t.mean(),
    "var": lambda t: t.var(axis=-1),
    "max": lambda t: t.max(axis=1),
    "matmul": lambda t: t @ t.T,
    "softmax": lambda t: F.softmax(t),
    "log_softmax": lambda t: F.log_softmax(t),
    "gelu": lambda t: F.gelu(t),
    "layer_norm": lambda t: F.layer_norm(t, (3,), tl.ones(3), tl.zeros(3)),
    "linear": lambda t: F.linear(t, tl.ones((2, 3)), tl.zeros(2)),
    "cross_entropy": lambda t: F.cross_entropy(t, np.array([0, 2])),
    "masked_fill": lambda t: t.masked_fill(np.array([True, False, True]), -1.0),
    "attention": lambda t: F.scaled_dot_product_attention(
        t.reshape(1, 1, 2, 3), t.reshape(1, 1, 2, 3), t.reshape(1, 1, 2, 3)),
}


@pytest.mark.parametrize("name", list(FLOAT32_OPS))
def test_float32_inputs_give_float32_outputs_and_gradients(kernel_set, name):
    x_data = np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 3.25]], dtype=np.float32)
    x = tl.Tensor(x_data, requires_grad=True)
    out = FLOAT32_OPS[name](x)
    assert out.dtype == np.float32, f"{name}: {out.dtype}"
    out.sum().backward()
    assert x.grad.dtype == np.float32, f"{name} gradient: {x.grad.dtype}"
    # and float32 agrees with float64 to float32 precision
    out64 = FLOAT32_OPS[name](tl.Tensor(x_data.astype(np.float64)))
    np.testing.assert_allclose(out.data, out64.data, rtol=2e-5, atol=2e-6)
