"""Tests of tensorlite.creation: shapes, dtypes, values and PyTorch's argument forms, and that
random tensors come from tl.manual_seed's generator."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite import creation
from tensorlite.testing import strategies as tst


@given(shape=tst.shapes(max_dims=3), dtype=st.sampled_from([None, np.float32, np.float64]))
def test_rand_shape_dtype_and_range(shape, dtype):
    for t in (creation.rand(*shape, dtype=dtype), creation.rand(shape, dtype=dtype),
              creation.rand(list(shape), dtype=dtype)):
        assert isinstance(t, tl.Tensor) and t.shape == shape
        assert t.dtype == (np.float32 if dtype is None else dtype)
        assert np.all((t.data >= 0) & (t.data < 1))


def test_rand_and_randn_like_follow_manual_seed():
    tl.manual_seed(5)
    a = creation.rand(4, 3, dtype=np.float64)
    b = creation.randn_like(a)
    c = creation.rand_like(tl.zeros(2, dtype=np.float32))
    tl.manual_seed(5)
    np.testing.assert_array_equal(creation.rand(4, 3, dtype=np.float64).data, a.data)
    np.testing.assert_array_equal(creation.randn_like(a).data, b.data)
    assert c.dtype == np.float32 and b.dtype == np.float64 and b.shape == (4, 3)
    # the same draws as the library's generator gives directly
    tl.manual_seed(5)
    np.testing.assert_array_equal(a.data, tl.rng().random((4, 3)))
    np.testing.assert_array_equal(b.data, tl.rng().standard_normal((4, 3)))
    # float32 gets the float64 draws rounded
    tl.manual_seed(5)
    np.testing.assert_array_equal(creation.rand(4, 3).data, a.data.astype(np.float32))


def test_rand_is_roughly_uniform():
    tl.manual_seed(0)
    x = creation.rand(20000, dtype=np.float64).data
    assert abs(x.mean() - 0.5) < 0.01 and abs(x.var() - 1 / 12) < 0.005
    hist, _ = np.histogram(x, bins=10, range=(0, 1))
    assert hist.min() > 1800 and hist.max() < 2200


@given(low=st.integers(-50, 50), span=st.integers(1, 20), shape=tst.shapes(max_dims=2))
def test_randint_forms_and_range(low, span, shape):
    t = creation.randint(low, low + span, shape)
    assert t.dtype == np.int64 and t.shape == shape
    assert np.all((t.data >= low) & (t.data < low + span))
    assert np.all(creation.randint(span, shape).data < span)  # randint(high, size)
    assert creation.randint(span, size=shape).shape == shape
    assert creation.randint(low, low + span, size=shape, dtype=np.int32).dtype == np.int32


def test_randint_covers_every_value_and_errors():
    tl.manual_seed(1)
    assert set(np.unique(creation.randint(3, 7, (1000,)).data)) == {3, 4, 5, 6}
    with pytest.raises(ValueError, match=r"randint: high \(3\) must be greater than low \(3\)"):
        creation.randint(3, 3, (2,))
    with pytest.raises(TypeError, match="size must be a tuple"):
        creation.randint(0, 3, 5)
    with pytest.raises(TypeError, match="randint"):
        creation.randint(5)
    with pytest.raises(TypeError, match="only floating point"):
        creation.randint(0, 3, (2,), requires_grad=True)


@pytest.mark.parametrize("fill, dtype, expected", [
    (1.5, None, np.float32), (2, None, np.int64), (True, None, np.bool_), (3, np.float64, np.float64)])
def test_full_infers_dtype_like_pytorch(fill, dtype, expected):
    t = creation.full((2, 3), fill, dtype=dtype)
    assert t.dtype == expected and t.shape == (2, 3)
    np.testing.assert_array_equal(t.data, np.full((2, 3), fill))
    assert creation.full([4], fill).shape == (4,) and creation.full(4, fill).shape == (4,)


def test_full_like_keeps_shape_and_dtype():
    base = tl.Tensor(np.zeros((2, 2), dtype=np.float64))
    t = creation.full_like(base, 7)
    assert t.dtype == np.float64 and np.all(t.data == 7)
    assert creation.full_like(base, 1, dtype=np.int64).dtype == np.int64
    assert creation.full_like(np.zeros(3, dtype=np.int32), 2).dtype == np.int32
    with pytest.raises(TypeError, match="full_like: expects a Tensor"):
        creation.full_like([1, 2], 0)


def test_eye_linspace_empty():
    np.testing.assert_array_equal(creation.eye(3).data, np.eye(3))
    assert creation.eye(3).dtype == np.float32
    np.testing.assert_array_equal(creation.eye(2, 4, dtype=np.int64).data, np.eye(2, 4))
    lin = creation.linspace(-1, 1, 5)
    assert lin.dtype == np.float32
    np.testing.assert_allclose(lin.data, [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(creation.linspace(0, 1, 11, dtype=np.float64).data,
                                  np.linspace(0, 1, 11))
    assert creation.linspace(0, 1, 1).shape == (1,)
    e = creation.empty(2, 3, dtype=np.float64)
    assert e.shape == (2, 3) and e.dtype == np.float64
    assert creation.empty((0, 4)).shape == (0, 4)


def test_requires_grad_and_bad_arguments():
    t = creation.rand(3, requires_grad=True)
    (t * 2).sum().backward()
    np.testing.assert_array_equal(t.grad, 2.0)
    assert creation.full((2,), 0.5, requires_grad=True).requires_grad
    assert creation.eye(2, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match=r"rand: sizes must be non-negative integers, got \(2, -1\)"):
        creation.rand(2, -1)
    with pytest.raises(ValueError, match="linspace: sizes"):
        creation.linspace(0, 1, 2.5)
    with pytest.raises(TypeError, match="rand_like: needs a floating dtype, got int64"):
        creation.rand_like(tl.Tensor(np.zeros(2, dtype=np.int64)))
    with pytest.raises(TypeError, match="randn_like: needs a floating dtype"):
        creation.randn_like(tl.zeros(2), dtype=np.int32)
