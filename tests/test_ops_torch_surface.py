"""The PyTorch-named ops of `tensorlite.ops` (abs, clamp, min/max with dim, topk, cumsum, norm,
prod, einsum, gather, ...): for each, a forward check against NumPy, a gradient check against
central finite differences (float64, random cotangent) and a second-derivative check
(`gradgradcheck`), on inputs drawn by Hypothesis, broadcasting shapes where the op broadcasts.

Each entry of CASES draws one problem `(fn, inputs, reference)`: `fn` takes Tensors, `reference`
the same inputs as NumPy arrays. `SECOND_ORDER_COVERS` (every registry name and op class the
cases exercise) is what tests/test_double_backward.py adds to its own coverage. Inputs stay away
from kinks (abs at 0, clamp at its bounds, ties in max) as in tests/test_ops.py. After the
property tests come the semantics PyTorch users rely on (indices, ties, zeros in prod, the two
keyword spellings) and the error messages.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite.inplace import IN_PLACE_METHODS  # checked in test_inplace_and_hooks
from tensorlite import ops
from tensorlite.testing import gradcheck, gradgradcheck
from tensorlite.testing import strategies as tst

SMALL = dict(max_dims=3, max_side=3)
# A double-backward check costs several first-order ones: a third of the profile's examples.
fewer_examples = settings(max_examples=max(5, settings.default.max_examples // 3))


def small_tensors(shape=None, **bounds):
    bounds.setdefault("min_value", -2)
    bounds.setdefault("max_value", 2)
    return tst.tensors(shape, **SMALL, **bounds) if shape is None else tst.tensors(shape, **bounds)


def separated(data, shape=None, min_dims=0, label="x"):
    """Elements at least 0.2 apart (no ties, finite differences never reorder them)."""
    if shape is None:
        shape = data.draw(tst.shapes(min_dims=min_dims, **SMALL), label=f"{label} shape")
    return data.draw(tst.well_separated(shape), label=label)


def a_dim(data, ndim, label="dim"):
    return data.draw(st.integers(-max(ndim, 1), max(ndim, 1) - 1), label=label)


CASES = {}


def case(*covers):
    """Register a problem drawer; `covers` names the registry entries and op classes it checks."""
    def register(draw_problem):
        CASES[draw_problem.__name__] = (draw_problem, covers)
        return draw_problem
    return register


# ---------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------

UNARY = {
    # name: (tensorlite, NumPy, bounds of the elements)
    "sin": (tl.Tensor.sin, np.sin, dict(min_value=-4, max_value=4)),
    "cos": (tl.Tensor.cos, np.cos, dict(min_value=-4, max_value=4)),
    "log1p": (tl.Tensor.log1p, np.log1p, dict(min_value=-0.5, max_value=3)),
    "expm1": (tl.Tensor.expm1, np.expm1, dict(min_value=-3, max_value=3)),
    "square": (tl.Tensor.square, np.square, dict(min_value=-3, max_value=3)),
    "rsqrt": (tl.Tensor.rsqrt, lambda x: 1 / np.sqrt(x), dict(min_value=0.3, max_value=4)),
}


def _unary_case(name, op_class):
    method, reference, bounds = UNARY[name]

    def draw_problem(data):
        return method, (data.draw(small_tensors(**bounds), label="x"),), reference
    draw_problem.__name__ = name
    case(name, op_class)(draw_problem)


for _name, _class in [("sin", "Sin"), ("cos", "Cos"), ("log1p", "Log1p"), ("expm1", "Expm1"),
                      ("square", "Square"), ("rsqrt", "Rsqrt")]:
    _unary_case(_name, _class)


@case("abs", "__abs__", "Abs")
def abs_(data):
    x = data.draw(small_tensors(min_magnitude=0.1), label="x")
    # times x: abs alone has a zero second derivative
    return (lambda t: abs(t) * t + tl.ops.abs(t)), (x,), (lambda a: np.abs(a) * a + np.abs(a))


def _away_from(values, points, gap=1e-3):
    for p in points:
        assume(np.all(np.abs(values - p) > gap))


@case("clamp", "clip", "Clamp")
def clamp(data):
    x = data.draw(small_tensors(), label="x")
    low, high = data.draw(st.sampled_from([(-0.5, 0.7), (None, 0.3), (-1.0, None)]),
                          label="bounds")
    _away_from(x, [b for b in (low, high) if b is not None])
    method = data.draw(st.sampled_from(["clamp", "clip"]), label="spelling")
    return ((lambda t: getattr(t, method)(low, high) * t), (x,),
            (lambda a: np.clip(a, low, high) * a))


@case("clamp", "Maximum", "Minimum")
def clamp_with_tensor_bounds(data):
    shape_x, shape_low = data.draw(tst.broadcastable_shapes(2, **SMALL), label="shapes")
    x = data.draw(small_tensors(shape_x), label="x")
    low = data.draw(small_tensors(shape_low, min_value=-2, max_value=0), label="low")
    _away_from(x - low, [0.0])
    _away_from(x, [1.0])
    return ((lambda t, lo: t.clamp(min=lo, max=1.0) * t), (x, low),
            (lambda a, lo: np.minimum(np.maximum(a, lo), 1.0) * a))


@case("maximum", "minimum", "Maximum", "Minimum")
def maximum_and_minimum(data):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2, **SMALL), label="shapes")
    a = data.draw(small_tensors(shape_a), label="a")
    b = data.draw(small_tensors(shape_b), label="b")
    _away_from(a - b, [0.0])
    return ((lambda s, t: tl.ops.maximum(s, t) * s + s.minimum(t) * t), (a, b),
            (lambda s, t: np.maximum(s, t) * s + np.minimum(s, t) * t))


@case("sign", "floor", "ceil", "round", "StepFunction")
def step_functions(data):
    whole = data.draw(small_tensors(elements=st.integers(-3, 3).map(float)), label="whole part")
    frac = data.draw(tst.tensors(whole.shape, min_value=0.1, max_value=0.4), label="fraction")
    x = whole + frac  # away from integers and half-integers: no jump within eps
    assume(np.all(np.abs(x) > 0.05))
    return ((lambda t: t.sign() * t + t.floor() * t + t.ceil() + t.round() * t * t), (x,),
            (lambda a: np.sign(a) * a + np.floor(a) * a + np.ceil(a) + np.round(a) * a * a))


# ---------------------------------------------------------------------------
# Reductions and scans
# ---------------------------------------------------------------------------

@case("max", "min")
def max_and_min_with_dim(data):
    x = separated(data)
    dim = a_dim(data, x.ndim)
    keepdim = data.draw(st.booleans(), label="keepdim")
    axis = dim % max(x.ndim, 1)

    def reference(a):
        if a.ndim == 0:
            return a * a + a
        return (np.max(a, axis=axis, keepdims=keepdim) ** 2
                + np.min(a, axis=axis, keepdims=keepdim))
    return ((lambda t: t.max(dim, keepdim=keepdim).values ** 2 + t.min(dim=dim,
                                                                     keepdim=keepdim)[0]),
            (x,), reference)


@case("amax", "amin", "min", "Max", "Min")
def amax_amin_and_min_over_axes(data):
    x = separated(data)
    axis = data.draw(tst.valid_axes(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    return ((lambda t: t.amax(dim=axis, keepdim=keepdims) ** 2
             + t.min(axis=axis, keepdims=keepdims) * t.amin(axis, keepdims)), (x,),
            (lambda a: np.max(a, axis=axis, keepdims=keepdims) ** 2
             + np.min(a, axis=axis, keepdims=keepdims) ** 2))


@case("topk", "sort")
def topk_and_sort(data):
    x = separated(data, min_dims=1)
    dim = a_dim(data, x.ndim)
    k = data.draw(st.integers(0, x.shape[dim]), label="k")
    largest = data.draw(st.booleans(), label="largest")
    descending = data.draw(st.booleans(), label="descending")

    def reference(a):
        ordered = np.sort(a, axis=dim)
        top = np.flip(ordered, dim) if largest else ordered
        top = np.take(top, np.arange(k), axis=dim)
        by_sort = np.flip(ordered, dim) if descending else ordered
        return np.concatenate([top ** 2, by_sort * np.take(a, [0], axis=dim)], axis=dim)
    return ((lambda t: tl.ops.concatenate(
        [t.topk(k, dim, largest=largest).values ** 2,
         t.sort(dim=dim, descending=descending)[0] * t.index_select(dim, [0])], dim=dim)),
            (x,), reference)


@case("cumsum", "CumSum")
def cumsum(data):
    x = data.draw(small_tensors(), label="x")
    dim = a_dim(data, x.ndim)
    return ((lambda t: t.cumsum(dim) * t), (x,),
            (lambda a: np.cumsum(a.reshape(-1) if a.ndim == 0 else a, axis=dim).reshape(a.shape)
             * a))


@case("logsumexp", "LogSumExp")
def logsumexp(data):
    x = data.draw(small_tensors(min_value=-5, max_value=5), label="x")
    dim = data.draw(tst.valid_axes(x.ndim), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")
    return ((lambda t: t.logsumexp(dim, keepdim)), (x,),
            (lambda a: np.log(np.sum(np.exp(a), axis=dim, keepdims=keepdim))))


@case("std")
def std(data):
    x = separated(data, min_dims=1)
    dim = data.draw(tst.valid_axes(x.ndim), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")
    correction = data.draw(st.sampled_from([0, 1]), label="correction")
    count = x.size if dim is None else int(np.prod(np.array(x.shape)[list(np.atleast_1d(dim))]))
    assume(count >= 2)  # one element: a zero std, whose gradient is infinite
    return ((lambda t: t.std(dim=dim, keepdim=keepdim, correction=correction)), (x,),
            (lambda a: np.std(a, axis=dim, keepdims=keepdim, ddof=correction)))


@case("norm", "Norm")
def norm(data):
    magnitudes = separated(data)
    magnitudes = np.abs(magnitudes) + 0.3  # distinct magnitudes, away from 0 (the p=1 kink)
    signs = data.draw(hnp.arrays(np.float64, magnitudes.shape,
                                 elements=st.sampled_from([-1.0, 1.0])), label="signs")
    x = magnitudes * signs
    assume(len(np.unique(np.abs(x))) == x.size)
    p = data.draw(st.sampled_from([2, 1, np.inf, -np.inf, 3, 1.5, 0, "fro"]), label="p")
    dim = data.draw(tst.valid_axes(x.ndim), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")

    def reference(a):
        axes = tuple(range(a.ndim)) if dim is None else dim
        absolute = np.abs(a)
        if p in (2, "fro"):
            return np.sqrt(np.sum(a * a, axis=axes, keepdims=keepdim))
        if p == np.inf:
            return np.max(absolute, axis=axes, keepdims=keepdim)
        if p == -np.inf:
            return np.min(absolute, axis=axes, keepdims=keepdim)
        if p == 0:
            return np.sum(a != 0, axis=axes, keepdims=keepdim).astype(a.dtype)
        return np.sum(absolute ** p, axis=axes, keepdims=keepdim) ** (1 / p)
    # times the norm again, so that p = 1, inf have a non-zero second derivative
    return (lambda t: t.norm(p, dim, keepdim) * t.norm(p, dim, keepdim)), (x,), (
        lambda a: reference(a) ** 2)


@case("prod", "Prod", "ProductOfOthers")
def prod_with_zeros(data):
    x = data.draw(small_tensors(), label="x")
    zeros = data.draw(hnp.arrays(bool, x.shape), label="zeros")
    x = np.where(zeros, 0.0, x)  # exact zeros, one or several per row
    dim = data.draw(st.none() | st.integers(-max(x.ndim, 1), max(x.ndim, 1) - 1), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")

    def reference(a):
        if dim is None:
            out = np.prod(a)
            return out.reshape((1,) * a.ndim) if keepdim else out
        return np.prod(a, axis=dim if a.ndim else None, keepdims=keepdim and a.ndim > 0)
    return (lambda t: t.prod(dim, keepdim=keepdim)), (x,), reference


# ---------------------------------------------------------------------------
# Shape ops
# ---------------------------------------------------------------------------

@case("flatten", "squeeze", "unsqueeze")
def flatten_squeeze_unsqueeze(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=2),
                      label="shape")
    x = data.draw(small_tensors(shape), label="x")
    start = data.draw(st.integers(0, x.ndim - 1), label="start_dim")
    end = data.draw(st.integers(start, x.ndim - 1), label="end_dim")
    new = data.draw(st.integers(-x.ndim - 1, x.ndim), label="unsqueeze dim")
    squeeze_dim = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1), label="squeeze dim")
    flat_shape = x.shape[:start] + (-1,) + x.shape[end + 1:]

    def squeezed(a):
        if squeeze_dim is None:
            return np.squeeze(a)
        return np.squeeze(a, squeeze_dim) if a.shape[squeeze_dim] == 1 else a
    return ((lambda t: (t.flatten(start, end) * 2, t.unsqueeze(new) * t.unsqueeze(new),
                        tl.ops.squeeze(t, squeeze_dim) ** 3)), (x,),
            (lambda a: (a.reshape(flat_shape) * 2, np.expand_dims(a, new) ** 2,
                        squeezed(a) ** 3)))


@case("expand", "repeat", "Repeat")
def expand_and_repeat(data):
    x = data.draw(small_tensors(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1,
                                                 max_side=2)), label="x")
    leading = data.draw(st.lists(st.integers(1, 3), max_size=2), label="new axes")
    expand_to = tuple(leading) + tuple(data.draw(st.integers(1, 3)) if n == 1 else
                                       data.draw(st.sampled_from([n, -1])) for n in x.shape)
    final = tuple(leading) + tuple(old if n == -1 else n
                                   for n, old in zip(expand_to[len(leading):], x.shape))
    times = tuple(leading) + tuple(data.draw(st.integers(1, 3), label="times")
                                   for _ in x.shape)
    return ((lambda t: (t.expand(*expand_to) * 1.5, t.repeat(times) * t.repeat(*times))), (x,),
            (lambda a: (np.broadcast_to(a, final) * 1.5, np.tile(a, times) ** 2)))


@case("chunk", "split")
def chunk_and_split(data):
    x = data.draw(small_tensors(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1,
                                                 max_side=5)), label="x")
    dim = a_dim(data, x.ndim)
    chunks = data.draw(st.integers(1, 4), label="chunks")
    size = -(-x.shape[dim] // chunks)
    edges = list(range(size, x.shape[dim], size))
    return ((lambda t: tuple(piece * piece for piece in t.chunk(chunks, dim))
             + tuple(piece * 3 for piece in t.split(size, dim=dim))), (x,),
            (lambda a: tuple(p * p for p in np.split(a, edges, axis=dim))
             + tuple(p * 3 for p in np.split(a, edges, axis=dim))))


@case("index_select", "gather", "scatter_add")
def index_select_gather_scatter_add(data):
    x = data.draw(small_tensors(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1,
                                                 max_side=3)), label="x")
    dim = a_dim(data, x.ndim)
    axis = dim % x.ndim
    picks = data.draw(hnp.arrays(np.int64, data.draw(st.integers(0, 4), label="picks"),
                                 elements=st.integers(-x.shape[axis], x.shape[axis] - 1)),
                      label="index_select index")
    # gather / scatter_add: index no larger than x outside dim, any length along dim
    index_shape = tuple(data.draw(st.integers(1, n), label="index side") if d != axis else
                        data.draw(st.integers(1, 3), label="index length")
                        for d, n in enumerate(x.shape))
    index = data.draw(hnp.arrays(np.int64, index_shape,
                                 elements=st.integers(0, x.shape[axis] - 1)), label="index")
    src_shape = tuple(n + data.draw(st.integers(0, 1), label="src extra") for n in index_shape)
    src = data.draw(small_tensors(src_shape), label="src")

    def reference(a, s):
        gathered = np.take_along_axis(a[tuple(slice(0, n) if d != axis else slice(None)
                                              for d, n in enumerate(index_shape))], index, axis)
        scattered = a.copy()
        for position in np.ndindex(*index_shape):
            target = list(position)
            target[axis] = index[position]
            scattered[tuple(target)] += s[position]
        return np.take(a, picks, axis=axis) ** 2, gathered * gathered, scattered * scattered
    return ((lambda t, s: (t.index_select(dim, picks) ** 2, t.gather(dim, index) ** 2,
                           t.scatter_add(dim, tl.Tensor(index), s) ** 2)), (x, src), reference)


# ---------------------------------------------------------------------------
# einsum
# ---------------------------------------------------------------------------

EINSUM_SPECS = {
    # spec: operand shapes as functions of sizes (n, k, m)
    "ij,jk->ik": lambda n, k, m: [(n, k), (k, m)],
    "ij,jk": lambda n, k, m: [(n, k), (k, m)],
    "bij,bjk->bik": lambda n, k, m: [(2, n, k), (2, k, m)],
    "...ij,...jk->...ik": lambda n, k, m: [(2, 1, n, k), (3, k, m)],
    "ij->i": lambda n, k, m: [(n, k)],
    "ij->": lambda n, k, m: [(n, k)],
    "i,j->ij": lambda n, k, m: [(n,), (k,)],
    "ijk->kji": lambda n, k, m: [(n, k, m)],
    "ij,kj,k->i": lambda n, k, m: [(n, k), (m, k), (m,)],
    "i...->...": lambda n, k, m: [(n, k, m)],
}


@case("Einsum")
def einsum(data):
    spec = data.draw(st.sampled_from(list(EINSUM_SPECS)), label="spec")
    sizes = data.draw(st.tuples(*[st.integers(1, 3)] * 3), label="n, k, m")
    operands = tuple(data.draw(small_tensors(shape), label=f"operand {i}")
                     for i, shape in enumerate(EINSUM_SPECS[spec](*sizes)))
    # squared, so that the second derivative of a linear-per-operand product is non-zero
    return ((lambda *ts: tl.ops.einsum(spec, *ts) ** 2), operands,
            (lambda *arrays: np.einsum(spec, *arrays) ** 2))


# ---------------------------------------------------------------------------
# Keywords and conversions
# ---------------------------------------------------------------------------

@case("to", "float", "double", "Cast")
def conversions(data):
    x = data.draw(small_tensors(), label="x")
    return ((lambda t: t.to("float64") * t.double() + t.to(tl.float64) + t.to(np.float64, "cpu")),
            (x,), (lambda a: a * a + 2 * a))


@case("pow", "clone", "contiguous", "cpu", "t", "tril", "triu", "softmax", "log_softmax")
def torch_named_methods(data):
    x = data.draw(small_tensors(), label="x")
    diagonal = data.draw(st.integers(-1, 1), label="diagonal")

    def outer(a):
        return a.reshape(-1, 1) * a.reshape(1, -1)

    def softmax(a, axis):
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    return ((lambda t: outer(t.clone().cpu()).t().contiguous().tril(diagonal)
             + outer(t).triu(diagonal + 1).pow(2) + outer(t).softmax(0) * outer(t).log_softmax(1)),
            (x,),
            (lambda a: np.tril(outer(a).T, diagonal) + np.triu(outer(a), diagonal + 1) ** 2
             + softmax(outer(a), 0) * np.log(softmax(outer(a), 1))))


@case("sum", "mean", "var")
def reductions_with_torch_keywords(data):
    x = separated(data, min_dims=1)
    dim = data.draw(tst.valid_axes(x.ndim), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")
    assume(dim is not None or x.size > 1)
    assume(dim is None or int(np.prod(np.array(x.shape)[list(np.atleast_1d(dim))])) > 1)
    return ((lambda t: (t.sum(dim=dim, keepdim=keepdim) ** 2, t.mean(dim, keepdim) * 3,
                        t.var(dim=dim, keepdim=keepdim, unbiased=False))), (x,),
            (lambda a: (np.sum(a, axis=dim, keepdims=keepdim) ** 2,
                        np.mean(a, axis=dim, keepdims=keepdim) * 3,
                        np.var(a, axis=dim, keepdims=keepdim))))


# ---------------------------------------------------------------------------
# The property checks
# ---------------------------------------------------------------------------

SECOND_ORDER_COVERS = frozenset(name for _, covers in CASES.values() for name in covers)


def _as_outputs(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_forward_matches_numpy(name, data):
    fn, inputs, reference = CASES[name][0](data)
    outs = _as_outputs(fn(*[tl.Tensor(a) for a in inputs]))
    expected = _as_outputs(reference(*inputs))
    assert len(outs) == len(expected)
    for out, want in zip(outs, expected):
        want = np.asarray(want)
        assert out.shape == want.shape, (out.shape, want.shape)
        np.testing.assert_allclose(out.data, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    fn, inputs, _ = CASES[name][0](data)
    assert gradcheck(fn, list(inputs))


@pytest.mark.parametrize("name", list(CASES))
@fewer_examples
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    fn, inputs, _ = CASES[name][0](data)
    assert gradgradcheck(fn, list(inputs))


def test_every_new_registry_entry_is_checked_or_has_no_gradient():
    """Each registry entry is covered here, in tests/test_double_backward.py's older cases, or
    listed in ops.NO_GRADIENT_METHODS."""
    older = {"__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
             "__rtruediv__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__neg__",
             "__getitem__", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "max",
             "reshape", "view", "transpose", "swapaxes", "permute", "T", "masked_fill", "astype"}
    missing = set(ops.TENSOR_METHODS) - SECOND_ORDER_COVERS - older - ops.NO_GRADIENT_METHODS
    missing -= set(IN_PLACE_METHODS)
    assert not missing, f"registry entries without a check: {sorted(missing)}"


# ---------------------------------------------------------------------------
# Semantics PyTorch users rely on
# ---------------------------------------------------------------------------

def test_max_and_min_with_dim_return_values_and_indices_and_route_the_gradient_to_the_index():
    x = tl.Tensor(np.array([[1.0, 3.0, 3.0], [5.0, 0.0, 4.0]]), requires_grad=True)
    values, indices = x.max(1)
    assert indices.dtype == np.int64 and indices.tolist() == [1, 0]
    assert values.tolist() == [3.0, 5.0]
    result = x.max(dim=1, keepdim=True)
    assert result.values.shape == (2, 1) and result.indices.shape == (2, 1)
    values.backward(np.array([2.0, 7.0]))
    # one index per row, as torch: the first of the tied maxima gets the whole gradient
    np.testing.assert_array_equal(x.grad, [[0.0, 2.0, 0.0], [7.0, 0.0, 0.0]])
    assert x.min(0).indices.tolist() == [0, 1, 0]
    # without dim, or with the old axis= spelling: values only, as before
    assert x.max().item() == 5.0 and x.max(axis=1).tolist() == [3.0, 5.0]
    assert tl.ops.max(x, tl.Tensor(np.full((2, 3), 2.0))).tolist() == [[2.0, 3.0, 3.0],
                                                                       [5.0, 2.0, 4.0]]


def test_maximum_and_minimum_split_ties_equally():
    a = tl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = tl.Tensor(np.array([1.0, 5.0, 0.0]), requires_grad=True)
    tl.ops.maximum(a, b).backward(np.array([4.0, 4.0, 4.0]))
    np.testing.assert_array_equal(a.grad, [2.0, 0.0, 4.0])
    np.testing.assert_array_equal(b.grad, [2.0, 4.0, 0.0])


def test_argmax_argmin_topk_sort_follow_torch():
    x = tl.Tensor(np.array([[3.0, 1.0, 3.0, 2.0], [0.0, 4.0, 4.0, -1.0]]))
    assert x.argmax().item() == 5 and x.argmin().item() == 7  # flat index without dim
    assert x.argmax(dim=1).tolist() == [0, 1]
    assert x.argmin(1, keepdim=True).shape == (2, 1) and x.argmax().dtype == np.int64
    values, indices = x.topk(2)
    assert values.tolist() == [[3.0, 3.0], [4.0, 4.0]] and indices.tolist() == [[0, 2], [1, 2]]
    assert x.topk(1, dim=0, largest=False).indices.tolist() == [[1, 0, 0, 1]]
    assert x.sort(descending=True).values.tolist() == [[3.0, 3.0, 2.0, 1.0],
                                                      [4.0, 4.0, 0.0, -1.0]]
    assert x.sort(dim=0).indices.tolist() == [[1, 0, 0, 1], [0, 1, 1, 0]]
    assert x.argsort(dim=1).tolist() == [[1, 3, 0, 2], [3, 0, 1, 2]]


def test_prod_gradient_is_right_with_one_and_with_two_zeros():
    x = tl.Tensor(np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 4.0]]),
                  requires_grad=True)
    x.prod(1).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 4.0, 2.0]])


def test_norm_gradient_at_zero_is_zero_not_nan():
    for p in (2, 1, np.inf, 3):
        x = tl.Tensor(np.zeros((2, 3)), requires_grad=True)
        x.norm(p).backward()
        np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))


def test_logsumexp_is_stable():
    x = tl.Tensor(np.array([[1e4, 1e4], [-np.inf, -np.inf], [-1e4, 0.0]]))
    out = x.logsumexp(dim=1)
    np.testing.assert_allclose(out.data, [1e4 + np.log(2), -np.inf, 0.0])


def test_integer_and_boolean_operators_have_no_gradient():
    a, b = tl.Tensor(np.array([7, -7, 9])), tl.Tensor(np.array([2, 2, 4]))
    assert (a // b).tolist() == [3, -4, 2] and (a % b).tolist() == [1, 1, 1]
    assert (20 // b).tolist() == [10, 10, 5] and (9 % b).tolist() == [1, 1, 1]
    assert (a & b).tolist() == [2, 0, 0] and (a | 1).tolist() == [7, -7, 9]
    assert (a ^ b).tolist() == [5, -5, 13] and (3 ^ b).tolist() == [1, 1, 7]
    mask = tl.Tensor(np.array([True, False]))
    assert (~mask).tolist() == [False, True] and (mask | ~mask).tolist() == [True, True]
    x = tl.Tensor(np.array([1.5, -2.5]), requires_grad=True)
    assert not (x // 1).requires_grad and (x // 1).tolist() == [1.0, -3.0]
    assert abs(x).tolist() == [1.5, 2.5] and abs(x).requires_grad


def test_step_functions_have_zero_gradient():
    x = tl.Tensor(np.array([-1.5, 0.5, 2.5, 0.0]), requires_grad=True)
    (x.sign() + x.floor() + x.ceil() + x.round()).sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros(4))
    assert x.round().tolist() == [-2.0, 0.0, 2.0, 0.0]  # half to even, as torch


def test_both_keyword_spellings_work_and_passing_both_names_the_op():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(dim=1, keepdim=True).tolist() == x.sum(axis=1, keepdims=True).tolist()
    assert x.mean(dim=0).tolist() == x.mean(axis=0).tolist()
    assert tl.ops.cat([x, x], dim=1).shape == tl.ops.concatenate([x, x], axis=1).shape == (2, 6)
    assert tl.ops.stack([x, x], dim=2).shape == (2, 3, 2)
    assert [p.shape for p in x.split(2, dim=1)] == [(2, 2), (2, 1)]
    for call, op in [(lambda: x.sum(dim=0, axis=0), "sum"), (lambda: x.mean(1, axis=1), "mean"),
                     (lambda: x.max(dim=0, axis=0), "max"), (lambda: x.var(0, axis=0), "var"),
                     (lambda: x.std(keepdim=True, keepdims=True), "std"),
                     (lambda: x.logsumexp(0, axis=0), "logsumexp"),
                     (lambda: x.norm(2, 0, axis=0), "norm"), (lambda: x.prod(0, axis=0), "prod"),
                     (lambda: x.cumsum(0, axis=0), "cumsum"),
                     (lambda: x.argmax(0, axis=0), "argmax"),
                     (lambda: tl.ops.cat([x], dim=0, axis=0), "concatenate"),
                     (lambda: x.split(1, dim=0, axis=0), "split"),
                     (lambda: x.var(correction=1, unbiased=True), "var")]:
        with pytest.raises(TypeError, match=op):
            call()


def test_conversions_numel_and_tolist():
    x = tl.Tensor(np.array([[1.5, -2.0]], dtype=np.float32), requires_grad=True)
    assert x.numel() == 2 and x.tolist() == [[1.5, -2.0]]
    assert x.double().dtype == np.float64 and x.float().dtype == np.float32
    assert x.to("float64").dtype == np.float64 and x.to(tl.float32) is x
    assert x.long().tolist() == [[1, -2]] and not x.long().requires_grad
    y = x.double()
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [[3.0, -4.0]]
    with pytest.raises(TypeError, match="to: .*float16"):
        x.to("float16")
    with pytest.raises(TypeError, match="to: "):
        x.to("not a dtype")


def test_scatter_add_accumulates_repeated_indices():
    x = tl.Tensor(np.zeros((2, 3)), requires_grad=True)
    src = tl.Tensor(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), requires_grad=True)
    index = np.array([[0, 1, 0], [0, 1, 1]])
    out = x.scatter_add(0, index, src)
    np.testing.assert_array_equal(out.data, [[5.0, 0.0, 3.0], [0.0, 7.0, 6.0]])
    out.backward(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_array_equal(src.grad, [[1.0, 5.0, 3.0], [1.0, 5.0, 6.0]])
    np.testing.assert_array_equal(x.grad, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


# ---------------------------------------------------------------------------
# Errors name the op and the offending shapes, dims or dtypes
# ---------------------------------------------------------------------------

ERRORS = {
    "gather index ndim": (lambda x: x.gather(1, np.array([0, 1])), ValueError,
                          r"gather: index must have as many dimensions .*\(2, 3\).*\(2,\)"),
    "gather index too large": (lambda x: x.gather(1, np.array([[0], [1], [2]])), ValueError,
                               r"gather: index shape \(3, 1\) is larger than the input shape"),
    "gather index values": (lambda x: x.gather(1, np.array([[3]])), IndexError,
                            r"gather: index values .* out of range for dim 1 of size 3"),
    "gather float index": (lambda x: x.gather(1, np.array([[0.0]])), TypeError,
                           r"gather: index must hold integers, got dtype float64"),
    "dim out of range": (lambda x: x.max(dim=2), IndexError,
                         r"max: dim 2 is out of range for a tensor with 2 dimensions"),
    "topk k too large": (lambda x: x.topk(4), ValueError,
                         r"topk: k=4 is out of range for dim -1 of size 3 \(shape \(2, 3\)\)"),
    "sort dim": (lambda x: x.sort(dim=-3), IndexError, r"sort: dim -3 is out of range"),
    "cumsum dim": (lambda x: x.cumsum(5), IndexError, r"cumsum: dim 5 is out of range"),
    "cumsum without dim": (lambda x: x.cumsum(), TypeError, r"cumsum: missing the dim"),
    "logsumexp dim": (lambda x: x.logsumexp(3), ValueError, r"logsumexp: axis 3 is out of"),
    "norm p": (lambda x: x.norm(-1), ValueError, r"norm: p=-1 is not supported"),
    "prod dim": (lambda x: x.prod(2), IndexError, r"prod: dim 2 is out of range"),
    "sum dim": (lambda x: x.sum(dim=4), ValueError, r"sum: axis 4 is out of bounds"),
    "flatten": (lambda x: x.flatten(1, 0), ValueError, r"flatten: start_dim 1 comes after"),
    "unsqueeze": (lambda x: x.unsqueeze(3), IndexError,
                  r"unsqueeze: dim 3 is out of range for a tensor of shape \(2, 3\)"),
    "expand": (lambda x: x.expand(4, 3), ValueError,
               r"expand: a tensor of shape \(2, 3\) cannot be broadcast to shape \(4, 3\)"),
    "expand -1 leading": (lambda x: x.expand(-1, 2, 3), ValueError, r"expand: -1 is not allowed"),
    "repeat": (lambda x: x.repeat(2), ValueError, r"repeat: sizes \(2,\) do not fit .*\(2, 3\)"),
    "chunk": (lambda x: x.chunk(0), ValueError, r"chunk: chunks must be a positive int"),
    "index_select 2-D": (lambda x: x.index_select(0, np.array([[0]])), ValueError,
                         r"index_select: index must be 1-D, got shape \(1, 1\)"),
    "index_select range": (lambda x: x.index_select(0, [2]), IndexError,
                           r"index_select: index values in \[2, 2\] are out of range"),
    "scatter_add src": (lambda x: x.scatter_add(0, np.array([[0, 1]]), tl.Tensor(np.ones((1, 1)))),
                        ValueError, r"scatter_add: index shape \(1, 2\) is larger than the src"),
    "einsum operands": (lambda x: tl.ops.einsum("ij,jk->ik", x), ValueError,
                        r"einsum: 'ij,jk->ik' has 2 operands, got 1"),
    "einsum diagonal": (lambda x: tl.ops.einsum("ii->i", x), ValueError,
                        r"einsum: index 'i' repeats in operand 0"),
    "einsum ndim": (lambda x: tl.ops.einsum("ijk->i", x), ValueError,
                    r"einsum: subscripts 'ijk' name 3 dimensions, but the operand has shape"),
    "einsum sizes": (lambda x: tl.ops.einsum("ij,ij->i", x, x.T), ValueError,
                     r"einsum: index 'i' of 'ij,ij->i' has sizes 2 and 3"),
    "maximum shapes": (lambda x: tl.ops.maximum(x, x.T), ValueError,
                       r"maximum: shapes \(2, 3\) and \(3, 2\) cannot be broadcast"),
    "clamp no bounds": (lambda x: x.clamp(), ValueError, r"clamp: at least one of min and max"),
    "invert float": (lambda x: ~x, TypeError, r"bitwise_not \(~\): not supported for dtype "
                                              r"float64"),
    "and float": (lambda x: x & x, TypeError, r"bitwise_and \(&\): not supported for dtypes "
                                              r"float64 and float64"),
    "split sizes": (lambda x: x.split([1, 1], dim=1), ValueError,
                    r"split: sizes \[1, 1\] add up to 2, but axis 1"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_names_the_op_and_the_offender(name):
    call, error, message = ERRORS[name]
    with pytest.raises(error, match=message):
        call(tl.Tensor(np.arange(6.0).reshape(2, 3)))
