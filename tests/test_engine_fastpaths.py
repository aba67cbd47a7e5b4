"""The engine's shortcuts give the same gradients as the long way round.

* `x[index]` has an unplaced gradient (`IndexedGrad`) that the engine adds into one buffer per
  node, instead of one zero-filled array per slice summed afterwards: split/chunk, a slice used
  twice, overlapping slices, repeated integer indices, slices mixed with ordinary uses of x,
  hooks, anomaly mode, and second derivatives through all of it.
* The optimizer and clipping shortcuts match the textbook per-parameter loops.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite.testing import gradcheck, gradgradcheck
from tensorlite.testing import strategies as tst


def dense_gradient_of_index(shape, index, values):
    """The textbook gradient of x[index]: values scatter-added into zeros of x's shape."""
    grad = np.zeros(shape)
    np.add.at(grad, index, values)
    return grad


# ---------------------------------------------------------------------------
# split / chunk / slicing: first and second derivatives
# ---------------------------------------------------------------------------

@given(data=st.data())
def test_split_gradient_matches_finite_differences(data):
    rows = data.draw(st.integers(1, 3), label="rows")
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=4), label="sizes")
    x = data.draw(tst.tensors((rows, sum(sizes))), label="x")
    weights = [data.draw(tst.tensors((rows, size)), label="w") for size in sizes]

    def f(x):
        pieces = x.split(sizes, dim=1)
        return sum((p * w).sum() for p, w in zip(pieces, weights)) + (pieces[0] * pieces[-1].sum())

    assert gradcheck(f, [x])
    assert gradgradcheck(f, [x])


@given(data=st.data())
def test_assembling_slice_pieces_matches_scatter_adding_them(data):
    """Pieces that cover one axis exactly once are written, not added into zeros: whether they
    do (split, chunk) or not (gaps, overlaps, a second axis, a step), the sum is the textbook one."""
    from tensorlite.autograd.engine import _assemble
    from tensorlite.autograd.function import IndexedGrad
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), label="shape"))
    axis = data.draw(st.integers(0, len(shape) - 1), label="axis")
    cuts = sorted(data.draw(st.lists(st.integers(0, shape[axis]), max_size=3), label="cuts"))
    bounds = [0, *cuts, shape[axis]]
    spans = [(a, b) for a, b in zip(bounds, bounds[1:])]
    spans += data.draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=2),
                       label="extra spans (gaps or overlaps)")
    if data.draw(st.booleans(), label="drop one"):
        spans = spans[1:]
    step = data.draw(st.sampled_from([None, 1, 2]), label="step")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    pieces, expected = [], np.zeros(shape)
    for start, stop in spans:
        index = (slice(None),) * axis + (slice(start, stop, step),)
        values = rng.standard_normal(np.zeros(shape)[index].shape)
        pieces.append(IndexedGrad(values, index, False, shape))
        expected[index] += values
    if not pieces:
        return
    np.testing.assert_array_equal(_assemble(pieces, None), expected)
    dense = rng.standard_normal(shape)
    np.testing.assert_allclose(_assemble(pieces, dense), expected + dense, rtol=1e-15, atol=1e-15)


@given(data=st.data())
def test_chunk_of_an_intermediate_like_qkv(data):
    batch, time, channels = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 3),
                                                st.integers(1, 2)), label="B, T, C")
    x = data.draw(tst.tensors((batch, time, 3 * channels), min_value=-2, max_value=2), label="x")

    def f(x):
        h = x * x  # a non-leaf, as the output of c_attn is
        q, k, v = h.chunk(3, dim=2)
        return (q * k).tanh() + v

    assert gradcheck(f, [x])
    assert gradgradcheck(f, [x])


def test_a_slice_used_twice_and_overlapping_slices():
    x = np.random.default_rng(0).standard_normal((4, 5))

    def f(x):
        a = x[1:3]
        b = x[0:3, 1:]  # overlaps a
        c = x[2]        # overlaps both
        return (a * a).sum() + (a * 3).sum() + (b.exp()).sum() + (c * c[::-1]).sum()

    assert gradcheck(f, [x])
    assert gradgradcheck(f, [x])


def test_repeated_integer_indices_add_up():
    x = np.random.default_rng(1).standard_normal((5, 2))
    index = np.array([0, 3, 3, 0, 4])

    def f(x):
        return (x[index] * x[index[::-1]]).sum() + x[index].sum()

    assert gradcheck(f, [x])
    assert gradgradcheck(f, [x])


def test_slices_mixed_with_whole_uses_give_the_textbook_gradient():
    rng = np.random.default_rng(2)
    x = tl.Tensor(rng.standard_normal((3, 6)), requires_grad=True)
    g_whole, g_left, g_right = rng.standard_normal((3, 6)), rng.standard_normal((3, 2)), \
        rng.standard_normal((3, 4))
    h = x * 1.0
    left, right = h.split([2, 4], dim=1)
    loss = (h * g_whole).sum() + (left * g_left).sum() + (right * g_right).sum() \
        + (h * g_whole).sum()
    loss.backward()
    expected = 2 * g_whole + dense_gradient_of_index((3, 6), (slice(None), slice(0, 2)), g_left) \
        + dense_gradient_of_index((3, 6), (slice(None), slice(2, 6)), g_right)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_a_leaf_split_directly_gets_the_whole_gradient():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    a, b, c = x.split(1, dim=1)
    (a * 1 + b * 2 + c * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    # a second backward adds to it, as for any leaf
    a2, _ = x.split([1, 2], dim=1)
    a2.sum().backward()
    np.testing.assert_array_equal(x.grad, [[2.0, 2.0, 3.0], [2.0, 2.0, 3.0]])


def test_gradients_of_slices_keep_the_promoted_dtype():
    # a float32 x whose slice meets a float64 tensor: its gradient is float64 before the leaf
    # casts it back, as the zero-filled gradient was
    x = tl.Tensor(np.ones((2, 4), dtype=np.float32), requires_grad=True)
    h = x * 1.0
    seen = []
    h.register_hook(lambda grad: seen.append(grad.dtype))
    left, right = h.split(2, dim=1)
    (left * tl.Tensor(np.full((2, 2), 0.1))).sum().backward()
    assert seen == [np.float64]
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [[0.1, 0.1, 0, 0], [0.1, 0.1, 0, 0]], rtol=1e-6)


def test_hooks_and_retain_grad_see_the_assembled_gradient():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    h = x * 2.0
    h.retain_grad()
    seen = []
    h.register_hook(lambda grad: seen.append(grad.data.copy()))
    a, b = h.split([1, 2], dim=1)
    (a * 5).sum().backward(retain_graph=True)
    np.testing.assert_array_equal(seen[0], [[5, 0, 0], [5, 0, 0]])
    np.testing.assert_array_equal(h.grad, [[5, 0, 0], [5, 0, 0]])
    np.testing.assert_array_equal(x.grad, [[10, 0, 0], [10, 0, 0]])
    (b * 7).sum().backward()
    np.testing.assert_array_equal(seen[1], [[0, 7, 7], [0, 7, 7]])


def test_a_hook_on_a_slice_can_replace_its_gradient():
    x = tl.Tensor(np.zeros((2, 2)), requires_grad=True)
    a, b = x.split(1, dim=0)
    a.register_hook(lambda grad: grad * 10)
    (a.sum() + b.sum()).backward()
    np.testing.assert_array_equal(x.grad, [[10, 10], [1, 1]])


def test_autograd_grad_through_split():
    x = tl.Tensor(np.arange(4.0), requires_grad=True)
    a, b = x.split(2)
    (grad,) = tl.autograd.grad((a * a).sum() + (b * 3).sum(), x)
    np.testing.assert_array_equal(grad.data, [0.0, 2.0, 3.0, 3.0])


def test_anomaly_mode_still_blames_the_op_whose_gradient_turns_nonfinite():
    x = tl.Tensor(np.array([1.0, 0.0, 2.0]), requires_grad=True)
    a, b = x.split([2, 1])
    with tl.detect_anomaly():
        loss = a.sqrt().sum() + b.sum()  # d sqrt(0) = inf, born in Sqrt's backward
        with pytest.raises(RuntimeError, match="Sqrt"):
            loss.backward()


def test_the_profiler_still_sees_getitem_backward():
    from tensorlite.profiler import profile
    x = tl.Tensor(np.ones((2, 3)), requires_grad=True)
    with profile() as profiler:
        a, b, c = x.split(1, dim=1)
        (a + b + c).sum().backward()
    assert profiler.calls[("GetItem", "forward")] == 3
    assert profiler.calls[("GetItem", "backward")] == 3
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_attention_gradients_arrive_already_assembled_as_the_packed_projection():
    """The Numba attention kernel writes q's, k's and v's gradients into one array laid out as
    the qkv projection they were split from, so the engine uses that array as qkv's gradient
    without a copy; the values are those of the NumPy reference."""
    from tensorlite.autograd.engine import _assemble, _already_in_place
    from tensorlite.autograd.function import IndexedGrad
    from tensorlite.kernels import numba as fast, numpy as reference
    B, T, nh, hs = 2, 5, 3, 4
    C = nh * hs
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    out, logsumexp = reference.attention(q, k, v, 0.5, True)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    pieces = []
    for i, g in enumerate(fast.attention_backward(grad, q, k, v, logsumexp, 0.5, True)):
        index = (slice(None), slice(None), slice(i * C, (i + 1) * C))
        pieces.append(IndexedGrad(g.transpose(0, 2, 1, 3).reshape(B, T, C), index, False,
                                  qkv.shape))
    whole = _already_in_place(pieces, np.dtype(np.float32))
    assert whole is not None and _assemble(pieces, None).base is pieces[0].values.base  # no copy
    expected = np.concatenate([g.transpose(0, 2, 1, 3).reshape(B, T, C) for g in
                               reference.attention_backward(grad, q, k, v, logsumexp, 0.5, True)],
                              axis=2)
    np.testing.assert_allclose(whole, expected, rtol=1e-4, atol=1e-5)
