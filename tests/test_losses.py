"""Property tests for the losses of tensorlite.losses: forward against plain NumPy statements of
PyTorch's formulas, gradients against finite differences (float64, random cotangent), every
`reduction`, and the same numbers as torch when it happens to be installed."""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite import losses
from tensorlite.testing import gradcheck
from tensorlite.testing import strategies as tst

REDUCTIONS = ["mean", "sum", "none"]


def np_reduce(values, reduction):
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def np_log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def assert_forward(out, expected, rtol=1e-10, atol=1e-12):
    assert isinstance(out, tl.Tensor)
    expected = np.asarray(expected)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=atol)


@st.composite
def pair(draw, **bounds):
    """Two float64 arrays of one shape."""
    shape = draw(tst.shapes(min_dims=1))
    return draw(tst.tensors(shape, **bounds)), draw(tst.tensors(shape, **bounds))


# ---------------------------------------------------------------------------
# Regression losses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_mse_loss(reduction, data):
    x, y = data.draw(pair(min_value=-3, max_value=3))
    assert_forward(losses.mse_loss(tl.Tensor(x), y, reduction=reduction),
                   np_reduce((x - y) ** 2, reduction))
    # gradients reach both input and target
    assert gradcheck(lambda a, b: losses.mse_loss(a, b, reduction=reduction), [x, y])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_l1_loss(reduction, data):
    shape = data.draw(tst.shapes(min_dims=1))
    x = data.draw(tst.tensors(shape, min_value=-3, max_value=3))
    offset = data.draw(tst.tensors(shape, min_value=-3, max_value=3, min_magnitude=0.01))
    y = x + offset  # keep |x - y| away from the kink at 0
    assert_forward(losses.l1_loss(tl.Tensor(x), y, reduction=reduction),
                   np_reduce(np.abs(x - y), reduction))
    assert gradcheck(lambda a, b: losses.l1_loss(a, b, reduction=reduction), [x, y])


def test_l1_loss_gradient_is_zero_where_equal():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    losses.l1_loss(x, np.array([1.0, 0.0]), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0])


def test_regression_losses_keep_float32_and_warn_on_broadcasting():
    x = tl.Tensor(np.ones((4, 1), dtype=np.float32), requires_grad=True)
    out = losses.mse_loss(x, np.zeros((4, 1)))  # a float64 array target
    assert out.dtype == np.float32
    with pytest.warns(UserWarning, match=r"target shape \(4,\) differs from input shape \(4, 1\)"):
        losses.mse_loss(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"mse_loss: input of shape \(4, 1\) and target of shape \(3, 2\)"):
        losses.mse_loss(x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.l1_loss(x, np.zeros((4, 1)), reduction="avg")


@given(x=tst.tensors(min_value=-4, max_value=4))
def test_silu(x):
    assert_forward(losses.silu(tl.Tensor(x)), x / (1 + np.exp(-x)))
    assert gradcheck(losses.silu, [x])


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits
# ---------------------------------------------------------------------------

def np_bce_with_logits(x, y, weight=None, pos_weight=None, reduction="mean"):
    """The textbook -[p y log s + (1 - y) log(1 - s)] with s = sigmoid(x), in float64 via
    log-sigmoid = -logaddexp(0, -x) (exact for moderate x)."""
    log_s = -np.logaddexp(0.0, -x)
    log_one_minus_s = -np.logaddexp(0.0, x)
    p = 1.0 if pos_weight is None else pos_weight
    loss = -(p * y * log_s + (1 - y) * log_one_minus_s)
    if weight is not None:
        loss = loss * weight
    return np_reduce(loss, reduction)


@st.composite
def bce_problems(draw):
    shape = draw(tst.shapes(min_dims=1, max_dims=3))
    x = draw(tst.tensors(shape, min_value=-6, max_value=6))
    y = draw(tst.tensors(shape, min_value=0, max_value=1))
    weight = draw(st.none() | tst.tensors(shape[-1:], min_value=0.1, max_value=2))
    pos_weight = draw(st.none() | tst.tensors(shape[-1:], min_value=0.1, max_value=3))
    return x, y, weight, pos_weight


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(problem=bce_problems())
def test_bce_with_logits(reduction, problem):
    x, y, weight, pos_weight = problem

    def loss(a, b):
        return losses.binary_cross_entropy_with_logits(a, b, weight=weight, pos_weight=pos_weight,
                                                       reduction=reduction)

    assert_forward(loss(tl.Tensor(x), y),
                   np_bce_with_logits(x, y, weight, pos_weight, reduction))
    assert gradcheck(loss, [x, y])


def test_bce_with_logits_gradient_at_zero_logits_and_huge_logits():
    # All-zero logits (a zero-initialised logistic regression): d/dx = sigmoid(0) - y.
    y = np.array([0.0, 1.0, 0.25])
    x = tl.Tensor(np.zeros(3), requires_grad=True)
    losses.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    np.testing.assert_allclose(x.grad, 0.5 - y, rtol=1e-15)
    x = tl.Tensor(np.zeros(3), requires_grad=True)
    losses.binary_cross_entropy_with_logits(x, y, pos_weight=np.array([2.0, 2.0, 2.0]),
                                            reduction="sum").backward()
    # d/dx [(1 - y) x + (1 + (p - 1) y) softplus(-x)] at 0 = (1 - y) - (1 + (p - 1) y) / 2
    np.testing.assert_allclose(x.grad, (1 - y) - (1 + y) / 2, rtol=1e-15)
    # no overflow for huge logits, in float32 too
    for dtype in (np.float32, np.float64):
        x = tl.Tensor(np.array([-1e4, 1e4, 80.0], dtype=dtype), requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = losses.binary_cross_entropy_with_logits(x, np.array([1.0, 0.0, 1.0]), reduction="none")
            out.sum().backward()
        assert out.dtype == dtype
        np.testing.assert_allclose(out.data, [1e4, 1e4, np.log1p(np.exp(-80.0))], rtol=1e-6,
                                   atol=1e-30)
        np.testing.assert_allclose(x.grad, [-1.0, 1.0, 0.0], atol=1e-30)


def test_bce_with_logits_shape_error():
    with pytest.raises(ValueError, match=r"target shape \(3,\) must equal input shape \(3, 1\)"):
        losses.binary_cross_entropy_with_logits(tl.zeros(3, 1), np.zeros(3))


# ---------------------------------------------------------------------------
# nll_loss and cross_entropy
# ---------------------------------------------------------------------------

def np_cross_entropy(logits, targets, weight=None, ignore_index=-100, reduction="mean",
                     label_smoothing=0.0, from_log_probs=False):
    """PyTorch's cross_entropy / nll_loss for class-index targets, written out in NumPy, with
    (N, C) or (N, C, d...) logits (class axis 1)."""
    c = logits.shape[1]
    rows = np.moveaxis(logits, 1, -1).reshape(-1, c)
    t = targets.reshape(-1)
    log_p = rows if from_log_probs else np_log_softmax(rows)
    w = np.ones(c) if weight is None else weight
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    row_weight = np.where(valid, w[safe], 0.0)
    nll = np.where(valid, -row_weight * log_p[np.arange(len(t)), safe], 0.0)
    smooth = np.where(valid, -(log_p * w).sum(-1), 0.0)
    if reduction == "none":
        nll, smooth = nll.reshape(targets.shape), smooth.reshape(targets.shape)
    elif reduction == "sum":
        nll, smooth = nll.sum(), smooth.sum()
    else:
        nll, smooth = nll.sum() / row_weight.sum(), smooth.sum() / row_weight.sum()
    return (1 - label_smoothing) * nll + label_smoothing / c * smooth


@st.composite
def classification_problems(draw, max_extra_dims=1):
    """(logits, targets, weight, ignore_index) with at least one counted target."""
    n = draw(st.integers(1, 4))
    c = draw(st.integers(2, 5))
    extra = draw(st.lists(st.integers(1, 3), max_size=max_extra_dims))
    logits = draw(tst.tensors((n, c, *extra), min_value=-5, max_value=5))
    ignore_index = draw(st.sampled_from([-100, -1, 1]))
    targets = draw(hnp.arrays(np.int64, (n, *extra), elements=st.integers(0, c - 1)))
    ignored = draw(hnp.arrays(np.bool_, targets.shape))
    targets = np.where(ignored, ignore_index, targets)
    assume(np.any(targets != ignore_index))
    weight = draw(st.none() | tst.tensors((c,), min_value=0.2, max_value=2))
    return logits, targets, weight, ignore_index


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(problem=classification_problems(), label_smoothing=st.sampled_from([0.0, 0.1, 0.7]))
def test_cross_entropy(kernel_set, reduction, problem, label_smoothing):
    logits, targets, weight, ignore_index = problem

    def loss(z):
        return losses.cross_entropy(z, targets, weight=weight, ignore_index=ignore_index,
                                    reduction=reduction, label_smoothing=label_smoothing)

    expected = np_cross_entropy(logits, targets, weight, ignore_index, reduction, label_smoothing)
    assert_forward(loss(tl.Tensor(logits)), expected)
    assert gradcheck(loss, [logits])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(problem=classification_problems())
def test_nll_loss(reduction, problem):
    logits, targets, weight, ignore_index = problem
    log_probs = np_log_softmax(logits, axis=1)

    def loss(z):
        return losses.nll_loss(z, targets, weight=weight, ignore_index=ignore_index,
                               reduction=reduction)

    expected = np_cross_entropy(log_probs, targets, weight, ignore_index, reduction,
                                from_log_probs=True)
    assert_forward(loss(tl.Tensor(log_probs)), expected)
    assert gradcheck(loss, [log_probs])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data(), label_smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_with_probability_targets(reduction, data, label_smoothing):
    shape = data.draw(st.sampled_from([(3,), (2, 4), (2, 3, 2)]), label="shape")
    logits = data.draw(tst.tensors(shape, min_value=-5, max_value=5), label="logits")
    raw = data.draw(tst.tensors(shape, min_value=0.05, max_value=1), label="raw")
    axis = 1 if len(shape) >= 2 else 0
    probs = raw / raw.sum(axis=axis, keepdims=True)
    c = shape[axis]
    smoothed = probs * (1 - label_smoothing) + label_smoothing / c
    per_sample = -(np_log_softmax(logits, axis=axis) * smoothed).sum(axis=axis)
    expected = per_sample.mean() if reduction == "mean" else np_reduce(per_sample, reduction)

    def loss(z, p):
        return losses.cross_entropy(z, p, reduction=reduction, label_smoothing=label_smoothing)

    assert_forward(loss(tl.Tensor(logits), probs), expected)
    assert gradcheck(loss, [logits, probs])  # differentiable in the target probabilities too


def test_cross_entropy_class_last_layout_and_unbatched_input(kernel_set):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 5))  # (B, T, C) with (B, T) targets: class axis last
    targets = rng.integers(0, 5, size=(2, 3))
    flat = np_cross_entropy(logits.reshape(6, 5), targets.reshape(6))
    assert_forward(losses.cross_entropy(tl.Tensor(logits), targets), flat)
    none = losses.cross_entropy(tl.Tensor(logits), targets, reduction="none")
    assert none.shape == (2, 3)
    single = rng.standard_normal(4)  # (C,) with a scalar target
    assert_forward(losses.cross_entropy(tl.Tensor(single), np.array(2)),
                   -np_log_softmax(single)[2])


def test_cross_entropy_masked_logits_and_all_ignored(kernel_set):
    logits = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, 0.5]])
    targets = np.array([2, -100])
    for reduction in REDUCTIONS:
        out = losses.cross_entropy(tl.Tensor(logits), targets, reduction=reduction)
        assert np.all(np.isfinite(out.data))
    x = tl.Tensor(logits, requires_grad=True)
    losses.cross_entropy(x, targets, weight=np.ones(3), reduction="sum").backward()
    assert np.all(np.isfinite(x.grad))
    for kwargs in ({}, {"label_smoothing": 0.1}, {"weight": np.ones(3)}):
        out = losses.cross_entropy(tl.Tensor(logits), np.array([-100, -100]), **kwargs)
        assert np.isnan(out.item())  # the mean over zero targets, as in PyTorch


def test_cross_entropy_float32_stays_float32(kernel_set):
    logits = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 1])
    for kwargs in ({}, {"label_smoothing": 0.1}, {"reduction": "none"}, {"weight": [1, 2, 3]}):
        x = tl.Tensor(logits, requires_grad=True)
        out = losses.cross_entropy(x, targets, **kwargs)
        out.sum().backward()
        assert out.dtype == np.float32 and x.grad.dtype == np.float32, kwargs
        expected = np_cross_entropy(logits.astype(np.float64), targets,
                                    None if "weight" not in kwargs else np.array([1.0, 2, 3]),
                                    reduction=kwargs.get("reduction", "mean"),
                                    label_smoothing=kwargs.get("label_smoothing", 0.0))
        np.testing.assert_allclose(out.data, expected, rtol=1e-5)


def test_classification_errors_name_the_problem():
    logits = tl.zeros(4, 3)
    with pytest.raises(ValueError, match=r"cross_entropy: input of shape \(4, 3\) needs class-index targets of shape \(4,\)"):
        losses.cross_entropy(logits, np.zeros(5, dtype=np.int64))
    with pytest.raises(IndexError, match=r"cross_entropy: targets must lie in \[0, 3\).*got 3"):
        losses.cross_entropy(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"nll_loss: weight must have shape \(3,\)"):
        losses.nll_loss(logits, np.array([0, 1, 2, 0]), weight=np.ones(4))
    with pytest.raises(ValueError, match=r"probability targets must have the input's shape \(4, 3\)"):
        losses.cross_entropy(logits, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        losses.cross_entropy(logits, np.array([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.nll_loss(logits, np.array([0, 1, 2, 0]), reduction="mean ")


# ---------------------------------------------------------------------------
# The same numbers as torch, when it is installed
# ---------------------------------------------------------------------------

def test_losses_match_torch_when_available():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((4, 3)), rng.random((4, 3))
    w, pw = rng.random(3) + 0.5, rng.random(3) + 0.5
    logits, targets = rng.standard_normal((4, 5, 2)), rng.integers(0, 5, size=(4, 2))
    targets[0, 1] = -100
    cw = rng.random(5) + 0.5
    T = torch.tensor
    for reduction in REDUCTIONS:
        cases = [
            (losses.mse_loss(tl.Tensor(x), y, reduction=reduction),
             tf.mse_loss(T(x), T(y), reduction=reduction)),
            (losses.l1_loss(tl.Tensor(x), y, reduction=reduction),
             tf.l1_loss(T(x), T(y), reduction=reduction)),
            (losses.binary_cross_entropy_with_logits(tl.Tensor(x), y, weight=w, pos_weight=pw,
                                                     reduction=reduction),
             tf.binary_cross_entropy_with_logits(T(x), T(y), weight=T(w), pos_weight=T(pw),
                                                 reduction=reduction)),
            (losses.cross_entropy(tl.Tensor(logits), targets, weight=cw, reduction=reduction,
                                  label_smoothing=0.1),
             tf.cross_entropy(T(logits), T(targets), weight=T(cw), reduction=reduction,
                              label_smoothing=0.1)),
            (losses.nll_loss(tl.Tensor(logits), targets, reduction=reduction),
             tf.nll_loss(T(logits), T(targets), reduction=reduction)),
        ]
        for ours, theirs in cases:
            np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-10)
