"""Tests of the testing kit itself: gradcheck must pass correct gradients, catch
wrong ones with a useful message, and the strategies must draw what they say."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite.testing import GradcheckError, gradcheck
from tensorlite.testing import strategies as tst


class Scale(tl.Function):
    """y = 2 x, correct backward."""

    def forward(self, x):
        return 2.0 * x

    def backward(self, grad):
        return (2.0 * grad,)


class ScaleIgnoringUpstream(tl.Function):
    """y = 2 x, but backward returns 2 * ones: right only for an all-ones cotangent."""

    def forward(self, x):
        self.shape = x.shape
        return 2.0 * x

    def backward(self, grad):
        return (np.full(self.shape, 2.0),)


class SumToRow(tl.Function):
    """y = x.sum(0), but backward returns a gradient of the OUTPUT's shape."""

    def forward(self, x):
        return x.sum(axis=0)

    def backward(self, grad):
        return (grad,)


# ---------------------------------------------------------------------------
# gradcheck
# ---------------------------------------------------------------------------

def test_gradcheck_passes_correct_ops_and_returns_true():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    assert gradcheck(lambda t: (t * t).tanh(), [x]) is True
    assert gradcheck(Scale.apply, [x]) is True
    assert gradcheck(Scale.apply, x) is True  # a single array is accepted


def test_gradcheck_uses_a_random_cotangent_not_all_ones():
    x = np.array([1.0, 2.0, 3.0])
    # with an all-ones cotangent this wrong backward looks right...
    assert gradcheck(ScaleIgnoringUpstream.apply, [x], cotangent=np.ones(3))
    # ...but the default random cotangent exposes it
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(ScaleIgnoringUpstream.apply, [x])


def test_gradcheck_rejects_a_gradient_of_the_wrong_shape():
    # the engine's own shape check may fire first (RuntimeError); either way the
    # wrong shape is reported, never compared element by element
    with pytest.raises((GradcheckError, RuntimeError), match=r"shape \(2,\)"):
        gradcheck(SumToRow.apply, [np.ones((3, 2))])


def test_gradcheck_message_names_input_element_values_and_tolerance():
    def wrong_on_one_element(x):
        # forward x * w, where w differs from 1 at [1, 0]; the backward of this
        # composite is right, so we break it by detaching that element's path
        mask = np.zeros((2, 2), dtype=bool)
        mask[1, 0] = True
        return tl.where(mask, x.detach() * 5.0, x)

    with pytest.raises(GradcheckError) as info:
        gradcheck(wrong_on_one_element, [np.array([[1.0, 2.0], [3.0, 4.0]])])
    message = str(info.value)
    assert "input 0" in message
    assert "(1, 0)" in message
    assert "1 of 4" in message
    assert re.search(r"numeric=-?[\d.]", message) and "analytic=0.0" in message
    assert "atol" in message and "rtol" in message


def test_gradcheck_passes_integer_inputs_through():
    indices = np.array([2, 0, 2])
    weight = np.random.default_rng(0).standard_normal((3, 2))
    seen = []

    def pick_rows(w, idx):
        seen.append(idx)
        return w[idx]

    assert gradcheck(pick_rows, [weight, indices])
    assert all(i is indices for i in seen)  # the very same object, never converted


def test_gradcheck_handles_tuple_outputs_and_unused_inputs():
    def two_outputs(a, b, unused):
        return a * b, (a + 1.0).exp()

    rng = np.random.default_rng(1)
    assert gradcheck(two_outputs, [rng.standard_normal(3), rng.standard_normal(3),
                                   rng.standard_normal(2)])


def test_gradcheck_accepts_tensors_and_leaves_them_untouched():
    x = tl.Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    assert gradcheck(lambda t: t.exp(), [x])
    assert x.grad is None
    assert x.dtype == np.float32


def test_gradcheck_does_not_modify_input_arrays():
    x = np.array([1.0, 2.0, 3.0])
    before = x.copy()
    gradcheck(lambda t: t * t, [x])
    np.testing.assert_array_equal(x, before)


def test_gradcheck_flags_non_deterministic_functions():
    rng = np.random.default_rng(0)

    def noisy(t):
        return t * float(rng.standard_normal())

    with pytest.raises(GradcheckError, match="different results"):
        gradcheck(noisy, [np.ones(2)])


def test_gradcheck_flags_outputs_that_lose_float64_precision():
    with pytest.raises(GradcheckError, match="float32"):
        gradcheck(lambda t: tl.Tensor(t.data.astype(np.float32)), [np.ones(2)])


def test_projection_mode_passes_correct_and_catches_wrong_gradients():
    x = np.random.default_rng(2).standard_normal((20, 30))
    assert gradcheck(lambda t: (t * t).sum(axis=1), [x], mode="projection", n_projections=2)
    with pytest.raises(GradcheckError, match="input 0.*direction"):
        gradcheck(ScaleIgnoringUpstream.apply, [x], mode="projection")


def test_gradcheck_cotangent_and_seed():
    x = np.array([1.0, -1.0])
    assert gradcheck(lambda t: t * 3.0, [x], cotangent=np.array([0.5, -2.0]))
    assert gradcheck(lambda t: t * 3.0, [x], seed=123)
    with pytest.raises(ValueError):
        gradcheck(lambda t: t * 3.0, [x], cotangent=np.ones(3))
    with pytest.raises(ValueError):
        gradcheck(lambda t: t * 3.0, [x], mode="fast")


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_tensors_respect_shape_dtype_and_bounds(data):
    shape = data.draw(tst.shapes(max_dims=3, max_side=4))
    x = data.draw(tst.tensors(shape, min_value=0.1, max_value=2.0))
    assert x.shape == shape and x.dtype == np.float64
    assert np.all((x >= 0.1) & (x <= 2.0))
    y = data.draw(tst.tensors(dtype=np.float32, min_value=-1, max_value=1, min_magnitude=0.1))
    assert y.dtype == np.float32 and np.all(np.abs(y) >= np.float32(0.1))
    z = data.draw(tst.tensors(shape, as_tensor=True))
    assert isinstance(z, tl.Tensor) and z.shape == shape


@given(shapes=tst.broadcastable_shapes(3, max_dims=4))
def test_broadcastable_shapes_broadcast(shapes):
    assert len(shapes) == 3
    np.broadcast_shapes(*shapes)  # raises if they do not


@given(data=st.data(), ndim=st.integers(0, 4))
def test_valid_axes_are_accepted_by_numpy(data, ndim):
    axis = data.draw(tst.valid_axes(ndim))
    np.sum(np.ones((2,) * ndim), axis=axis)  # raises on an invalid axis


@given(x=tst.logits(max_magnitude=1e4, allow_neg_inf=True))
def test_logits_are_large_possibly_masked_and_never_fully_masked(x):
    assert x.ndim == 2
    assert np.all(np.isfinite(x).any(axis=-1))
    assert not np.isnan(x).any() and np.all(x[np.isfinite(x)] <= 1e4)
    assert np.all(x[np.isfinite(x)] >= -1e4)


@given(x=tst.well_separated(tst.shapes(max_dims=3), gap=0.5))
def test_well_separated_values_are_far_apart(x):
    values = np.sort(x.reshape(-1))
    assert np.all(np.diff(values) >= 0.5 - 0.125)


def test_strategies_are_importable_as_a_module():
    import importlib

    module = importlib.import_module("tensorlite.testing.strategies")
    assert module.tensors is tst.tensors


def test_gradcheck_is_not_swamped_by_huge_constant_outputs():
    # -1e9 entries do not move under the perturbation; they must contribute exactly
    # zero to the finite difference instead of 1e9 * rounding error
    x = np.array([0.0, 0.0, 1.5])
    mask = np.array([False, True, False])
    assert gradcheck(lambda t: t.masked_fill(mask, -1e9) * 2.0, [x])
    assert gradcheck(lambda t: t.masked_fill(mask, -np.inf).exp(), [x])
