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


def test_anomaly_mode_blames_the_leaf_that_already_holds_nan_not_the_op():
    weights = tl.Tensor(np.array([1.0, np.nan]), requires_grad=True)
    weights.name = "weights"
    with pytest.raises(RuntimeError, match=r"leaf tensor 'weights' of shape \(2,\) that already "
                                           r"holds nan"):
        with tl.detect_anomaly():
            (weights * 2.0).sum().backward()


def test_anomaly_mode_still_blames_the_op_that_makes_nan_from_finite_inputs():
    x = tl.Tensor(np.array([-1.0, 4.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match="op 'Log' produced nan values in its forward"):
        with tl.detect_anomaly():
            x.log()


def test_to_dot_escapes_quotes_and_backslashes_in_names():
    x = tl.Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    x.name = 'say "hi" \\ bye'
    dot = tl.to_dot(x * 2.0)
    assert 'label="say \\"hi\\" \\\\ bye (2,) float32"' in dot
    # every double quote that is not escaped opens or closes a string: an even count per line
    for line in dot.splitlines():
        assert (line.count('"') - line.count('\\"')) % 2 == 0, line


def test_float16_is_refused_with_a_conversion_hint():
    with pytest.raises(TypeError, match=r"float16.*astype\(np.float32\)"):
        tl.Tensor(np.ones(2, dtype=np.float16))
    with pytest.raises(TypeError, match="float16"):
        tl.Tensor([1.0, 2.0], dtype=np.float16)


def test_autograd_grad_errors_say_what_to_do():
    x = tl.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element output.*grad_outputs"):
        tl.autograd.grad(x * 2.0, x)
    with pytest.raises(TypeError, match=r"inputs\[0\] is a ndarray, not a Tensor"):
        tl.autograd.grad((x * 2.0).sum(), np.ones(3))
    with pytest.raises(RuntimeError, match=r"inputs\[0\].*requires_grad=True"):
        tl.autograd.grad((x * 2.0).sum(), tl.ones(3))
    y = (x * x).sum()
    tl.autograd.grad(y, x)  # frees the graph behind y
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        tl.autograd.grad(y, x, create_graph=True)


def test_autograd_grad_does_not_touch_dot_grad_and_handles_unused_inputs():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    unused = tl.Tensor(np.array([3.0]), requires_grad=True)
    y = (x * x).sum()
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not used.*allow_unused=True"):
        tl.autograd.grad(y, [x, unused], retain_graph=True)
    gx, gu = tl.autograd.grad(y, [x, unused], allow_unused=True)
    np.testing.assert_array_equal(gx.data, [2.0, 4.0])
    assert gu is None and x.grad is None


def test_autograd_grad_with_respect_to_an_intermediate_tensor():
    x = tl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    y = (h * h).sum()
    gh, gx = tl.autograd.grad(y, [h, x])
    np.testing.assert_allclose(gh.data, 2 * h.data)
    np.testing.assert_allclose(gx.data, 18 * x.data)


def test_retain_graph_defaults_to_create_graph():
    x = tl.Tensor(np.array([1.5]), requires_grad=True)
    y = (x ** 3).sum()
    tl.autograd.grad(y, x, create_graph=True)
    second, = tl.autograd.grad(y, x)  # the graph was retained by the create_graph pass
    np.testing.assert_allclose(second.data, 3 * 1.5 ** 2)
    with pytest.raises(RuntimeError, match="second time"):
        tl.autograd.grad(y, x)


def test_create_graph_backward_through_an_op_that_converts_to_numpy_raises_naming_it():
    class Leaky(tl.Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def backward(self, grad):
            x, = self.saved
            return (grad * 2 * np.asarray(x),)  # silently drops the graph of x

    x = tl.Tensor(np.array([2.0]), requires_grad=True)
    y = Leaky.apply(x).sum()
    np.testing.assert_allclose(tl.autograd.grad(y, x, retain_graph=True)[0].data, [4.0])
    with pytest.raises(RuntimeError, match="'Leaky' cannot be differentiated twice"):
        tl.autograd.grad(y, x, create_graph=True)


def test_saving_a_derived_array_is_a_definition_error():
    class SavesDerived(tl.Function):
        def forward(self, x):
            doubled = x * 2
            self.save_for_backward(doubled)
            return doubled + 1

        def backward(self, grad):
            return (grad * 2,)

    with pytest.raises(TypeError, match="neither one of its inputs nor its output"):
        SavesDerived.apply(tl.Tensor(np.ones(2), requires_grad=True))


def test_zero_dimensional_results_are_arrays():
    # NumPy answers -x and x + x on 0-d arrays with a scalar; a Tensor always holds an array
    x = tl.tensor(np.array(0.5), requires_grad=True)
    for y in (-x, x + x, x * 2, x.exp(), x ** 2):
        assert type(y.data) is np.ndarray and y.shape == ()
        assert np.asarray(y).shape == () and tl.zeros_like(y).shape == ()


def test_grad_fn_names_the_producing_op():
    x = tl.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    assert x.grad_fn is None and y.grad_fn is y._ctx and type(y.grad_fn).__name__ == "Sum"
    assert (x.detach() * 2).grad_fn is None
