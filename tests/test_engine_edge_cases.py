"""Edge cases of the engine that a first version got wrong; each test pins the fix."""

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.testing import gradcheck


def test_permute_with_negative_dims_has_the_right_gradient():
    x = np.random.default_rng(0).standard_normal((2, 2))  # square: a wrong VJP keeps its shape
    assert gradcheck(lambda t: t.permute(-1, 0), [x])
    assert gradcheck(lambda t: t.permute(0, -1, -2), [np.ones((2, 3, 4)) * np.arange(4)])


def test_var_of_one_element_is_nan_in_forward_and_backward_not_an_error():
    x = tl.Tensor(np.array([3.0]), requires_grad=True)
    y = x.var()  # unbiased (correction=1) over one element: 0 / 0
    assert np.isnan(y.item())
    y.backward()
    assert np.isnan(x.grad).all()


def test_power_zero_has_zero_gradient_at_zero():
    x = tl.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_to_dot_still_works_after_the_graph_was_freed():
    x = tl.Tensor(np.ones(3), requires_grad=True)
    y = (x * 2).sum()
    before = tl.to_dot(y)
    assert "Mul" in before and "Sum" in before and "(3,)" in before
    y.backward()
    assert "Sum" in tl.to_dot(y)  # the op is still named, its freed inputs are gone


def test_grad_of_a_function_that_ignores_its_argument_raises_unless_allowed():
    # A cut graph (here a fresh Tensor) must not pass for a zero gradient, as in torch.autograd.
    with pytest.raises(RuntimeError, match="does not depend on its arguments"):
        tl.grad(lambda x: tl.Tensor(np.array(1.0)))(np.ones(3))
    with pytest.raises(RuntimeError, match="does not depend on its arguments"):
        tl.grad(lambda x: tl.Tensor((x * 2).data).sum())(np.ones(3))
    gradient = tl.grad(lambda x: tl.Tensor(np.array(1.0)), allow_unused=True)(np.ones(3))
    np.testing.assert_array_equal(gradient, np.zeros(3))


def test_grad_with_one_argument_unused_names_it():
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not used"):
        tl.grad(lambda x, y: (x * 2).sum(), argnums=(0, 1))(np.ones(3), np.ones(2))


def test_attention_is_not_causal_unless_asked_as_in_pytorch():
    rng = np.random.default_rng(1)
    q, k, v = (tl.Tensor(rng.standard_normal((1, 1, 3, 2))) for _ in range(3))
    default = tl.functional.scaled_dot_product_attention(q, k, v)
    full = tl.functional.scaled_dot_product_attention(q, k, v, is_causal=False)
    np.testing.assert_array_equal(default.data, full.data)
