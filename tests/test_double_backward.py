"""Second derivatives of every op: `tl.testing.gradgradcheck` (double backward against finite
differences of the first-order vector-Jacobian product, float64, random cotangents) on inputs
drawn by Hypothesis, broadcasting shapes included.

Each entry of CASES draws one problem `(fn, inputs)` and names the registry methods and op classes
it exercises; `test_every_op_has_a_second_derivative_case` fails when an op is added to
`tensorlite.ops`, `tensorlite.functional` or the Tensor registry without a case here. As in
tests/test_ops.py, inputs stay away from kinks (relu at 0, ties in max) and from the edges of a
domain (log, sqrt), where finite differences of a first derivative mean nothing.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite.inplace import IN_PLACE_METHODS  # checked in test_inplace_and_hooks
from tensorlite import functional as F
from tensorlite import losses, ops
from tensorlite.testing import gradgradcheck
from tensorlite.testing import strategies as tst

# A double-backward check costs about four times a first-order one per element, so a third of the
# profile's examples (at least 5) keeps this file within seconds in CI; the `intense` profile
# still runs hundreds.
fewer_examples = settings(max_examples=max(5, settings.default.max_examples // 3))

SMALL = dict(max_dims=3, max_side=3)


def small_tensors(shape=None, **bounds):
    bounds.setdefault("min_value", -2)
    bounds.setdefault("max_value", 2)
    return tst.tensors(shape, **SMALL, **bounds) if shape is None else tst.tensors(shape, **bounds)


def two_broadcastable(data, left=None, right=None):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2, **SMALL), label="shapes")
    a = data.draw(tst.tensors(shape_a, **(left or dict(min_value=-2, max_value=2))), label="a")
    b = data.draw(tst.tensors(shape_b, **(right or dict(min_value=-2, max_value=2))), label="b")
    return a, b


CASES = {}


def case(*covers):
    """Register a problem drawer under its name; `covers` lists the registry names and op
    classes whose double backward it exercises."""
    def register(draw_problem):
        CASES[draw_problem.__name__] = (draw_problem, covers)
        return draw_problem
    return register


# ---------------------------------------------------------------------------
# Arithmetic (broadcasting), including reflected operators and scalar operands
# ---------------------------------------------------------------------------

@case("__add__", "__radd__", "Add")
def add(data):
    return (lambda x, y: x + y + 1.5 + (2.0 + x)), two_broadcastable(data)


@case("__sub__", "__rsub__", "Sub")
def sub(data):
    return (lambda x, y: (x - y) * (1.5 - y) - (x - 2.0)), two_broadcastable(data)


@case("__mul__", "__rmul__", "Mul")
def mul(data):
    return (lambda x, y: x * y * y * -1.5 + 3 * x * x), two_broadcastable(data)


@case("__truediv__", "__rtruediv__", "Div")
def div(data):
    away_from_zero = dict(min_value=-2, max_value=2, min_magnitude=0.5)
    return (lambda x, y: x / y + 2.0 / y + x / 4.0), two_broadcastable(data, right=away_from_zero)


@case("__neg__", "Neg")
def neg(data):
    return (lambda x: -(x * x)), (data.draw(small_tensors(), label="x"),)


@case("__pow__", "__rpow__", "Pow")
def pow_tensor_exponent(data):
    positive = dict(min_value=0.5, max_value=2)
    return (lambda b, e: b ** e + 2.0 ** e), two_broadcastable(data, left=positive)


@case("__pow__", "Pow")
def pow_scalar_exponents(data):
    x = data.draw(small_tensors(min_value=0.5, max_value=2), label="x")
    exponent = data.draw(st.sampled_from([2, 3, -1.0, 0.5, 2.5]), label="exponent")
    return (lambda t: t ** exponent), (x,)


# ---------------------------------------------------------------------------
# Matrix products
# ---------------------------------------------------------------------------

@case("__matmul__", "__rmatmul__", "matmul", "MatMul")
def matmul(data):
    batch_a, batch_b = data.draw(tst.broadcastable_shapes(2, max_dims=2, max_side=2),
                                 label="batch shapes")
    n, k, m = data.draw(st.tuples(*[st.integers(1, 3)] * 3), label="n, k, m")
    vector_left, vector_right = data.draw(st.booleans(), label="a 1-D"), data.draw(
        st.booleans(), label="b 1-D")
    shape_a = (k,) if vector_left else batch_a + (n, k)
    shape_b = (k,) if vector_right else batch_b + (k, m)
    a = data.draw(small_tensors(shape_a), label="a")
    b = data.draw(small_tensors(shape_b), label="b")
    # a product of the result with itself makes the second derivative non-zero
    return (lambda x, y: (x @ y) * tl.matmul(x, y)), (a, b)


# ---------------------------------------------------------------------------
# Elementwise functions
# ---------------------------------------------------------------------------

UNARY = {
    "exp": (lambda t: t.exp(), dict(min_value=-2, max_value=2), ("exp", "Exp")),
    "log": (lambda t: t.log(), dict(min_value=0.5, max_value=4), ("log", "Log")),
    "sqrt": (lambda t: t.sqrt(), dict(min_value=0.5, max_value=4), ("sqrt", "Sqrt")),
    "tanh": (lambda t: t.tanh(), dict(min_value=-3, max_value=3), ("tanh", "Tanh")),
    "sigmoid": (lambda t: t.sigmoid(), dict(min_value=-5, max_value=5), ("sigmoid", "Sigmoid")),
    # relu's second derivative is 0 away from the kink; the product makes the check non-trivial
    "relu": (lambda t: t.relu() * t.relu(), dict(min_value=-2, max_value=2, min_magnitude=0.1),
             ("relu", "Relu")),
    "F.relu": (lambda t: F.relu(t) * t, dict(min_value=-2, max_value=2, min_magnitude=0.1),
               ("F.relu",)),
    "F.gelu": (F.gelu, dict(min_value=-4, max_value=4),
               ("F.gelu", "GeluErf", "GeluErfBackward", "NormalCdf")),
    "F.gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), dict(min_value=-4, max_value=4),
                    ("Gelu", "GeluBackward")),
    "cast": (lambda t: t.astype(np.float64) * t, dict(min_value=-2, max_value=2),
             ("Cast", "astype")),
    "pow": (lambda t: t.pow(3) + tl.pow(1.5, t), dict(min_value=-2, max_value=2), ("pow",)),
    "clone": (lambda t: t.clone() * t, dict(min_value=-2, max_value=2), ("clone", "Clone")),
    "contiguous": (lambda t: (t.reshape(-1, 1) * t.reshape(1, -1)).T.contiguous() * 2,
                   dict(min_value=-2, max_value=2), ("contiguous",)),
    "cpu": (lambda t: t.cpu() * t, dict(min_value=-2, max_value=2), ("cpu",)),
    "t": (lambda t: (t.reshape(-1, 1) * t.reshape(1, -1)).t() * t.reshape(1, -1),
          dict(min_value=-2, max_value=2), ("t",)),
    "tril/triu": (lambda t: (t.reshape(-1, 1) * t.reshape(1, -1)).tril(-1)
                  + tl.triu(t.reshape(-1, 1) * t.reshape(1, -1), 1) * 3,
                  dict(min_value=-2, max_value=2), ("tril", "triu", "Triangle")),
    "softmax methods": (lambda t: t.softmax(-1) * t.log_softmax(dim=-1),
                        dict(min_value=-2, max_value=2), ("softmax", "log_softmax")),
}


def unary_case(name):
    fn, bounds, covers = UNARY[name]

    def draw_problem(data):
        return fn, (data.draw(small_tensors(**bounds), label="x"),)
    draw_problem.__name__ = name
    case(*covers)(draw_problem)


for _name in UNARY:
    unary_case(_name)


# ---------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------

def reduction_case(name, method_covers, make_fn, values=None):
    def draw_problem(data):
        x = data.draw(values(data) if values else small_tensors(), label="x")
        axis = data.draw(tst.valid_axes(x.ndim), label="axis")
        keepdims = data.draw(st.booleans(), label="keepdims")
        fn = make_fn(axis, keepdims, data)
        return (lambda t: fn(t) * fn(t)), (x,)  # squared: a non-zero second derivative
    draw_problem.__name__ = name
    case(*method_covers)(draw_problem)


reduction_case("sum", ("sum", "Sum"), lambda axis, keepdims, data: (
    lambda t: t.sum(axis=axis, keepdims=keepdims)))
reduction_case("mean", ("mean", "Mean"), lambda axis, keepdims, data: (
    lambda t: t.mean(axis=axis, keepdims=keepdims)))
# well separated values: the eps-steps never change which element is the largest
reduction_case("max", ("max", "Max"), lambda axis, keepdims, data: (
    lambda t: t.max(axis=axis, keepdims=keepdims)),
    values=lambda data: tst.well_separated(tst.shapes(**SMALL)))


@case("var", "Var")
def var(data):
    x = data.draw(small_tensors(), label="x")
    axis = data.draw(tst.valid_axes(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    correction = data.draw(st.sampled_from([0, 1]), label="correction")
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    count = int(np.prod([x.shape[a] for a in axes]))
    if count <= correction:
        correction = 0  # otherwise the variance is undefined
    return (lambda t: t.var(axis=axis, keepdims=keepdims, correction=correction)), (x,)


# ---------------------------------------------------------------------------
# Shape ops and indexing (linear: the check is on the recorded backward's cotangent path)
# ---------------------------------------------------------------------------

@case("reshape", "view", "Reshape")
def reshape(data):
    x = data.draw(small_tensors(), label="x")
    shape = data.draw(st.sampled_from([(-1,), (x.size, 1), tuple(reversed(x.shape))]),
                      label="shape")
    return (lambda t: t.reshape(*shape) * t.view(shape)), (x,)


@case("transpose", "Transpose")
def transpose(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=2, max_dims=3, max_side=3)), label="x")
    a, b = data.draw(st.tuples(*[st.integers(-x.ndim, x.ndim - 1)] * 2), label="axes")
    return (lambda t: t.transpose(a, b) * t.transpose(a, b).exp()), (x,)


@case("permute", "T", "Permute")
def permute(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, max_dims=3, max_side=3)), label="x")
    dims = data.draw(st.permutations(range(x.ndim)), label="dims")
    return (lambda t: (t.permute(*dims).tanh(), t.T * t.T)), (x,)


@case("__getitem__", "GetItem")
def getitem(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, max_dims=3, max_side=3)), label="x")
    if data.draw(st.booleans(), label="integer array index"):
        # repeated rows: backward scatter-adds, double backward gathers
        index = data.draw(hnp.arrays(np.int64, st.integers(1, 5),
                                     elements=st.integers(-x.shape[0], x.shape[0] - 1)),
                          label="rows")
    else:
        index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True),
                          label="index")
    return (lambda t: t[index] * t[index]), (x,)


@case("split")
def split(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, max_dims=3, max_side=3)), label="x")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    size = data.draw(st.integers(1, x.shape[axis]), label="size")
    return (lambda t: tuple(piece * piece for piece in t.split(size, axis))), (x,)


@case("Concatenate")
def concatenate(data):
    base = data.draw(tst.shapes(min_dims=1, max_dims=3, max_side=3), label="base shape")
    axis = data.draw(st.integers(-len(base), len(base) - 1), label="axis")
    arrays = []
    for i in range(data.draw(st.integers(1, 3), label="count")):
        shape = list(base)
        shape[axis] = data.draw(st.integers(1, 2), label=f"size {i}")
        arrays.append(data.draw(small_tensors(tuple(shape)), label=f"array {i}"))
    return (lambda *ts: tl.concatenate([t * t for t in ts], axis=axis).exp()), arrays


@case("Stack")
def stack(data):
    shape = data.draw(tst.shapes(max_dims=2, max_side=3), label="shape")
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    arrays = [data.draw(small_tensors(shape), label=f"array {i}")
              for i in range(data.draw(st.integers(1, 3), label="count"))]
    return (lambda *ts: tl.stack(list(ts), axis=axis).tanh()), arrays


@case("Where")
def where(data):
    cond_shape, a_shape, b_shape = data.draw(tst.broadcastable_shapes(3, **SMALL), label="shapes")
    cond = data.draw(hnp.arrays(np.bool_, cond_shape), label="cond")
    a = data.draw(small_tensors(a_shape), label="a")
    b = data.draw(small_tensors(b_shape), label="b")
    return (lambda x, y: tl.where(cond, x * y, y.exp())), (a, b)


@case("masked_fill", "MaskedFill")
def masked_fill(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, max_dims=3, max_side=3)), label="x")
    mask = data.draw(hnp.arrays(np.bool_, hnp.broadcastable_shapes(x.shape, max_dims=x.ndim)),
                     label="mask")
    value = data.draw(st.sampled_from([0.0, -1e9, 2.5]), label="value")
    # The fill value is a constant of the output (not multiplied by t): a -1e9 times t would
    # leave finite differences of the first derivative with ~0.1 of cancellation error.
    return (lambda t: (t * t * t).masked_fill(mask, value) + t * t), (x,)


# ---------------------------------------------------------------------------
# functional: fused ops
# ---------------------------------------------------------------------------

@case("F.softmax", "Softmax", "SoftmaxBackward", "F.log_softmax", "LogSoftmax",
      "LogSoftmaxBackward")
def softmax_and_log_softmax(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL), min_value=-3, max_value=3),
                  label="x")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    return (lambda t: (F.softmax(t, axis=axis), F.log_softmax(t, axis=axis))), (x,)


@case("F.cross_entropy", "CrossEntropy", "CrossEntropyBackward")
def cross_entropy(data):
    n, c = data.draw(st.integers(1, 4), label="rows"), data.draw(st.integers(2, 4), label="classes")
    logits = data.draw(small_tensors((n, c), min_value=-4, max_value=4), label="logits")
    ignore_index = data.draw(st.sampled_from([-100, 1]), label="ignore_index")
    targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)), label="targets")
    if np.all(targets == ignore_index):
        targets[0] = 0  # at least one row counts, else the loss is nan
    return (lambda z, t: F.cross_entropy(z, t, ignore_index=ignore_index)), (logits, targets)


@case("F.layer_norm", "LayerNorm")
def layer_norm(data):
    leading = data.draw(tst.shapes(max_dims=2, max_side=2), label="leading")
    channels = data.draw(st.integers(2, 4), label="channels")
    # distinct values: rows never have (near) zero variance
    x = data.draw(tst.well_separated(leading + (channels,)), label="x")
    weight = data.draw(st.none() | small_tensors((channels,)), label="weight")
    bias = data.draw(st.none() | small_tensors((channels,)), label="bias")
    return (lambda t, w, b: F.layer_norm(t, t.shape[-1:], w, b, eps=1e-5)), (x, weight, bias)


@case("F.embedding", "Embedding", "EmbeddingBackward")
def embedding(data):
    vocab, dim = data.draw(st.integers(1, 4), label="vocab"), data.draw(st.integers(1, 3), label="dim")
    weight = data.draw(small_tensors((vocab, dim)), label="weight")
    index = data.draw(hnp.arrays(np.int64, tst.shapes(min_dims=1, max_dims=2, max_side=4),
                                 elements=st.integers(0, vocab - 1)), label="index")
    return (lambda i, w: F.embedding(i, w) * F.embedding(i, w)), (index, weight)


@case("F.dropout", "Dropout")
def dropout(data):
    x = data.draw(small_tensors(), label="x")
    p = data.draw(st.sampled_from([0.25, 0.5]), label="p")

    def fn(t):
        tl.manual_seed(7)  # the same mask on every call, so finite differences make sense
        return F.dropout(t, p, True) * t
    return fn, (x,)


@case("F.linear", "Linear")
def linear(data):
    leading = data.draw(tst.shapes(max_dims=2, max_side=2), label="leading")
    n_in, n_out = data.draw(st.integers(1, 3), label="in"), data.draw(st.integers(1, 3), label="out")
    x = data.draw(small_tensors(leading + (n_in,)), label="x")
    weight = data.draw(small_tensors((n_out, n_in)), label="weight")
    bias = data.draw(st.none() | small_tensors((n_out,)), label="bias")
    return (lambda t, w, b: F.linear(t, w, b).tanh()), (x, weight, bias)


@case("F.scaled_dot_product_attention", "ScaledDotProductAttention")
def scaled_dot_product_attention(data):
    heads = data.draw(st.integers(1, 2), label="nh")
    t_k = data.draw(st.integers(1, 3), label="Tk")
    is_causal = data.draw(st.booleans(), label="is_causal")
    t_q = data.draw(st.integers(1, t_k) if is_causal else st.integers(1, 3), label="Tq")
    hs = data.draw(st.integers(1, 3), label="hs")
    q = data.draw(small_tensors((1, heads, t_q, hs)), label="q")
    k = data.draw(small_tensors((1, heads, t_k, hs)), label="k")
    v = data.draw(small_tensors((1, heads, t_k, hs)), label="v")
    return (lambda q_, k_, v_: F.scaled_dot_product_attention(q_, k_, v_, is_causal=is_causal)), \
        (q, k, v)


# ---------------------------------------------------------------------------
# PyTorch's wider surface: more elementwise functions, reductions, shape and index ops
# ---------------------------------------------------------------------------

def away_from(points, low=-2.0, high=2.0, gap=0.1):
    """Floats in [low, high] at least `gap` from each of `points` (kinks, clamp bounds)."""
    edges = [low] + sorted(points) + [high]
    pieces = [st.floats(a + gap * (a != low), b - gap * (b != high))
              for a, b in zip(edges, edges[1:]) if b - a > 2 * gap]
    return st.one_of(*pieces)


MORE_UNARY = {
    "abs": (lambda t: abs(t) * t.abs().exp(), dict(min_magnitude=0.1), ("abs", "__abs__", "Abs")),
    "sin": (lambda t: t.sin(), {}, ("sin", "Sin")),
    "cos": (lambda t: t.cos(), {}, ("cos", "Cos")),
    "log1p": (lambda t: t.log1p(), dict(min_value=-0.5, max_value=3), ("log1p", "Log1p")),
    "expm1": (lambda t: t.expm1(), {}, ("expm1", "Expm1")),
    "square": (lambda t: t.square() * t, {}, ("square", "Square")),
    "rsqrt": (lambda t: t.rsqrt(), dict(min_value=0.5, max_value=4), ("rsqrt", "Rsqrt")),
    # piecewise constant: zero derivatives, away from their jumps (0 and the integers)
    "step_functions": (lambda t: t.sign() * t + t.floor() * t * t + t.ceil() + t.round() * t,
                       dict(min_value=-0.4, max_value=0.4, min_magnitude=0.1),
                       ("sign", "floor", "ceil", "round", "StepFunction")),
    # float64 to float64: Cast's backward in the graph; `float` (to float32) is too coarse for
    # finite differences and shares this backward
    "to_double": (lambda t: t.to(np.float64) * t.double(), {}, ("to", "double", "float")),
}

for _name, (_fn, _bounds, _covers) in MORE_UNARY.items():
    UNARY[_name] = (_fn, dict(dict(min_value=-2, max_value=2), **_bounds), _covers)
    unary_case(_name)


@case("clamp", "clip", "Clamp")
def clamp(data):
    x = data.draw(tst.tensors(tst.shapes(**SMALL), elements=away_from([-1.0, 1.0])), label="x")
    return (lambda t: (t.clamp(-1.0, 1.0) * t, t.clip(min=-1.0) ** 2, t.clamp(max=1.0) ** 3)), (x,)


@case("maximum", "minimum", "Maximum", "Minimum")
def maximum_and_minimum(data):
    shape_a, shape_b = data.draw(tst.broadcastable_shapes(2, **SMALL), label="shapes")
    size_a = int(np.prod(shape_a, dtype=np.int64))
    # one well-separated pool for both: no ties between a and b, whatever broadcasts to what
    pool = data.draw(tst.well_separated((size_a + int(np.prod(shape_b, dtype=np.int64)),)),
                     label="values")
    a, b = pool[:size_a].reshape(shape_a), pool[size_a:].reshape(shape_b)
    return (lambda x, y: ops.maximum(x, y) * ops.minimum(x, y) + x.clamp(min=y) ** 2), (a, b)


def one_dim(data, x):
    return data.draw(st.integers(-x.ndim, x.ndim - 1), label="dim")


@case("min", "amax", "amin", "Min")
def min_max_with_dim(data):
    x = data.draw(tst.well_separated(tst.shapes(min_dims=1, **SMALL)), label="x")
    d, keep = one_dim(data, x), data.draw(st.booleans(), label="keepdim")
    axes = data.draw(tst.valid_axes(x.ndim), label="amax dims")
    return (lambda t: (t.max(dim=d, keepdim=keep).values ** 2, t.min(dim=d).values ** 2,
                       t.min() * t.max(), t.amax(dim=axes) ** 2, t.amin(dim=axes) ** 2)), (x,)


@case("std")
def std(data):
    # two or more distinct values per row: std is not differentiable where it is 0
    x = data.draw(tst.well_separated(tst.shapes(min_dims=1, max_dims=3, min_side=2, max_side=3)),
                  label="x")
    d, keep = one_dim(data, x), data.draw(st.booleans(), label="keepdim")
    correction = data.draw(st.sampled_from([0, 1]), label="correction")
    return (lambda t: (t.std(dim=d, keepdim=keep, correction=correction), t.std(correction=0))), (x,)


@case("norm", "Norm")
def norm(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL), min_magnitude=0.2), label="x")
    p = data.draw(st.sampled_from([2, 1, 3, 0.5]), label="p")
    d = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1), label="dim")
    return (lambda t: t.norm(p=p, dim=d)), (x,)


@case("prod", "Prod", "ProductOfOthers")
def prod(data):
    x = data.draw(small_tensors(tst.shapes(**SMALL), min_magnitude=0.3), label="x")
    d = data.draw(st.none() | st.integers(-max(x.ndim, 1), max(x.ndim, 1) - 1), label="dim")
    return (lambda t: t.prod(dim=d)), (x,)


@case("logsumexp", "LogSumExp")
def logsumexp(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL), min_value=-3, max_value=3),
                  label="x")
    axes, keep = data.draw(tst.valid_axes(x.ndim), label="dim"), data.draw(st.booleans())
    return (lambda t: t.logsumexp(dim=axes, keepdim=keep)), (x,)


@case("cumsum", "CumSum")
def cumsum(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL)), label="x")
    d = one_dim(data, x)
    return (lambda t: t.cumsum(dim=d) ** 2), (x,)


@case("sort", "topk")
def sort_and_topk(data):
    x = data.draw(tst.well_separated(tst.shapes(min_dims=1, **SMALL)), label="x")
    d = one_dim(data, x)
    k = data.draw(st.integers(0, x.shape[d]), label="k")
    descending = data.draw(st.booleans(), label="descending")
    return (lambda t: (t.sort(dim=d, descending=descending).values ** 2,
                       t.topk(k, dim=d).values ** 3)), (x,)


@case("flatten", "squeeze", "unsqueeze", "expand", "repeat", "swapaxes", "BroadcastTo", "Repeat")
def more_shape_ops(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL)), label="x")
    start = data.draw(st.integers(-x.ndim, x.ndim - 1), label="start_dim")
    new_axis = data.draw(st.integers(-x.ndim - 1, x.ndim), label="unsqueeze dim")
    a, b = data.draw(st.tuples(*[st.integers(-x.ndim, x.ndim - 1)] * 2), label="swapped axes")
    return (lambda t: (t.flatten(start) ** 2, t.unsqueeze(new_axis).squeeze() ** 2,
                       t.expand(2, *t.shape) ** 2, t.repeat(2, *[1] * t.ndim) ** 3,
                       t.swapaxes(a, b) ** 2)), (x,)


@case("chunk")
def chunk(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL)), label="x")
    d, n = one_dim(data, x), data.draw(st.integers(1, 3), label="chunks")
    return (lambda t: tuple(piece * piece for piece in t.chunk(n, d))), (x,)


@case("index_select", "gather", "IndexBackward")
def index_select_and_gather(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL)), label="x")
    d = one_dim(data, x)
    rows = data.draw(hnp.arrays(np.int64, st.integers(1, 4),
                                elements=st.integers(0, x.shape[d] - 1)), label="index")
    index_shape = tuple(data.draw(st.integers(1, 3)) if i == d % x.ndim else side
                        for i, side in enumerate(x.shape))
    index = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, x.shape[d] - 1)),
                      label="gather index")
    return (lambda t: (t.index_select(d, rows) ** 2, t.gather(d, index) ** 3)), (x,)


@case("scatter_add")
def scatter_add(data):
    x = data.draw(small_tensors(tst.shapes(min_dims=1, **SMALL)), label="x")
    d = one_dim(data, x)
    src_shape = tuple(data.draw(st.integers(1, 3)) if i == d % x.ndim else side
                      for i, side in enumerate(x.shape))
    src = data.draw(small_tensors(src_shape), label="src")
    index = data.draw(hnp.arrays(np.int64, src_shape, elements=st.integers(0, x.shape[d] - 1)),
                      label="index")
    return (lambda t, s: t.scatter_add(d, index, s) ** 2), (x, src)


EINSUM_SPECS = {"ij,jk->ik": ((2, 3), (3, 2)), "bij,bjk->bik": ((2, 2, 3), (2, 3, 2)),
                "i,j->ij": ((3,), (2,)), "ij->": ((3, 3),), "ij->ji": ((2, 3),),
                "ij,ij->i": ((2, 3), (2, 3))}


@case("Einsum")
def einsum(data):
    spec = data.draw(st.sampled_from(sorted(EINSUM_SPECS)), label="spec")
    operands = [data.draw(small_tensors(shape), label=f"operand {i}")
                for i, shape in enumerate(EINSUM_SPECS[spec])]
    return (lambda *ts: ops.einsum(spec, *ts) ** 2), operands


# ---------------------------------------------------------------------------
# Losses (composed of the ops above; F re-exports them)
# ---------------------------------------------------------------------------

REDUCTION = st.sampled_from(["mean", "sum", "none"])


@case("F.mse_loss")
def mse_loss(data):
    shape = data.draw(tst.shapes(**SMALL), label="shape")
    x, target = (data.draw(small_tensors(shape), label=n) for n in ("input", "target"))
    reduction = data.draw(REDUCTION, label="reduction")
    return (lambda t: losses.mse_loss(t, target, reduction=reduction).exp()), (x,)


@case("F.l1_loss")
def l1_loss(data):
    shape = data.draw(tst.shapes(**SMALL), label="shape")
    x = data.draw(small_tensors(shape), label="input")
    # |input - target| >= 0.1: away from the kink
    offset = data.draw(small_tensors(shape, min_magnitude=0.1, min_value=-1, max_value=1),
                       label="offset")
    reduction = data.draw(REDUCTION, label="reduction")
    return (lambda t: losses.l1_loss(t, x + offset, reduction=reduction) ** 2), (x,)


@case("F.silu")
def silu(data):
    return losses.silu, (data.draw(small_tensors(min_value=-4, max_value=4), label="x"),)


@case("F.binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(data):
    shape = data.draw(tst.shapes(min_dims=1, max_dims=2, max_side=3), label="shape")
    # logits away from 0, where the stable form joins two branches through |x|
    x = data.draw(small_tensors(shape, min_value=-4, max_value=4, min_magnitude=0.1),
                  label="logits")
    target = data.draw(small_tensors(shape, min_value=0, max_value=1), label="target")
    weight = data.draw(st.none() | small_tensors(shape[-1:], min_value=0.1, max_value=2),
                       label="weight")
    reduction = data.draw(REDUCTION, label="reduction")
    return (lambda t, w: losses.binary_cross_entropy_with_logits(
        t, target, weight=w, reduction=reduction)), (x, weight)


@case("F.nll_loss")
def nll_loss(data):
    n, c = data.draw(st.integers(1, 3), label="rows"), data.draw(st.integers(2, 4), label="classes")
    logits = data.draw(small_tensors((n, c), min_value=-3, max_value=3), label="logits")
    targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)), label="targets")
    # class weights are constants (no gradient, as in PyTorch): closed over, not checked
    weight = data.draw(st.none() | small_tensors((c,), min_value=0.1, max_value=2), label="weight")
    reduction = data.draw(REDUCTION, label="reduction")
    return (lambda z: losses.nll_loss(F.log_softmax(z, axis=-1), targets, weight=weight,
                                      reduction=reduction)), (logits,)


@case("F.cross_entropy")
def cross_entropy_with_options(data):
    n, c = data.draw(st.integers(1, 3), label="rows"), data.draw(st.integers(2, 4), label="classes")
    logits = data.draw(small_tensors((n, c), min_value=-3, max_value=3), label="logits")
    if data.draw(st.booleans(), label="probability targets"):
        targets = data.draw(small_tensors((n, c), min_value=0, max_value=1), label="targets")
    else:
        targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)),
                            label="targets")
    smoothing = data.draw(st.sampled_from([0.0, 0.1]), label="label_smoothing")
    reduction = data.draw(REDUCTION, label="reduction")
    return (lambda z: losses.cross_entropy(z, targets, reduction=reduction,
                                           label_smoothing=smoothing)), (logits,)


# ---------------------------------------------------------------------------
# The convolution family (NCL / NCHW). Sizes stay tiny: a conv's double backward is a few
# convolutions per element of the finite differences.
# ---------------------------------------------------------------------------

def _conv_geometry(data, dims):
    """(stride, padding, dilation) drawn per spatial dim."""
    stride = tuple(data.draw(st.integers(1, 2), label="stride") for _ in range(dims))
    dilation = tuple(data.draw(st.integers(1, 2), label="dilation") for _ in range(dims))
    padding = tuple(data.draw(st.integers(0, 1), label="padding") for _ in range(dims))
    return stride, padding, dilation


@case("F.conv1d", "F.conv2d")
def convolution(data):
    dims = data.draw(st.sampled_from([1, 2]), label="dims")
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    c_in, c_out = groups * data.draw(st.integers(1, 2), label="c_in"), groups
    kernel = tuple(data.draw(st.integers(1, 2), label="kernel") for _ in range(dims))
    stride, padding, dilation = _conv_geometry(data, dims)
    spatial = tuple(data.draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 3), label="size")
                    for k, d in zip(kernel, dilation))
    x = data.draw(small_tensors((data.draw(st.integers(1, 2), label="batch"), c_in) + spatial),
                  label="x")
    weight = data.draw(small_tensors((c_out, c_in // groups) + kernel), label="weight")
    bias = data.draw(st.none() | small_tensors((c_out,)), label="bias")
    conv = F.conv1d if dims == 1 else F.conv2d
    # x * conv(...) would not broadcast; the square makes the second derivative non-zero
    return (lambda t, w, b: conv(t, w, b, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups) ** 2), (x, weight, bias)


@case("F.conv_transpose2d")
def convolution_transposed(data):
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    c_in, c_out = groups, groups * data.draw(st.integers(1, 2), label="c_out")
    kernel = tuple(data.draw(st.integers(1, 2), label="kernel") for _ in range(2))
    stride, padding, dilation = _conv_geometry(data, 2)
    output_padding = tuple(data.draw(st.integers(0, s - 1), label="output_padding")
                           for s in stride)
    spatial = tuple(data.draw(st.integers(1, 3), label="size") for _ in range(2))
    x = data.draw(small_tensors((1, c_in) + spatial), label="x")
    weight = data.draw(small_tensors((c_in, c_out // groups) + kernel), label="weight")
    bias = data.draw(st.none() | small_tensors((c_out,)), label="bias")
    out_size = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, s, p, d, k, o in
                zip(spatial, stride, padding, dilation, kernel, output_padding)]
    if min(out_size) < 1:
        output_padding, padding = (0, 0), (0, 0)
    return (lambda t, w, b: F.conv_transpose2d(t, w, b, stride=stride, padding=padding,
                                               output_padding=output_padding, groups=groups,
                                               dilation=dilation) ** 2), (x, weight, bias)


@case("F.unfold", "F.fold")
def unfold_and_fold(data):
    kernel = tuple(data.draw(st.integers(1, 2), label="kernel") for _ in range(2))
    stride, padding, dilation = _conv_geometry(data, 2)
    size = tuple(data.draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 3), label="size")
                 for k, d in zip(kernel, dilation))
    x = data.draw(small_tensors((1, 2) + size), label="x")

    def fn(t):
        cols = F.unfold(t, kernel, dilation=dilation, padding=padding, stride=stride)
        return F.fold(cols * cols, size, kernel, dilation=dilation, padding=padding,
                      stride=stride)
    return fn, (x,)


@case("F.max_pool1d", "F.max_pool2d")
def max_pool(data):
    dims = data.draw(st.sampled_from([1, 2]), label="dims")
    kernel = data.draw(st.integers(1, 3), label="kernel")
    stride = data.draw(st.integers(1, 3), label="stride")
    padding = data.draw(st.integers(0, kernel // 2), label="padding")
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    spatial = tuple(data.draw(st.integers(kernel, kernel + 3), label="size") for _ in range(dims))
    # distinct values: no ties, so the arg-max is stable under finite differences
    x = data.draw(tst.well_separated((1, 2) + spatial), label="x")
    pool = F.max_pool1d if dims == 1 else F.max_pool2d
    return (lambda t: pool(t, kernel, stride, padding, ceil_mode=ceil_mode) ** 2), (x,)


@case("F.avg_pool1d", "F.avg_pool2d", "F.adaptive_avg_pool2d")
def average_pool(data):
    kind = data.draw(st.sampled_from(["1d", "2d", "adaptive"]), label="kind")
    kernel = data.draw(st.integers(1, 3), label="kernel")
    stride = data.draw(st.integers(1, 3), label="stride")
    padding = data.draw(st.integers(0, kernel // 2), label="padding")
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    include_pad = data.draw(st.booleans(), label="count_include_pad")
    dims = 1 if kind == "1d" else 2
    spatial = tuple(data.draw(st.integers(kernel, kernel + 3), label="size") for _ in range(dims))
    x = data.draw(small_tensors((1, 2) + spatial), label="x")
    if kind == "adaptive":
        out = tuple(data.draw(st.integers(1, n), label="output_size") for n in spatial)
        return (lambda t: F.adaptive_avg_pool2d(t, out) ** 2), (x,)
    pool = F.avg_pool1d if dims == 1 else F.avg_pool2d
    return (lambda t: pool(t, kernel, stride, padding, ceil_mode=ceil_mode,
                           count_include_pad=include_pad) ** 2), (x,)


@case("F.batch_norm")
def batch_norm(data):
    shape = data.draw(st.sampled_from([(3, 2), (2, 2, 3), (2, 2, 2, 2)]), label="shape")
    # distinct values: no channel has (near) zero variance
    x = data.draw(tst.well_separated(shape), label="x")
    weight = data.draw(st.none() | small_tensors((shape[1],)), label="weight")
    bias = data.draw(st.none() | small_tensors((shape[1],)), label="bias")
    training = data.draw(st.booleans(), label="training")
    running_mean = np.linspace(-0.5, 0.5, shape[1])
    running_var = np.linspace(0.5, 1.5, shape[1])

    def fn(t, w, b):
        # copies: each call of fn (finite differences call it often) starts from the same stats
        return F.batch_norm(t, running_mean.copy(), running_var.copy(), w, b,
                            training=training, momentum=0.1, eps=1e-5) ** 2
    return fn, (x, weight, bias)


@case("F.pad")
def pad(data):
    mode = data.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]),
                     label="mode")
    x = data.draw(small_tensors((1, 2, 3, 4)), label="x")
    widths = tuple(data.draw(st.integers(0, 2), label="pad") for _ in range(4))
    if mode == "constant":
        widths = tuple(w - data.draw(st.integers(0, 1), label="crop") for w in widths)
    return (lambda t: F.pad(t, widths, mode=mode) ** 2), (x,)


@case("F.dropout2d")
def dropout2d(data):
    x = data.draw(small_tensors((2, 3, 2, 2)), label="x")

    def fn(t):
        tl.manual_seed(7)  # the same channel mask on every call
        return F.dropout2d(t, 0.5, True) * t
    return fn, (x,)


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
@fewer_examples
@given(data=st.data())
def test_second_derivatives_match_finite_differences(kernel_set, name, data):
    draw_problem, _ = CASES[name]
    fn, inputs = draw_problem(data)
    assert gradgradcheck(fn, list(inputs))




def op_classes(module):
    """The Function subclasses defined in `module` (or, for a package, in its submodules)."""
    return {name for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, tl.Function) and cls is not tl.Function
            and (cls.__module__ + ".").startswith(module.__name__ + ".")}


def test_every_op_has_a_second_derivative_case():
    ops_to_cover = set(ops.TENSOR_METHODS) - ops.NO_GRADIENT_METHODS - set(IN_PLACE_METHODS)
    ops_to_cover |= op_classes(ops) | op_classes(F)
    ops_to_cover |= {f"F.{name}" for name in F.__all__
                     if callable(getattr(F, name, None)) and not inspect.isclass(getattr(F, name))}
    covered = {name for _, covers in CASES.values() for name in covers}
    covered |= {"F.one_hot"}  # integer output: no gradient to check
    missing = sorted(ops_to_cover - covered)
    assert not missing, f"ops without a double-backward case in {__file__}: {missing}"
