"""tensorlite.nn.utils against torch.nn.utils: clipping by norm and by value, and parameters
as one flat vector."""

import numpy as np
import pytest

import tensorlite as tl

torch = pytest.importorskip("torch")


def pair(shapes, seed=0):
    """The same float64 parameters with the same gradients, as tensorlite and torch tensors."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) * 3 for s in shapes]
    ours = [tl.nn.Parameter(v.copy(), dtype=np.float64) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
    for p, q, g in zip(ours, theirs, grads):
        p.grad = tl.tensor(g.copy(), dtype=tl.float64)
        q.grad = torch.tensor(g.copy())
    return ours, theirs


SHAPES = [(3, 4), (5,), (2, 1, 3)]


@pytest.mark.parametrize("max_norm, norm_type", [(0.5, 2.0), (100.0, 2.0), (1.0, float("inf")), (2.0, 1.0)])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    ours, theirs = pair(SHAPES)
    total = tl.nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    total_ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(float(total_ref), rel=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12)
    assert tl.nn.utils.clip_grad_norm_ is tl.optim.clip_grad_norm_


def test_clip_grad_value_matches_torch_in_place():
    ours, theirs = pair(SHAPES, seed=1)
    arrays = [p.grad.data for p in ours]
    tl.nn.utils.clip_grad_value_(ours, 1.5)
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    for p, q, array in zip(ours, theirs, arrays):
        np.testing.assert_array_equal(np.asarray(p.grad), q.grad.numpy())
        assert p.grad.data is array  # clamped in place, as torch does
    assert max(float(np.abs(a).max()) for a in arrays) == 1.5


def test_parameters_to_vector_and_back_match_torch():
    ours, theirs = pair(SHAPES, seed=2)
    vector = tl.nn.utils.parameters_to_vector(ours)
    np.testing.assert_array_equal(vector.numpy(), torch.nn.utils.parameters_to_vector(theirs).detach().numpy())
    new = np.arange(vector.numel(), dtype=np.float64)
    tl.nn.utils.vector_to_parameters(tl.tensor(new, dtype=tl.float64), ours)
    torch.nn.utils.vector_to_parameters(torch.tensor(new), theirs)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.numpy(), q.detach().numpy())


def test_vector_of_the_wrong_length_names_both_sizes():
    ours, _ = pair(SHAPES)
    with pytest.raises(ValueError, match="26 elements, the parameters 23"):
        tl.nn.utils.vector_to_parameters(tl.zeros(26, dtype=tl.float64), ours)
