"""Tests of the autograd machinery itself: graph traversal, accumulation,
retain_graph, no_grad, dtypes, error messages, anomaly detection, DOT export,
and custom ops defined with tl.Function."""

import re
import threading

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.testing import GradcheckError, gradcheck


# ---------------------------------------------------------------------------
# Graph traversal
# ---------------------------------------------------------------------------

def test_backward_through_a_100000_node_chain_has_no_recursion_error():
    x = tl.Tensor(np.array(0.5), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.backward()
    assert y.item() == pytest.approx(100_000.5)
    assert x.grad.item() == pytest.approx(1.0)


def test_using_a_tensor_twice_adds_both_gradients():
    a = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    b = a + a
    b.backward(np.ones(3))
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 2.0])

    c = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (c * c).sum().backward()
    np.testing.assert_allclose(c.grad, 2 * c.data)


def test_diamond_graph():
    """a feeds two branches that meet again: d = (2a) * exp(a), dd/da = 2 exp(a) (1 + a)."""
    a_data = np.array([0.3, -1.2, 2.0])
    a = tl.Tensor(a_data, requires_grad=True)
    left = a * 2.0
    right = a.exp()
    d = (left * right).sum()
    d.backward()
    np.testing.assert_allclose(a.grad, 2 * np.exp(a_data) * (1 + a_data), rtol=1e-6)


def test_shared_intermediate_used_by_several_later_nodes():
    """h is reached by three paths; its gradient must be complete before it
    propagates to x (a topological order, not a depth-first walk)."""
    x_data = np.array([[0.5, -0.25], [1.0, 2.0]])
    x = tl.Tensor(x_data, requires_grad=True)
    h = x.tanh()
    out = (h * h).sum() + h.sum() + (h * 3.0).mean()
    out.backward()
    t = np.tanh(x_data)
    expected = (2 * t + 1 + 3.0 / 4) * (1 - t ** 2)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-6)


def test_gradients_accumulate_across_backward_calls():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 + 2 * x.data)


def test_retain_graph_allows_a_second_backward():
    x = tl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * x.data))


def test_second_backward_without_retain_graph_raises_a_clear_error():
    x = tl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_backward_with_an_explicit_gradient_for_non_scalar_outputs():
    x = tl.Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    y = x * x
    upstream = np.array([[1.0, -1.0], [0.5, 2.0]])
    y.backward(upstream)
    np.testing.assert_allclose(x.grad, 2 * x.data * upstream)

    z = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (z * 3.0).backward(tl.Tensor(np.array([1.0, 10.0])))  # a Tensor gradient also works
    np.testing.assert_allclose(z.grad, [3.0, 30.0])


def test_backward_without_gradient_needs_a_one_element_output():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar|one-element|one element"):
        (x * 2.0).backward()
    # a one-element tensor that is not 0-d is fine
    w = tl.Tensor(np.array([[3.0]]), requires_grad=True)
    (w * 2.0).backward()
    np.testing.assert_allclose(w.grad, [[2.0]])


def test_leaf_gradients_have_the_leaf_shape_after_broadcasting():
    a = tl.Tensor(np.ones((3, 1)), requires_grad=True)
    b = tl.Tensor(np.ones((4,)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad, 4.0)
    np.testing.assert_allclose(b.grad, 3.0)
    assert isinstance(a.grad, tl.Tensor) and a.grad.dtype == a.dtype


# ---------------------------------------------------------------------------
# no_grad, detach, requires_grad rules
# ---------------------------------------------------------------------------

def test_no_grad_records_no_graph_and_restores_the_mode():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = (x * 2.0).exp()
    assert tl.is_grad_enabled()
    assert not y.requires_grad
    assert y._ctx is None
    np.testing.assert_allclose(y.data, np.exp(2 * x.data), rtol=1e-6)

    with pytest.raises(ValueError):
        with tl.no_grad():
            raise ValueError("boom")
    assert tl.is_grad_enabled()  # restored even when the block raises


def test_grad_mode_is_per_thread():
    """no_grad, and the recording switch-off inside a backward pass, belong to the thread
    that made them: another thread building a graph at that moment still records it."""
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def in_no_grad():
        with tl.no_grad():
            seen["other thread"] = tl.is_grad_enabled()
            inside.set()
            release.wait(10)

    other = threading.Thread(target=in_no_grad)
    other.start()
    assert inside.wait(10)
    y = (x * 3.0).sum()  # built while the other thread sits inside no_grad
    release.set()
    other.join()
    assert seen["other thread"] is False
    assert tl.is_grad_enabled() and y.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])

    # A backward pass in one thread while another builds and differentiates its own graph.
    in_backward, resume = threading.Event(), threading.Event()

    def hook(grad):
        in_backward.set()  # this thread's backward is running: recording is off here
        resume.wait(10)
        return grad

    a = tl.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    b = (a * a)
    b.register_hook(hook)
    worker = threading.Thread(target=lambda: b.sum().backward())
    worker.start()
    assert in_backward.wait(10)
    z = tl.Tensor(np.array([0.5]), requires_grad=True)
    w = (z * z).sum()
    resume.set()
    worker.join()
    assert w.requires_grad
    w.backward()
    np.testing.assert_array_equal(z.grad, [1.0])
    np.testing.assert_array_equal(a.grad, [2.0, -4.0])


def test_grad_mode_decorator_restores_each_callers_mode():
    """One decorated function running in two threads at once: each call puts back the mode
    its own thread had (the decorator must not share one saved mode between calls)."""
    entered, leave = threading.Event(), threading.Event()
    after = {}

    @tl.enable_grad()
    def recording(wait):
        if wait:
            entered.set()
            leave.wait(10)
        return tl.is_grad_enabled()

    def in_no_grad():
        with tl.no_grad():
            after["inside call"] = recording(True)
            after["after call"] = tl.is_grad_enabled()

    other = threading.Thread(target=in_no_grad)
    other.start()
    assert entered.wait(10)
    assert recording(False)  # this thread's call starts and ends while the other is inside
    leave.set()
    other.join()
    assert after == {"inside call": True, "after call": False}
    assert tl.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = tl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    constant = x.detach()
    assert not constant.requires_grad
    np.testing.assert_array_equal(constant.data, x.data)
    (constant * x).sum().backward()
    np.testing.assert_allclose(x.grad, x.data)  # d/dx (c * x) with c held fixed


def test_comparisons_carry_no_gradient():
    x = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    for result in (x > 0, x < 0, x >= 1.0, x <= 1.0, x == 3.0):
        assert not result.requires_grad
        assert result.dtype == np.bool_
    np.testing.assert_array_equal((x > 0).data, [True, False, True])


def test_integer_tensors_cannot_require_grad():
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        tl.Tensor(np.arange(3), requires_grad=True)


def test_dtype_defaults():
    assert tl.Tensor([1.0, 2.0]).dtype == np.float32      # Python floats -> float32
    assert tl.Tensor(2.5).dtype == np.float32
    assert tl.Tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64  # float64 kept
    assert tl.Tensor(np.zeros(2, dtype=np.float32)).dtype == np.float32
    assert np.issubdtype(tl.Tensor([1, 2]).dtype, np.integer)            # ints stay ints
    assert tl.Tensor(np.arange(3, dtype=np.int32)).dtype == np.int32
    assert tl.Tensor([1.0], dtype=np.float64).dtype == np.float64
    assert tl.zeros((2, 3)).dtype == np.float32
    assert tl.randn(2, 3).dtype == np.float32


def test_tensor_basics():
    t = tl.Tensor(np.arange(6.0).reshape(2, 3))
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and t.size() == (2, 3) and len(t) == 2
    np.testing.assert_array_equal(np.asarray(t), t.numpy())
    assert tl.Tensor(np.array([[4.0]])).item() == 4.0
    assert t.grad is None


# ---------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------

def test_matmul_shape_mismatch_names_the_op_and_both_shapes():
    a = tl.Tensor(np.ones((2, 3)))
    b = tl.Tensor(np.ones((4, 5)))
    with pytest.raises((ValueError, RuntimeError)) as info:
        a @ b
    message = str(info.value)
    assert "matmul" in message.lower()
    assert "(2, 3)" in message and "(4, 5)" in message


def test_broadcast_mismatch_names_the_op_and_both_shapes():
    a = tl.Tensor(np.ones((2, 3)))
    b = tl.Tensor(np.ones((4,)))
    with pytest.raises((ValueError, RuntimeError)) as info:
        a + b
    message = str(info.value)
    assert re.search(r"add|\+", message.lower())
    assert "(2, 3)" in message and "(4,)" in message


# ---------------------------------------------------------------------------
# tl.grad, detect_anomaly, to_dot
# ---------------------------------------------------------------------------

def test_functional_grad_returns_arrays():
    def f(x, y):
        return (x * y).sum() + (x ** 2).sum()

    x = np.array([1.0, 2.0, 3.0])
    y = np.array([-1.0, 0.5, 4.0])
    dx = tl.grad(f)(x, y)
    assert isinstance(dx, np.ndarray)
    np.testing.assert_allclose(dx, y + 2 * x, rtol=1e-6)

    dy = tl.grad(f, argnums=1)(x, y)
    np.testing.assert_allclose(dy, x, rtol=1e-6)

    both = tl.grad(f, argnums=(0, 1))(x, y)
    assert isinstance(both, tuple) and len(both) == 2
    assert all(isinstance(g, np.ndarray) for g in both)
    np.testing.assert_allclose(both[0], y + 2 * x, rtol=1e-6)
    np.testing.assert_allclose(both[1], x, rtol=1e-6)


def test_detect_anomaly_names_the_forward_op_that_made_nan():
    x = tl.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    with pytest.raises((RuntimeError, FloatingPointError)) as info, \
            np.errstate(invalid="ignore"), tl.detect_anomaly():
        (x * 2.0).log()
    assert "log" in str(info.value).lower()


def test_detect_anomaly_names_the_backward_op_that_made_inf():
    x = tl.Tensor(np.array([0.0, 4.0]), requires_grad=True)
    with pytest.raises((RuntimeError, FloatingPointError)) as info, \
            np.errstate(divide="ignore"), tl.detect_anomaly():
        y = (x.sqrt() * 3.0).sum()  # forward is finite: sqrt(0) = 0
        y.backward()                 # but d sqrt/dx = 1 / (2 sqrt(0)) = inf
    message = str(info.value).lower()
    assert "sqrt" in message
    assert "backward" in message


def test_without_detect_anomaly_nan_passes_silently():
    with np.errstate(invalid="ignore"):
        y = tl.Tensor(np.array([-1.0])).log()
    assert np.isnan(y.data).all()


def test_detect_anomaly_accepts_minus_inf_masks():
    """masked_fill(-inf) before a softmax is intended, not an anomaly."""
    x = tl.Tensor(np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]), requires_grad=True)
    mask = np.array([[False, True, False], [False, False, True]])
    with tl.detect_anomaly():
        probabilities = tl.functional.softmax(x.masked_fill(mask, -np.inf), axis=-1)
        (probabilities * tl.Tensor(np.arange(6.0).reshape(2, 3))).sum().backward()
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_array_equal(x.grad[mask], 0.0)


def test_to_dot_shows_ops_and_shapes():
    x = tl.Tensor(np.ones((2, 3)), requires_grad=True)
    w = tl.Tensor(np.ones((3, 4)), requires_grad=True)
    loss = (x @ w).relu().sum()
    dot = tl.to_dot(loss)
    assert isinstance(dot, str)
    assert dot.lstrip().startswith("digraph")
    for op_name in ("matmul", "relu", "sum"):
        assert op_name in dot.lower()
    assert re.search(r"2\s*[,x×]\s*3", dot) and re.search(r"3\s*[,x×]\s*4", dot)
    assert loss.to_dot() == dot


# ---------------------------------------------------------------------------
# Custom ops: tl.Function, and gradcheck catching a wrong backward
# ---------------------------------------------------------------------------

class Cube(tl.Function):
    """y = x ** 3 with a correct backward."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, grad):
        return (3 * self.x ** 2 * grad,)


class CubeWithWrongBackward(tl.Function):
    """y = x ** 3, but the backward forgets the factor 3."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, grad):
        return (self.x ** 2 * grad,)


def test_custom_function_forward_and_backward():
    x = tl.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = Cube.apply(x)
    assert isinstance(y, tl.Tensor)
    np.testing.assert_allclose(y.data, [1.0, -8.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 12.0])
    assert gradcheck(Cube.apply, [np.array([0.5, -1.5, 2.0])])


def test_gradcheck_catches_a_wrong_vjp():
    x = np.array([[0.5, -1.5], [2.0, 1.0]])
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, b: a * CubeWithWrongBackward.apply(b), [np.ones(2), x])
    message = str(info.value)
    assert "input 1" in message
    # the worst element is where |3x^2 - x^2| * |cotangent| is largest; both its
    # numeric and analytic values must be in the message
    numbers = [float(s) for s in re.findall(r"(?:numeric|analytic)=(-?[\d.e+-]+)", message)]
    assert len(numbers) == 2
    numeric, analytic = numbers
    assert analytic == pytest.approx(numeric / 3, rel=1e-4)
    assert "tolerance" in message
