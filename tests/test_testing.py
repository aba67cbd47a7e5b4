"""Tests of the testing kit itself: gradcheck must pass correct gradients, catch
wrong ones with a useful message, and the strategies must draw what they say."""

import functools
import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite.testing import GradcheckError, gradcheck, gradgradcheck
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


def test_gradcheck_message_says_the_numbers_are_cotangent_weighted_and_names_the_op():
    x = np.array([1.0, 2.0, 3.0])
    with pytest.raises(GradcheckError) as info:
        gradcheck(ScaleIgnoringUpstream.apply, [x])
    message = str(info.value)
    # the useful parts stay: input index, worst element, both values
    assert message.startswith("gradcheck failed for input 0")
    assert re.search(r"worst at index \(\d,\): numeric=-?\d.*analytic=-?\d", message)
    # what was compared: vector-Jacobian products with a random cotangent, not Jacobian entries
    assert "cotangent-weighted" in message and "vector-Jacobian product v^T J" in message
    assert "random normal cotangent v (seed=0)" in message and "not single Jacobian entries" in message
    # where to look: the user's op and its definition, not testing.py
    line = inspect.getsourcelines(ScaleIgnoringUpstream)[1]
    assert f"checking ScaleIgnoringUpstream.apply defined at {__file__}:{line}" in message
    with pytest.raises(GradcheckError, match=r"with the cotangent given"):
        gradcheck(ScaleIgnoringUpstream.apply, [x], cotangent=np.arange(3.0))


def test_gradcheck_message_names_a_plain_function_and_a_partial():
    def my_broken_op(t, scale):
        return t.detach() * scale

    line = my_broken_op.__code__.co_firstlineno
    where = (f"checking test_gradcheck_message_names_a_plain_function_and_a_partial.<locals>."
             f"my_broken_op defined at {__file__}:{line}")
    with pytest.raises(GradcheckError) as info:
        gradcheck(my_broken_op, [np.ones(2), 3.0])
    assert where in str(info.value)
    with pytest.raises(GradcheckError) as info:
        gradcheck(functools.partial(my_broken_op, scale=2.0), [np.ones(2)], mode="projection")
    assert where in str(info.value) and "along random direction 0" in str(info.value)


def test_gradgradcheck_message_names_the_op_and_what_is_compared():
    with pytest.raises(GradcheckError) as info:
        gradgradcheck(CubeWithConstantSlope.apply, [np.array([0.5, -1.5, 2.0])])
    message = str(info.value)
    line = inspect.getsourcelines(CubeWithConstantSlope)[1]
    assert f"checking CubeWithConstantSlope.apply defined at {__file__}:{line}" in message
    assert "cotangent-weighted second derivatives" in message and "v^T J_fn" in message
    assert "not single Hessian entries" in message


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
# gradgradcheck
# ---------------------------------------------------------------------------

class Cube(tl.Function):
    """y = x^3 with a backward that is right to second order: it reads x back through
    save_for_backward, so a create_graph backward differentiates through it."""

    def forward(self, x):
        self.save_for_backward(x)
        return x ** 3

    def backward(self, grad):
        x, = self.saved
        return (grad * 3.0 * x * x,)


class CubeWithConstantSlope(tl.Function):
    """y = x^3 whose backward keeps x as a plain attribute: the first derivative 3 x^2 is right,
    but a create_graph backward treats x as a constant, so d2y/dx2 comes out as 0, not 6 x."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, grad):
        return (grad * 3.0 * self.x * self.x,)


def test_gradgradcheck_passes_correct_second_derivatives():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    assert gradgradcheck(lambda t: (t * t).tanh(), [x]) is True
    assert gradgradcheck(Cube.apply, x) is True
    rng = np.random.default_rng(0)
    assert gradgradcheck(lambda a, b: (a @ b).exp(), [rng.standard_normal((2, 3)),
                                                      rng.standard_normal((3, 2))])


def test_gradgradcheck_catches_a_wrong_second_derivative_that_gradcheck_passes():
    x = np.array([0.5, -1.5, 2.0])
    assert gradcheck(CubeWithConstantSlope.apply, [x])  # first order is right
    with pytest.raises(GradcheckError) as info:
        gradgradcheck(CubeWithConstantSlope.apply, [x])
    message = str(info.value)
    assert message.startswith("gradgradcheck failed for input 0")
    assert "3 of 3" in message and "analytic=0.0" in message
    assert re.search(r"worst at index \(\d,\): numeric=-?\d", message)


def test_gradgradcheck_catches_a_detached_slope_in_composed_ops():
    # x * detach(x) + (x - detach(x)) * detach(x) is x^2 with slope 2x, but its slope is built
    # from constants, so its second derivative is 0 instead of 2
    def square_with_constant_slope(t):
        frozen = t.detach()
        return t * frozen + (t - frozen) * frozen

    x = np.array([1.0, -2.0])
    assert gradcheck(square_with_constant_slope, [x])
    with pytest.raises(GradcheckError, match=r"gradgradcheck failed for input 0.*analytic=0\.0"):
        gradgradcheck(square_with_constant_slope, [x], grad_outputs=np.ones(2))


class DoubleBackward(tl.Function):
    """The backward of y = 2 x as an op of its own (as fused kernels' backwards are), whose own
    backward is wrong: the derivative of 2 g with respect to g is 2, not 3."""

    def forward(self, grad):
        return 2.0 * grad

    def backward(self, grad_grad):
        return (3.0 * grad_grad,)


class Double(tl.Function):
    def forward(self, x):
        return 2.0 * x

    def backward(self, grad):
        return (DoubleBackward.run(grad),)


def test_gradgradcheck_checks_the_backward_of_a_backward_op():
    """Double backward also runs the backward ops' own backwards, with respect to the incoming
    gradient: a wrong one fails on grad_outputs, although every second derivative is 0."""
    x = np.array([1.0, 2.0])
    assert gradcheck(Double.apply, [x])
    with pytest.raises(GradcheckError, match=r"gradgradcheck failed for grad_outputs\[0\]"):
        gradgradcheck(Double.apply, [x])


def test_gradgradcheck_handles_integers_none_tuples_and_unused_inputs():
    weight = np.random.default_rng(1).standard_normal((3, 2))

    def fn(w, idx, unused, nothing):
        rows = w[idx]
        return rows * rows, (rows.sum() * 0.5).exp()

    assert gradgradcheck(fn, [weight, np.array([2, 0, 2]), np.ones(2), None])


def test_gradgradcheck_options():
    x = np.random.default_rng(2).standard_normal((4, 5))
    assert gradgradcheck(lambda t: (t ** 3).sum(axis=1), [x], mode="projection", n_projections=2)
    assert gradgradcheck(lambda t: t.tanh(), [x], grad_outputs=np.ones((4, 5)), seed=3)
    with pytest.raises(ValueError, match="gradgradcheck: cotangent 0 has shape"):
        gradgradcheck(lambda t: t * t, [x], grad_outputs=np.ones(3))
    with pytest.raises(ValueError, match="gradgradcheck: no floating-point input"):
        gradgradcheck(lambda i: i, [np.array([1, 2])])
    with pytest.raises(GradcheckError, match="input 0"):
        gradgradcheck(CubeWithConstantSlope.apply, [x], mode="projection")


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


_WITHOUT_HYPOTHESIS = """
import builtins
real_import = builtins.__import__

def no_hypothesis(name, *args, **kwargs):
    if name == "hypothesis" or name.startswith("hypothesis."):
        raise ImportError("No module named 'hypothesis'")
    return real_import(name, *args, **kwargs)

builtins.__import__ = no_hypothesis
import numpy as np
from tensorlite.testing import gradcheck
assert gradcheck(lambda t: t.tanh(), [np.ones(2)])  # everything but the strategies works
for statement in ("from tensorlite.testing import strategies",
                  "import tensorlite.testing.strategies as tst",
                  "from tensorlite.testing.strategies import tensors",
                  "import tensorlite.testing.strategies; tensorlite.testing.strategies.tensors()"):
    try:
        exec(statement, {})
    except ImportError as error:
        print(error)
    else:
        print("no error from", statement)
"""


def test_strategies_without_hypothesis_raise_one_import_error_naming_what_to_install():
    done = subprocess.run([sys.executable, "-c", _WITHOUT_HYPOTHESIS], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and len(set(lines)) == 1, lines
    assert "needs Hypothesis" in lines[0] and "pip install hypothesis" in lines[0]
    assert "pip install '.[test]'" in lines[0]
