"""`t.grad` is a Tensor, as in PyTorch: None before backward, a Tensor of t's shape and dtype
after, accumulated in place across backward calls, differentiable after
backward(create_graph=True), and assignable only from a Tensor of the same shape and dtype."""

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import optim

try:
    import torch
except ImportError:  # the comparisons with PyTorch are skipped
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_is_none_before_and_a_tensor_of_the_shape_and_dtype_after(dtype):
    p = tl.nn.Parameter(np.arange(6, dtype=dtype).reshape(2, 3))
    assert p.grad is None
    (p * p).sum().backward()
    assert isinstance(p.grad, tl.Tensor)
    assert p.grad.shape == p.shape and p.grad.dtype == p.dtype
    assert not p.grad.requires_grad and p.grad.is_leaf
    np.testing.assert_allclose(p.grad, 2 * p.data)


def test_grad_tensor_attribute_is_gone():
    x = tl.Tensor(np.ones(2), requires_grad=True)
    (x * x).sum().backward(create_graph=True)
    assert not hasattr(x, "grad_tensor")


def test_asarray_of_grad_is_its_array_and_norm_works():
    p = tl.nn.Parameter(np.array([3.0, 4.0]))
    (p * 1.0).sum().backward()
    assert np.asarray(p.grad) is p.grad.data
    (p * p).sum().backward()  # grad = 1 + 2p = [7, 9]
    assert p.grad.norm().item() == pytest.approx(np.hypot(7.0, 9.0))


def test_zero_in_place_and_the_next_backward_accumulates_into_the_same_array():
    p = tl.nn.Parameter(np.array([1.0, 2.0, 3.0]))
    (p * p).sum().backward()
    grad, array = p.grad, p.grad.data
    grad.zero_()
    np.testing.assert_array_equal(array, 0.0)
    (p * 5.0).sum().backward()
    assert p.grad is grad and p.grad.data is array
    np.testing.assert_array_equal(array, 5.0)
    (p * p).sum().backward()  # accumulates
    np.testing.assert_allclose(array, 5.0 + 2 * p.data)


@needs_torch
def test_accumulation_across_backward_calls_matches_torch():
    values = np.array([[0.5, -1.0], [2.0, 0.25]])
    x, xt = tl.Tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    for f in (lambda a: (a * a).sum(), lambda a: a.exp().sum(), lambda a: (a * 3.0).sum()):
        f(x).backward()
        f(xt).backward()
        np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)


@needs_torch
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_create_graph_grad_gives_the_hessian_vector_product_as_torch():
    values = np.array([0.3, -1.2, 0.7])
    v = np.array([1.0, -2.0, 0.5])

    x = tl.Tensor(values, requires_grad=True)
    ((x ** 3).sum() * x.sin().sum()).backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    x.grad = None  # keep the Hessian-vector product apart from the gradient
    (g * tl.Tensor(v)).sum().backward()

    xt = torch.tensor(values, requires_grad=True)
    ((xt ** 3).sum() * xt.sin().sum()).backward(create_graph=True)
    gt = xt.grad
    xt.grad = None
    (gt * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(g.data, gt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy(), rtol=1e-10)


@needs_torch
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_create_graph_grad_accumulates_into_itself_as_torch():
    # Without clearing it, the second backward through x.grad adds the Hessian-vector product
    # to the first gradient, as PyTorch does.
    values = np.array([0.4, -0.8])
    x, xt = tl.Tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    (x ** 4).sum().backward(create_graph=True)
    (xt ** 4).sum().backward(create_graph=True)
    x.grad.sum().backward()
    xt.grad.sum().backward()
    np.testing.assert_allclose(x.grad.data, xt.grad.detach().numpy(), rtol=1e-12)


@needs_torch
def test_assigning_grad_checks_as_torch():
    p, pt = tl.nn.Parameter(np.zeros(3, dtype=np.float32)), torch.zeros(3, requires_grad=True)
    new = tl.Tensor(np.ones(3, dtype=np.float32))
    p.grad = new
    assert p.grad is new
    p.grad = None
    assert p.grad is None
    for ours, theirs, error in [
        (np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32), TypeError),
        (tl.Tensor(np.ones(2, dtype=np.float32)), torch.ones(2), RuntimeError),
        (tl.Tensor(np.ones(3)), torch.ones(3, dtype=torch.float64), RuntimeError),
    ]:
        with pytest.raises(error):
            pt.grad = theirs
        with pytest.raises(error, match="assigned grad"):
            p.grad = ours
    assert p.grad is None


def _model_and_batch():
    tl.manual_seed(0)
    model = tl.nn.Sequential(tl.nn.Linear(4, 8), tl.nn.Tanh(), tl.nn.Linear(8, 2))
    x = tl.Tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    return model, x


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.01),
                                  lambda ps: optim.AdamW(ps, lr=0.01),
                                  lambda ps: optim.RMSprop(ps, lr=0.01)],
                         ids=["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("zero", ["optimizer", "module"])
def test_steps_update_in_place_and_reuse_the_grad_buffers(make, zero):
    model, x = _model_and_batch()
    params = list(model.parameters())
    opt = make(params)
    data_ids = [id(p.data) for p in params]
    buffers = None
    for _ in range(3):
        (opt.zero_grad if zero == "optimizer" else model.zero_grad)(set_to_none=False)
        (model(x) ** 2).mean().backward()
        if buffers is None:
            buffers = [p.grad.data for p in params]
        assert all(p.grad.data is b for p, b in zip(params, buffers))
        opt.step()
        assert [id(p.data) for p in params] == data_ids


def test_zero_grad_set_to_none_by_default():
    model, x = _model_and_batch()
    (model(x) ** 2).mean().backward()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_zero_grad_detaches_a_graph_carrying_grad_as_torch():
    p = tl.nn.Parameter(np.array([1.0, 2.0]))
    (p ** 3).sum().backward(create_graph=True)
    grad = p.grad
    assert grad.requires_grad
    optim.SGD([p], lr=0.1).zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.requires_grad and grad.is_leaf
    np.testing.assert_array_equal(grad.data, 0.0)


def test_clip_grad_norm_scales_the_grad_arrays_in_place():
    model, x = _model_and_batch()
    (model(x) * 100.0).sum().backward()
    arrays = [p.grad.data for p in model.parameters()]
    optim.clip_grad_norm_(model.parameters(), max_norm=1.0)
    assert all(p.grad.data is a for p, a in zip(model.parameters(), arrays))
    total = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays))
    assert total == pytest.approx(1.0, rel=1e-4)


def test_module_to_casts_the_grad_to_a_tensor_of_the_new_dtype():
    model, x = _model_and_batch()
    (model(x) ** 2).mean().backward()
    model.to(tl.float64)
    for p in model.parameters():
        assert isinstance(p.grad, tl.Tensor) and p.grad.dtype == np.float64 == p.dtype
