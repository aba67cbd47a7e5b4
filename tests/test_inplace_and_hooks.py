"""In-place operations with version counters, tensor hooks, retain_grad, and the graph-carrying
`.grad` left by backward(create_graph=True).

Each differentiable in-place op is checked two ways: its gradient through a non-leaf tensor
against central finite differences (float64, random cotangent), and its result against the same
computation written out of place.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite.testing import gradcheck, gradgradcheck
from tensorlite.testing import strategies as tst

# name -> (in-place program on a non-leaf y, the same program out of place)
IN_PLACE_PROGRAMS = {
    "add_": (lambda y, w: y.add_(w, alpha=2.0), lambda y, w: y + 2.0 * w),
    "sub_": (lambda y, w: y.sub_(w), lambda y, w: y - w),
    "mul_": (lambda y, w: y.mul_(w), lambda y, w: y * w),
    "div_": (lambda y, w: y.div_(w * w + 1.0), lambda y, w: y / (w * w + 1.0)),
    "iadd": (lambda y, w: _iadd(y, w), lambda y, w: y + w),
    "imul": (lambda y, w: _imul(y, w), lambda y, w: y * w),
    "setitem": (lambda y, w: _setitem(y, w), lambda y, w: tl.concatenate(
        [(w * 3.0)[:1], y[1:]], axis=0)),
    "fill_": (lambda y, w: y.fill_(0.5) * w, lambda y, w: y * 0.0 + 0.5 * w),
    "zero_": (lambda y, w: y.zero_() + w, lambda y, w: y * 0.0 + w),
    "copy_": (lambda y, w: y.copy_(w * w), lambda y, w: w * w),
}


def _iadd(y, w):
    y += w
    return y


def _imul(y, w):
    y *= w
    return y


def _setitem(y, w):
    y[:1] = w[:1] * 3.0
    return y


def _with_fresh_non_leaf(program):
    """x -> program(x * 1.0, w): the in-place op acts on a non-leaf, as it must."""
    return lambda x, w: program(x * 1.0, w)


@pytest.mark.parametrize("name", sorted(IN_PLACE_PROGRAMS))
@given(data=st.data())
def test_in_place_op_matches_out_of_place_and_finite_differences(name, data):
    in_place, out_of_place = IN_PLACE_PROGRAMS[name]
    shape = data.draw(tst.shapes(min_dims=1, max_dims=3))
    x = data.draw(tst.tensors(shape))
    w = data.draw(tst.tensors(shape))
    expected = out_of_place(tl.Tensor(x), tl.Tensor(w))
    actual = _with_fresh_non_leaf(in_place)(tl.Tensor(x), tl.Tensor(w))
    np.testing.assert_allclose(actual.data, expected.data, rtol=1e-12, atol=1e-12)
    assert gradcheck(_with_fresh_non_leaf(in_place), [x, w])


@pytest.mark.parametrize("name", ["mul_", "div_", "setitem"])
def test_in_place_op_differentiates_twice(name):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    in_place, _ = IN_PLACE_PROGRAMS[name]
    assert gradgradcheck(lambda a, b: _with_fresh_non_leaf(in_place)(a * a, b), [x, w])


def test_clamp_in_place_passes_gradient_only_where_not_clipped():
    x = tl.Tensor(np.array([-2.0, -0.5, 0.25, 3.0]), requires_grad=True)
    y = x * 1.0
    y.clamp_(-1.0, 1.0)
    np.testing.assert_array_equal(y.data, [-1.0, -0.5, 0.25, 1.0])
    y.backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 3.0, 0.0])


def test_augmented_assignment_keeps_the_same_tensor_object():
    x = tl.zeros(3)
    same = x
    x += 1
    x *= 3
    x -= 1
    x /= 2
    assert x is same
    np.testing.assert_array_equal(x.data, [1.0, 1.0, 1.0])
    assert x._version == 4


def test_views_share_the_version_counter():
    base = tl.Tensor(np.arange(6.0))
    view = base.reshape(2, 3)[0]
    view.add_(10.0)
    np.testing.assert_array_equal(base.data, [10.0, 11.0, 12.0, 3.0, 4.0, 5.0])
    assert base._version == 1


# ---- the classic mistakes raise instead of giving a wrong gradient ------------------------

def test_modifying_a_saved_output_in_place_raises_naming_the_op():
    x = tl.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    y = x.sigmoid()
    y.mul_(2)
    with pytest.raises(RuntimeError, match=r"'Sigmoid'.*modified in place"):
        y.sum().backward()


def test_modifying_a_saved_input_under_no_grad_raises_naming_the_op():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = tl.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    a = x * w
    with tl.no_grad():
        w.add_(1)
    with pytest.raises(RuntimeError, match=r"input 1.*'Mul'.*modified in place"):
        a.sum().backward()


def test_modifying_an_unsaved_input_is_fine():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = tl.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    a = x + w  # Add saves nothing
    with tl.no_grad():
        w.add_(1)
    a.sum().backward()
    np.testing.assert_array_equal(w.grad, [1.0, 1.0])


def test_in_place_on_a_leaf_that_requires_grad_raises_outside_no_grad():
    w = tl.Tensor(np.ones(2), requires_grad=True)
    for operation in (lambda: w.add_(1), lambda: w.zero_(), lambda: w.__setitem__(0, 2.0)):
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
            operation()
    with tl.no_grad():
        w.mul_(3)
    np.testing.assert_array_equal(w.data, [3.0, 3.0])


def test_in_place_on_a_view_of_a_tensor_that_requires_grad_raises():
    x = tl.Tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="view"):
        y[0].mul_(3)


def test_in_place_dtype_and_shape_errors_name_the_op():
    integers = tl.Tensor(np.arange(3))
    with pytest.raises(TypeError, match="div_.*float32.*int64"):
        integers.div_(2)
    with pytest.raises(ValueError, match="add_"):
        tl.zeros(3).add_(tl.ones(2, 3))


# ---- hooks and retain_grad -------------------------------------------------------------------

def test_hook_on_a_leaf_sees_and_can_replace_the_gradient():
    x = tl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    seen = []

    def clip(grad):
        seen.append(grad.data.copy())
        return tl.Tensor(np.clip(grad.data, -1.0, 1.0))

    handle = x.register_hook(clip)
    (x * 5.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(x.grad, [1.0, 1.0, 1.0])
    handle.remove()
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0, 5.0])


def test_hook_on_a_non_leaf_scales_what_flows_upstream():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3.0
    y.register_hook(lambda g: g * 10.0)
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad, 10.0 * 2 * 3.0 * 3.0 * x.data)


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3.0
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad, 2 * y.data)
    assert isinstance(y.grad, tl.Tensor) and not y.grad.requires_grad


def test_register_hook_on_a_constant_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tl.ones(2).register_hook(lambda g: g)


# ---- .grad after backward(create_graph=True) --------------------------------------------------

def test_backward_create_graph_leaves_a_differentiable_grad():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2)
    assert x.grad.requires_grad
    second, = tl.autograd.grad(x.grad.sum(), x)
    np.testing.assert_allclose(second.data, 6 * x.data)
    x.grad = None  # as zero_grad does: the graph-carrying gradient goes with it
    assert x.grad is None
