"""Guards of the engine, as in PyTorch: only floating point tensors require grad, `.data` keeps
its shape, and backward passes in several threads accumulate into a shared leaf without losing
a contribution."""

import sys
import threading

import numpy as np
import pytest

import tensorlite as tl


# ----------------------------------------------------------------------------
# requires_grad: floating point only, whichever way it is set

@pytest.mark.parametrize("values", [np.arange(3), np.array([True, False]),
                                    np.arange(4, dtype=np.int32).reshape(2, 2)])
def test_integer_and_bool_tensors_cannot_require_grad(values):
    with pytest.raises(TypeError, match="only floating point tensors can require gradients"):
        tl.Tensor(values, requires_grad=True)
    t = tl.Tensor(values)
    with pytest.raises(TypeError, match=f"only floating point.*{values.dtype}"):
        t.requires_grad = True
    with pytest.raises(TypeError, match="only floating point"):
        t.requires_grad_()
    assert t.requires_grad is False
    t.requires_grad = False  # turning it off is always fine
    assert t.requires_grad_(False) is t and not t.requires_grad


def test_floating_point_tensors_require_grad_by_assignment():
    x = tl.Tensor(np.ones(3, np.float32))
    x.requires_grad = 1
    assert x.requires_grad is True
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


# ----------------------------------------------------------------------------
# .data: another array of the same shape, never of another shape

def test_assigning_data_of_another_shape_names_both_shapes():
    w = tl.Tensor(np.ones((4, 4), np.float32), requires_grad=True)
    original = w.data
    with pytest.raises(ValueError, match=r"shape \(2, 4\) to a tensor of shape \(4, 4\)"):
        w.data = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"shape \(16,\) to a tensor of shape \(4, 4\)"):
        w.data = tl.zeros(16)
    with pytest.raises(ValueError, match=r"shape \(\) to a tensor of shape \(4, 4\)"):
        w.data = 3.0
    assert w.data is original  # a refused assignment changes nothing
    (w * 3.0).sum().backward()
    assert w.grad.shape == (4, 4)


def test_assigning_data_may_change_the_dtype():
    w = tl.nn.Parameter(np.ones((2, 3), np.float32))
    w.data = w.data.astype(np.float64)
    assert w.dtype == np.float64
    w.data = tl.Tensor(np.full((2, 3), 2.0, np.float32))  # a Tensor: its array is taken
    assert isinstance(w.data, np.ndarray) and w.dtype == np.float32
    (w * w).sum().backward()
    assert w.grad.shape == (2, 3) and w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, 4.0)
    layer = tl.nn.Linear(3, 2).double()  # Module.to rebinds each parameter's data
    assert layer.weight.dtype == np.float64 and layer.weight.shape == (2, 3)


# ----------------------------------------------------------------------------
# Backward passes in threads into one shared leaf

def test_concurrent_backward_passes_accumulate_every_contribution():
    """Two threads each run 200 backward passes into one leaf, 30 times: the gradient must be
    exactly 400 everywhere. The leaf is large enough that NumPy releases the GIL inside `+=`,
    and the switch interval is tiny, so unsynchronised accumulation loses updates."""
    passes, trials = 200, 30
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        short = []
        for _ in range(trials):
            w = tl.Tensor(np.zeros(1 << 16), requires_grad=True)
            start = threading.Barrier(2)

            def run_backward_passes():
                start.wait()
                for _ in range(passes):
                    (w * 1.0).sum().backward()

            workers = [threading.Thread(target=run_backward_passes) for _ in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if w.grad is None or not np.all(w.grad == 2 * passes):
                short.append(0 if w.grad is None else float(w.grad.min()))
    finally:
        sys.setswitchinterval(previous_interval)
    assert not short, f"{len(short)} of {trials} trials lost contributions (minimum {min(short)})"
