"""The Numba kernels compute what the NumPy reference kernels compute.

Every kernel in tensorlite/kernels/jitted.py is checked against its twin in reference.py
on Hypothesis-drawn shapes (odd sizes, size 1), both float dtypes and non-contiguous
inputs (strided slices, transposed views), plus the edge cases each kernel is known for.
The reference kernels themselves are checked against hand-written loops where their
meaning is not a one-line NumPy identity (AdamW, the causal mask, embedding scatter).
"""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tensorlite import kernels
from tensorlite.kernels import jitted, reference

FLOATS = [np.float32, np.float64]
LAYOUTS = ["contiguous", "strided", "transposed"]


# ----------------------------------------------------------------------------
# helpers

def make_array(rng, shape, dtype, layout, scale=1.0):
    """A standard-normal array of `shape` and `dtype`, stored in the given layout:
    contiguous, every other element of a wider array ('strided'), or a view whose
    last two axes are swapped ('transposed'; needs ndim >= 2)."""
    shape = tuple(shape)
    if layout == "strided":
        wide = shape[:-1] + (2 * shape[-1],)
        return (scale * rng.standard_normal(wide)).astype(dtype)[..., ::2]
    if layout == "transposed" and len(shape) >= 2:
        swapped = shape[:-2] + (shape[-1], shape[-2])
        return np.swapaxes((scale * rng.standard_normal(swapped)).astype(dtype), -1, -2)
    return (scale * rng.standard_normal(shape)).astype(dtype)


@st.composite
def cases(draw, min_dims=1, max_dims=3, max_side=9, max_last=70):
    """(rng, shape, dtype, layout) with a short-ish shape and an odd-friendly last axis."""
    lead = draw(st.lists(st.integers(1, max_side), min_size=min_dims - 1, max_size=max_dims - 1))
    last = draw(st.integers(1, max_last))
    dtype = draw(st.sampled_from(FLOATS))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, tuple(lead) + (last,), dtype, layout


def assert_close(actual, expected, dtype, scale=1.0):
    """Equal within what float32 (or float64) rounding allows; shapes and dtypes equal."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if np.dtype(dtype) == np.float32:
        np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-6 * scale)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12 * scale)


@pytest.fixture(autouse=True)
def numba_kernels():
    """Run with the Numba kernel set (and its threading policy) active."""
    previous = kernels.active()
    kernels.use("numba")
    yield
    kernels.use(previous)


# ----------------------------------------------------------------------------
# fast_exp: the polynomial exponential inside the float32 kernels

def test_fast_exp_float32_relative_error():
    x = np.linspace(-87.0, 88.0, 400_001).astype(np.float32)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    exact = np.exp(x.astype(np.float64))
    relative = np.abs(out.astype(np.float64) - exact) / exact
    assert relative.max() < 3e-7


def test_fast_exp_special_values():
    x = np.array([-np.inf, -1e4, -100.0, 0.0, 100.0, np.inf, np.nan], np.float32)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    assert out[0] == 0 and out[1] == 0 and out[2] == 0
    assert out[3] == 1
    assert out[4] == np.inf and out[5] == np.inf
    assert np.isnan(out[6])


def test_fast_exp_float64_is_the_library_exp():
    x = np.linspace(-700, 700, 1001)
    out = np.empty_like(x)
    jitted.exp_array(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=4e-16)  # within one rounding


# ----------------------------------------------------------------------------
# matmul and its backward

@st.composite
def matmul_operands(draw):
    """(a, b, dtype): a (..., M, K), b (..., K, N) with broadcastable batch shapes."""
    m, k, n = (draw(st.integers(1, 70)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 4), max_size=2))
    a_batch = tuple(d if draw(st.booleans()) else 1 for d in batch)
    b_batch = tuple(d if draw(st.booleans()) else 1 for d in batch)
    b_batch = b_batch[draw(st.integers(0, len(batch))):]  # b may have fewer batch dims
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = make_array(rng, a_batch + (m, k), dtype, draw(st.sampled_from(LAYOUTS)))
    b = make_array(rng, b_batch + (k, n), dtype, draw(st.sampled_from(LAYOUTS)))
    return a, b, dtype


@given(matmul_operands())
def test_matmul_matches_reference(operands):
    a, b, dtype = operands
    assert_close(jitted.matmul(a, b), reference.matmul(a, b), dtype, scale=a.shape[-1])


@given(matmul_operands(), st.integers(0, 2**32 - 1))
def test_matmul_backward_matches_reference(operands, seed):
    a, b, dtype = operands
    out_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    grad = make_array(np.random.default_rng(seed), out_shape, dtype, "contiguous")
    fast = jitted.matmul_backward(grad, a, b)
    slow = reference.matmul_backward(grad, a, b)
    assert_close(fast[0], slow[0], dtype, scale=b.shape[-1])
    assert_close(fast[1], slow[1], dtype, scale=a.shape[-2])


@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_gpt_shapes_and_views(dtype):
    """The shapes the GPT uses, large enough for the parallel BLAS path, with the
    transposed views attention and linear layers pass (no copies needed)."""
    rng = np.random.default_rng(0)
    x = make_array(rng, (96, 128), dtype, "contiguous")
    weight = make_array(rng, (384, 128), dtype, "contiguous")
    assert_close(jitted.matmul(x, weight.T), x @ weight.T, dtype, scale=128)
    assert_close(jitted.matmul(weight.T.T, x.T), weight @ x.T, dtype, scale=128)
    q = make_array(rng, (3, 4, 33, 32), dtype, "contiguous")
    k = make_array(rng, (3, 4, 64, 32), dtype, "strided")
    assert_close(jitted.matmul(q, k.swapaxes(-1, -2)), q @ k.swapaxes(-1, -2), dtype, scale=32)
    a = make_array(rng, (5, 1, 40, 50), dtype, "transposed")
    b = make_array(rng, (3, 50, 60), dtype, "contiguous")
    assert_close(jitted.matmul(a, b), a @ b, dtype, scale=50)
    grad = make_array(rng, (5, 3, 40, 60), dtype, "contiguous")
    for fast, slow in zip(jitted.matmul_backward(grad, a, b),
                          reference.matmul_backward(grad, a, b)):
        assert_close(fast, slow, dtype, scale=60)


def test_matmul_falls_back_for_integers_and_mixed_dtypes():
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(jitted.matmul(a, a.T), a @ a.T)
    f = np.ones((40, 40), np.float32)
    d = np.ones((40, 40), np.float64)
    assert jitted.matmul(f, d).dtype == np.float64
    with pytest.raises(ValueError):
        jitted.matmul(np.ones((40, 41), np.float32), np.ones((40, 41), np.float32))


# ----------------------------------------------------------------------------
# linear and its backward

@st.composite
def linear_operands(draw):
    """(x, weight, bias, grad, dtype): x (N, in), weight (out, in), bias (out,) or None."""
    n_rows, n_in, n_out = (draw(st.integers(1, 80)) for _ in range(3))
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_array(rng, (n_rows, n_in), dtype, draw(st.sampled_from(LAYOUTS)))
    weight = make_array(rng, (n_out, n_in), dtype, draw(st.sampled_from(LAYOUTS)))
    bias = make_array(rng, (n_out,), dtype, draw(st.sampled_from(["contiguous", "strided"])))
    grad = make_array(rng, (n_rows, n_out), dtype, draw(st.sampled_from(LAYOUTS)))
    return x, weight, bias if draw(st.booleans()) else None, grad, dtype


@given(linear_operands())
def test_linear_and_backward_match_reference(operands):
    x, weight, bias, grad, dtype = operands
    expected = x @ weight.T + (0 if bias is None else bias)
    assert_close(reference.linear(x, weight, bias), expected, dtype, scale=x.shape[1])
    assert_close(jitted.linear(x, weight, bias), expected, dtype, scale=x.shape[1])
    slow = reference.linear_backward(grad, x, weight)
    assert_close(slow[0], grad @ weight, dtype, scale=weight.shape[0])
    assert_close(slow[1], grad.T @ x, dtype, scale=x.shape[0])
    assert_close(slow[2], grad.sum(axis=0), dtype, scale=x.shape[0])
    fast = jitted.linear_backward(grad, x, weight)
    for a, b, scale in zip(fast, slow, (weight.shape[0], x.shape[0], x.shape[0])):
        assert_close(a, b, dtype, scale=scale)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(96, 128, 384), (5, 128, 512), (300, 40, 3)])
def test_linear_blocks_and_bias_on_the_parallel_path(dtype, shape):
    """Large enough for the parallel BLAS path: row blocks (tall x) and column blocks
    (wide output) must each get their slice of the bias, exactly once."""
    n_rows, n_in, n_out = shape
    rng = np.random.default_rng(1)
    x = make_array(rng, (n_rows, n_in), dtype, "contiguous")
    weight = make_array(rng, (n_out, n_in), dtype, "contiguous")
    bias = make_array(rng, (n_out,), dtype, "contiguous")
    assert_close(jitted.linear(x, weight, bias), x @ weight.T + bias, dtype, scale=n_in)
    grad = make_array(rng, (n_rows, n_out), dtype, "contiguous")
    for fast, slow in zip(jitted.linear_backward(grad, x, weight),
                          reference.linear_backward(grad, x, weight)):
        assert_close(fast, slow, dtype, scale=max(n_rows, n_out))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("x_layout,weight_layout", [("contiguous", "contiguous"),
                                                    ("transposed", "transposed"),
                                                    ("strided", "contiguous")])
def test_linear_backward_row_blocks(dtype, blocks, x_layout, weight_layout, monkeypatch):
    """linear_backward cuts the rows into one block per thread (uneven blocks here, with x
    and weight in the layouts BLAS reads in place or through a copy): each block's grad_x
    rows, and the partial grad_weight and bias gradients summed over the blocks, must
    equal the reference. More blocks than threads still run, a few per thread."""
    monkeypatch.setattr(jitted.numba, "get_num_threads", lambda: blocks)
    n_rows = blocks * jitted.LINEAR_BACKWARD_MIN_BLOCK_ROWS + 37
    rng = np.random.default_rng(blocks)
    x = make_array(rng, (n_rows, 24), dtype, x_layout)
    weight = make_array(rng, (40, 24), dtype, weight_layout)
    grad = make_array(rng, (n_rows, 40), dtype, "contiguous")
    plans = []
    plan = jitted._linear_backward_plan
    monkeypatch.setattr(jitted, "_linear_backward_plan",
                        lambda *args: plans.append(plan(*args)) or plans[-1])
    for fast, slow in zip(jitted.linear_backward(grad, x, weight),
                          reference.linear_backward(grad, x, weight)):
        assert_close(fast, slow, dtype, scale=n_rows)
    tasks, bias_rows = plans[0]
    assert len(tasks) == 2 * blocks  # a grad_x and a grad_weight task per block
    assert bias_rows[::2, 1].tolist() == [round((i + 1) * n_rows / blocks) for i in range(blocks)]


# ----------------------------------------------------------------------------
# softmax and log-softmax

@given(cases(), st.sampled_from([1.0, 30.0]))
def test_softmax_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    y = reference.softmax(x)
    assert_close(jitted.softmax(x), y, dtype)
    grad = make_array(rng, shape, dtype, layout)
    assert_close(jitted.softmax_backward(y, grad), reference.softmax_backward(y, grad), dtype)


@given(cases(), st.sampled_from([1.0, 30.0]))
def test_log_softmax_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    y = reference.log_softmax(x)
    assert_close(jitted.log_softmax(x), y, dtype, scale=scale)
    grad = make_array(rng, shape, dtype, layout)
    assert_close(jitted.log_softmax_backward(y, grad), reference.log_softmax_backward(y, grad),
                 dtype)


@pytest.mark.parametrize("module", [reference, jitted])
def test_softmax_handles_minus_infinity(module):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], np.float32)
    y = module.softmax(x)
    np.testing.assert_allclose(y, [[1 / (1 + np.e), 0, np.e / (1 + np.e)], [0, 1, 0]],
                               rtol=1e-6)
    assert y[0, 1] == 0 and y[1, 0] == 0


# ----------------------------------------------------------------------------
# attention

def make_heads(rng, batch, n, dim, dtype, layout):
    """(*batch, n, dim) queries, keys or values in one of the layouts attention meets:
    LAYOUTS, or 'packed': the heads of a (B, T, 3, nh, hs) q/k/v projection, as a GPT
    hands them over (row stride 3 * nh * hs, head stride hs)."""
    if layout == "packed" and len(batch) == 2:
        packed = rng.standard_normal((batch[0], n, 3, batch[1], dim)).astype(dtype)
        return packed[:, :, rng.integers(3)].transpose(0, 2, 1, 3)
    return make_array(rng, batch + (n, dim), dtype, "contiguous" if layout == "packed" else layout)


@st.composite
def attention_cases(draw):
    tq = draw(st.integers(1, 20))
    is_causal = draw(st.booleans())
    tk = tq + draw(st.sampled_from([0, 0, 1, 7]))  # Tq == Tk is the training case
    batch = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    dim = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(FLOATS))
    layouts = draw(st.lists(st.sampled_from(LAYOUTS + ["packed"]), min_size=4, max_size=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 0.125, 8.0]))
    return rng, batch, tq, tk, dim, dtype, layouts, scale, is_causal


@given(attention_cases())
def test_attention_and_backward(case):
    rng, batch, tq, tk, dim, dtype, layouts, scale, is_causal = case
    q = make_heads(rng, batch, tq, dim, dtype, layouts[0])
    k = make_heads(rng, batch, tk, dim, dtype, layouts[1])
    v = make_heads(rng, batch, tk, dim, dtype, layouts[2])
    out, logsumexp = jitted.attention(q, k, v, scale, is_causal)
    expected_out, expected_logsumexp = reference.attention(q, k, v, scale, is_causal)
    assert_close(out, expected_out, dtype)
    assert_close(logsumexp, expected_logsumexp, dtype, scale=10.0)
    grad = make_heads(rng, batch, tq, dim, dtype, layouts[3])
    grads = jitted.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)
    expected = reference.attention_backward(grad, q, k, v, expected_logsumexp, scale, is_causal)
    if dtype == np.float64:
        for actual, wanted in zip(grads, expected):
            # grad_scores = p * (grad_p - rowsum) * scale: rounding grows with the scale
            assert_close(actual, wanted, dtype, scale=10.0 * max(scale, 1.0))
        return
    # In float32 the gradients reach |100| when scaled scores reach |100|, and both kernel sets
    # then round by ~1e-3: hold the kernel to the reference's own error against float64.
    exact = reference.attention_backward(
        *(x.astype(np.float64) for x in (grad, q, k, v)),
        reference.attention(*(x.astype(np.float64) for x in (q, k, v)), scale, is_causal)[1],
        scale, is_causal)
    for actual, wanted, truth in zip(grads, expected, exact):
        assert actual.shape == truth.shape and actual.dtype == np.float32
        reference_error = np.abs(wanted - truth).max()
        assert np.abs(actual - truth).max() <= 2 * reference_error + 2e-5 * max(scale, 1.0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("extra_keys", [0, 5])
def test_attention_in_several_query_blocks(dtype, extra_keys):
    """Causal attention over more queries than one block (the last block partial): each
    block stops at its own last visible key, and grad_k / grad_v add up across blocks."""
    rng = np.random.default_rng(7)
    tq = 2 * jitted.ATTENTION_QUERY_BLOCK + 3
    q = make_heads(rng, (2, 3), tq, 8, dtype, "packed")
    k, v = (make_heads(rng, (2, 3), tq + extra_keys, 8, dtype, "contiguous") for _ in range(2))
    out, logsumexp = jitted.attention(q, k, v, 0.3, True)
    expected_out, expected_logsumexp = reference.attention(q, k, v, 0.3, True)
    assert_close(out, expected_out, dtype)
    assert_close(logsumexp, expected_logsumexp, dtype, scale=10.0)
    grad = make_heads(rng, (2, 3), tq, 8, dtype, "transposed")
    grads = jitted.attention_backward(grad, q, k, v, logsumexp, 0.3, True)
    expected = reference.attention_backward(grad, q, k, v, expected_logsumexp, 0.3, True)
    for actual, wanted in zip(grads, expected):
        assert_close(actual, wanted, dtype, scale=10.0)


def test_attention_reference_matches_the_definition():
    """softmax(q k^T * scale) v with the mask as an explicit loop over queries and keys."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(shape) for shape in [(2, 3, 4), (2, 5, 4), (2, 5, 4)])
    out, logsumexp = reference.attention(q, k, v, 0.5, True)
    for b in range(2):
        for i in range(3):
            visible = i + 5 - 3 + 1  # query i sits at position i + Tk - Tq
            scores = [0.5 * q[b, i] @ k[b, j] for j in range(visible)]
            weights = np.exp(scores) / np.sum(np.exp(scores))
            np.testing.assert_allclose(out[b, i], weights @ v[b, :visible], rtol=1e-12)
            np.testing.assert_allclose(logsumexp[b, i], np.log(np.sum(np.exp(scores))),
                                       rtol=1e-12)


def test_causal_mask_aligns_queries_to_the_end_of_the_keys():
    """Two queries over five keys (a KV cache of three): query 0 is at position 3, so with
    equal scores it averages the first four values and query 1 all five."""
    mask = reference._causal_mask(2, 5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    q, k = np.zeros((2, 3)), np.zeros((5, 3))
    v = np.arange(15.0).reshape(5, 3)
    for module in (reference, jitted):
        out, _ = module.attention(q, k, v, 1.0, True)
        np.testing.assert_allclose(out, [v[:4].mean(axis=0), v.mean(axis=0)])


def test_attention_output_merges_heads_without_a_copy():
    """The output is stored (B, T, nh, hs): moving the heads next to hs is a free view."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(3))
    out, _ = jitted.attention(q, k, v, 0.5, True)
    merged = out.transpose(0, 2, 1, 3).reshape(2, 4, 15)
    assert np.shares_memory(merged, out)


@pytest.mark.parametrize("module", [reference, jitted])
def test_attention_rejects_more_queries_than_keys_when_causal(module):
    with pytest.raises(ValueError, match="Tq <= Tk"):
        module.attention(np.zeros((3, 2), np.float32), np.zeros((2, 2), np.float32),
                         np.zeros((2, 2), np.float32), 1.0, True)


# ----------------------------------------------------------------------------
# layer norm

@given(cases(min_dims=2, max_dims=2, max_side=40, max_last=130), st.booleans())
def test_layer_norm_and_backward(case, affine):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale=3.0) + dtype(1.5)
    n_cols = shape[-1]
    weight = make_array(rng, (n_cols,), dtype, "strided") if affine else None
    bias = make_array(rng, (n_cols,), dtype, "contiguous") if affine else None
    y, mean, rstd = reference.layer_norm(x, weight, bias, 1e-5)
    fast = jitted.layer_norm(x, weight, bias, 1e-5)
    for a, b in zip(fast, (y, mean, rstd)):
        assert_close(a, b, dtype, scale=10.0)
    grad = make_array(rng, shape, dtype, layout)
    expected = reference.layer_norm_backward(grad, x, weight, mean, rstd)
    actual = jitted.layer_norm_backward(grad, x, weight, mean, rstd)
    for a, b in zip(actual, expected):
        assert_close(a, b, dtype, scale=10.0 * shape[0])


def test_layer_norm_reference_normalises():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    y, mean, rstd = reference.layer_norm(x, np.array([2.0] * 4), np.array([1.0] * 4), 0.0)
    np.testing.assert_allclose(mean, [3.0])
    np.testing.assert_allclose(rstd, [1 / math.sqrt(3.5)])
    np.testing.assert_allclose(y, 2 * (x - 3) / math.sqrt(3.5) + 1)


# ----------------------------------------------------------------------------
# GELU

@given(cases(), st.sampled_from([1.0, 6.0]))
def test_gelu_and_backward(case, scale):
    rng, shape, dtype, layout = case
    x = make_array(rng, shape, dtype, layout, scale)
    assert_close(jitted.gelu(x), reference.gelu(x), dtype, scale=scale)
    grad = make_array(rng, shape, dtype, layout)
    assert_close(jitted.gelu_backward(x, grad), reference.gelu_backward(x, grad), dtype,
                 scale=scale)


@pytest.mark.parametrize("module", [reference, jitted])
def test_gelu_tails(module):
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    np.testing.assert_allclose(module.gelu(x), [0, 0, 0, 50, 1e4], atol=1e-6)
    np.testing.assert_allclose(module.gelu_backward(x, np.ones_like(x)), [0, 0, 0.5, 1, 1],
                               atol=1e-6)


# ----------------------------------------------------------------------------
# cross-entropy

@st.composite
def cross_entropy_cases(draw):
    n_rows = draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 70))
    dtype = draw(st.sampled_from(FLOATS))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    logits = make_array(rng, (n_rows, n_classes), dtype, layout, scale)
    targets = rng.integers(0, n_classes, n_rows)
    targets[rng.random(n_rows) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = -100
    return logits, targets, dtype, scale


@given(cross_entropy_cases(), st.sampled_from([1.0, 0.5]))
def test_cross_entropy_and_backward(case, grad_loss):
    logits, targets, dtype, scale = case
    loss, lse = reference.cross_entropy(logits, targets, -100)
    fast_loss, fast_lse = jitted.cross_entropy(logits, targets, -100)
    assert isinstance(fast_loss, float)
    assert_close(fast_lse, lse, dtype, scale=scale)
    if np.isnan(loss):  # every row ignored
        assert np.isnan(fast_loss)
    else:
        assert fast_loss == pytest.approx(loss, rel=1e-5, abs=1e-5 * scale)
    expected = reference.cross_entropy_backward(logits, targets, lse, -100, grad_loss)
    actual = jitted.cross_entropy_backward(logits, targets, lse, -100, grad_loss)
    assert_close(actual, expected, dtype)


@pytest.mark.parametrize("module", [reference, jitted])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_huge_logits_and_minus_infinity(module, dtype):
    logits = np.array([[1e4, -1e4, 0.0],
                       [2e4, 2e4 - 1.0, -np.inf],
                       [-np.inf, 0.0, -np.inf],
                       [-np.inf, -np.inf, -np.inf]], dtype)  # the last row is ignored
    targets = np.array([0, 1, 1, -100])
    loss, lse = module.cross_entropy(logits, targets, -100)
    # Row losses: 0, 1 + log(1 + e^-1), 0. In float32 a logit of 2e4 is only known to
    # ~1e-3, which bounds how well any float32 implementation can do on row 1.
    tol = 2e-3 if dtype == np.float32 else 1e-9
    row1 = 1.0 + math.log1p(math.exp(-1.0))
    assert loss == pytest.approx(row1 / 3, abs=tol)
    assert lse[0] == 1e4 and lse[2] == 0 and lse[3] == -np.inf
    grad = module.cross_entropy_backward(logits, targets, lse, -100, 1.0)
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    p0 = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(grad[1], [p0 / 3, (1 - p0 - 1) / 3, 0.0], atol=tol)
    np.testing.assert_array_equal(grad[3], 0)
    assert grad[1, 2] == 0 and grad[2, 0] == 0 and grad[2, 2] == 0


@pytest.mark.parametrize("module", [reference, jitted])
def test_cross_entropy_all_rows_ignored(module):
    logits = np.ones((3, 4), np.float32)
    targets = np.full(3, 7)
    loss, lse = module.cross_entropy(logits, targets, 7)
    assert math.isnan(loss)
    np.testing.assert_array_equal(module.cross_entropy_backward(logits, targets, lse, 7, 1.0), 0)


def test_cross_entropy_rejects_out_of_range_targets():
    with pytest.raises(IndexError):
        jitted.cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3]), -100)


# ----------------------------------------------------------------------------
# embedding backward

@given(st.integers(1, 12), st.integers(1, 30), st.integers(1, 40), st.sampled_from(FLOATS),
       st.sampled_from(["contiguous", "strided"]), st.integers(0, 2**32 - 1))
def test_embedding_backward_accumulates_repeats(n_embeddings, n_tokens, dim, dtype, layout,
                                               seed):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_embeddings, (n_tokens, 2))  # more tokens than rows: repeats
    grad = make_array(rng, (n_tokens, 2, dim), dtype, layout)
    expected = np.zeros((n_embeddings, dim), np.float64)
    for token, row in zip(indices.reshape(-1), grad.reshape(-1, dim)):
        expected[token] += row  # the definition, one row at a time
    for module in (reference, jitted):
        out = module.embedding_backward(indices, grad, n_embeddings)
        assert out.dtype == dtype
        assert_close(out, expected.astype(dtype), dtype, scale=n_tokens)


def test_embedding_backward_rejects_out_of_range_indices():
    with pytest.raises(IndexError):
        jitted.embedding_backward(np.array([0, 5]), np.ones((2, 3), np.float32), 5)


# ----------------------------------------------------------------------------
# AdamW

def adamw_by_hand(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """PyTorch's AdamW, one element at a time in float64."""
    param, exp_avg, exp_avg_sq = (list(map(float, a)) for a in (param, exp_avg, exp_avg_sq))
    for i, g in enumerate(map(float, grad)):
        param[i] *= 1 - lr * weight_decay
        exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
        m_hat = exp_avg[i] / (1 - beta1 ** step)
        denom = math.sqrt(exp_avg_sq[i]) / math.sqrt(1 - beta2 ** step) + eps
        param[i] -= lr * m_hat / denom
    return param, exp_avg, exp_avg_sq


@given(st.integers(1, 300), st.sampled_from(FLOATS), st.integers(0, 2**32 - 1),
       st.sampled_from([0.0, 0.1]))
def test_adamw_step_matches_hand_written_loop(size, dtype, seed, weight_decay):
    rng = np.random.default_rng(seed)
    state = [rng.standard_normal(size).astype(dtype) for _ in range(3)]
    state[2] = np.abs(state[2])  # exp_avg_sq >= 0
    hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=weight_decay)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for module in (reference, jitted):
        param, exp_avg, exp_avg_sq = (a.copy() for a in state)
        expected = (param.copy(), exp_avg.copy(), exp_avg_sq.copy())
        for step in (1, 2, 3):
            grad = rng.standard_normal(size).astype(dtype)
            expected = adamw_by_hand(*expected[:1], grad, *expected[1:], step=step, **hyper)
            assert module.adamw_step(param, grad, exp_avg, exp_avg_sq, step=step, **hyper) is None
        for actual, wanted in zip((param, exp_avg, exp_avg_sq), expected):
            assert actual.dtype == dtype
            np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=rtol)


def test_adamw_step_on_non_contiguous_views_updates_in_place():
    rng = np.random.default_rng(0)
    buffers = [rng.standard_normal(20).astype(np.float32) for _ in range(4)]
    buffers[3] = np.abs(buffers[3])
    original = [b.copy() for b in buffers]
    expected = [b.copy() for b in buffers]
    reference.adamw_step(*(b[::2] for b in expected), 1e-2, 0.9, 0.99, 1e-8, 0.1, 1)
    jitted.adamw_step(*(b[::2] for b in buffers), 1e-2, 0.9, 0.99, 1e-8, 0.1, 1)
    for actual, wanted in zip(buffers, expected):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6)
    assert np.all(buffers[0][::2] != original[0][::2])  # the view was updated ...
    np.testing.assert_array_equal(buffers[0][1::2], original[0][1::2])  # ... and only it


# ----------------------------------------------------------------------------
# choosing the kernel set, threading policy, runtime report

def test_use_and_active():
    assert kernels.use("numpy") is reference
    assert kernels.active() == "numpy" and kernels.current is reference
    assert kernels.use("numba") is jitted
    assert kernels.active() == "numba" and kernels.current is jitted


def test_unknown_kernel_set_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="numba"):
        kernels.use("cuda")
    monkeypatch.setenv("TENSORLITE_KERNELS", "fortran")
    with pytest.raises(ValueError, match="TENSORLITE_KERNELS"):
        kernels._from_environment()
    assert kernels.active() == "numba"


def test_threading_policy_one_pool_at_a_time():
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
    info = kernels.runtime_info()
    assert info["kernels"] == "numba"
    assert info["numpy_blas"]["threads"] == 1
    assert info["scipy_blas"]["threads"] == 1
    kernels.use("numpy")
    info = kernels.runtime_info()
    assert info["numpy_blas"]["threads"] == kernels._default_blas_threads[
        kernels._blas.numpy_blas().path]


def test_set_num_threads_sticks_across_kernel_sets():
    import numba
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))  # load BLAS
    numpy_lib = kernels._blas.numpy_blas()
    try:
        kernels.set_num_threads(1)
        assert kernels.get_num_threads() == 1
        assert numba.get_num_threads() == 1  # the numba set: Numba's pool is limited
        assert numpy_lib.get_num_threads() == 1
        assert kernels.runtime_info()["numba"]["threads"] == 1
        kernels.use("numpy")  # the numpy set: BLAS gets the limit, not its default
        assert numpy_lib.get_num_threads() == 1
        kernels.use("numba")
        assert numba.get_num_threads() == 1  # still in force after switching back
        x = np.random.default_rng(0).standard_normal((96, 128)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((384, 128)).astype(np.float32)
        assert_close(jitted.linear(x, w, None), x @ w.T, np.float32, scale=128)
    finally:
        kernels.set_num_threads(None)
    assert kernels.get_num_threads() is None
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    kernels.use("numpy")
    assert numpy_lib.get_num_threads() == kernels._default_blas_threads[numpy_lib.path]
    kernels.use("numba")


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        kernels.set_num_threads(bad)
    assert kernels.get_num_threads() is None


def test_runtime_info_names_the_blas_kernel_set():
    info = kernels.runtime_info()
    assert info["numpy_blas"]["corename"]  # e.g. 'Haswell', 'SkylakeX', 'Zen'
    assert info["numba"]["threads"] >= 1
    line = kernels.format_runtime_info(info)
    assert "kernels=numba" in line and info["numpy_blas"]["corename"] in line
    assert "\n" not in line


def test_both_sets_define_the_same_functions():
    public = ["matmul", "matmul_backward", "softmax", "softmax_backward", "log_softmax",
              "log_softmax_backward", "attention", "attention_backward",
              "layer_norm", "layer_norm_backward", "gelu", "gelu_backward", "cross_entropy",
              "cross_entropy_backward", "embedding_backward", "adamw_step", "linear",
              "linear_backward"]
    import inspect
    for name in public:
        assert (inspect.signature(getattr(jitted, name))
                == inspect.signature(getattr(reference, name))), name
