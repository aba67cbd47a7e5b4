"""The recurrent cell kernels (kernels/numpy/rnn.py and kernels/numba/rnn.py) against the exact
result, on Hypothesis-drawn shapes (B = 1, H = 1, odd sizes), layouts and both float types.

The exact result is the reference's formula evaluated in float64 on the same (float32-exact)
inputs; both kernel sets must lie within a rounding bound derived below from the computation.

Error model. u = eps of the dtype. An activation computed by a kernel is off by at most
ACTIVATION = 8 u absolute (its values lie in [-1, 1]): the Numba float32 sigmoid 1 / (1 + E)
has E = exp(-x) to 2 u relative (fast_exp), then one addition and one division, 4 u in all;
its tanh sign(x) (1 - e) / (1 + e), e = exp(-2|x|) to 2 u, takes 3 u in the numerator, 3 u
relative in the denominator and 1 u in the division, 7 u; NumPy's and the library's are within
a unit or two. Every other operation is a rounding of u relative to its result; a chain of k
products costs k u of the product's magnitude. Inputs (the pre-activations, the states, the
gradients, and in a backward the activations) are exact, being the same values for both.
"""

import numpy as np
from hypothesis import given, strategies as st

from tensorlite.kernels.numba import rnn as jitted
from tensorlite.kernels.numpy import rnn as reference
from tensorlite.testing import assert_within_rounding, rounding_bound

FLOATS = [np.float32, np.float64]
ACTIVATION = 8  # units of rounding of one activation (module docstring)


def _array(rng, shape, dtype, layout, scale=1.0):
    """A normal array of `shape`: contiguous, every other column of a wider array ('strided'),
    or the transpose of a (cols, rows) array ('transposed')."""
    rows, cols = shape
    if layout == "strided":
        return (rng.standard_normal((rows, 2 * cols)) * scale).astype(dtype)[:, ::2]
    if layout == "transposed":
        return (rng.standard_normal((cols, rows)) * scale).astype(dtype).T
    return (rng.standard_normal(shape) * scale).astype(dtype)


@st.composite
def cases(draw):
    """(rng, B, H, dtype, layout): B and H from 1, odd sizes included."""
    seed = draw(st.integers(0, 2**32 - 1))
    B, H = draw(st.integers(1, 6)), draw(st.integers(1, 9))
    return (np.random.default_rng(seed), B, H, draw(st.sampled_from(FLOATS)),
            draw(st.sampled_from(["contiguous", "strided", "transposed"])))


def _wide(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _split(a, parts):
    size = a.shape[-1] // parts
    return [a[:, k * size:(k + 1) * size] for k in range(parts)]


def _bound(magnitude, units, dtype):
    return rounding_bound(magnitude, units, dtype)


def _check(name, actual, exact, bound):
    for kernels_name, value in actual.items():
        assert_within_rounding(value, exact, bound, err_msg=f"{kernels_name} {name}")


# ----------------------------------------------------------------------------
# LSTM

def lstm_exact(gates, c_prev, dtype, gates_error=0.0):
    """(h, c, activations) in float64 with their bounds; `gates_error` bounds an error already
    in the pre-activations (a sequence's product), which moves an activation by at most as
    much (sigmoid' <= 1/4, tanh' <= 1)."""
    gates, c_prev = _wide(gates, c_prev)
    h, c, activations = reference.lstm_cell(gates, c_prev)
    i, f, g, o = _split(activations, 4)
    tanh_c = np.tanh(c)
    error_act = _bound(ACTIVATION, 1, dtype) + np.broadcast_to(gates_error, gates.shape)
    e_i, e_f, e_g, e_o = _split(error_act, 4)
    # c = f c_prev + i g: each activation's error times its partner, two products and a sum
    error_c = (e_f * np.abs(c_prev) + e_i * np.abs(g) + e_g * np.abs(i)
               + _bound(3 * (np.abs(f * c_prev) + np.abs(i * g)), 1, dtype))
    # h = o tanh(c): o's error, tanh's own, c's error through tanh, and the product
    error_h = (e_o * np.abs(tanh_c) + _bound(ACTIVATION * o + np.abs(h), 1, dtype)
               + o * (1 - tanh_c ** 2) * error_c)
    return (h, error_h), (c, error_c), (activations, error_act)


@given(cases())
def test_lstm_cell_within_rounding_of_exact(case):
    rng, B, H, dtype, layout = case
    gates = _array(rng, (B, 4 * H), dtype, layout, scale=3.0)
    c_prev = _array(rng, (B, H), dtype, layout, scale=2.0)
    results = {"numpy": reference.lstm_cell(gates, c_prev), "numba": jitted.lstm_cell(gates, c_prev)}
    for position, (name, (exact, bound)) in enumerate(zip(
            ("h", "c", "activations"), lstm_exact(gates, c_prev, dtype))):
        for r in results.values():
            assert r[position].dtype == dtype
        _check(name, {k: r[position] for k, r in results.items()}, exact, bound)


def lstm_backward_exact(grad_h, grad_c, activations, c_prev, c, dtype):
    grad_h, grad_c, activations, c_prev, c = _wide(grad_h, grad_c, activations, c_prev, c)
    grad_gates, grad_c_prev = reference.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)
    i, f, g, o = _split(activations, 4)
    tanh_c = np.tanh(c)
    dc = grad_c + grad_h * o * (1 - tanh_c ** 2)
    # 1 - tanh^2 is off by 2 |tanh| ACTIVATION u + 2 u; then three products and the sum
    error_dc = _bound(np.abs(grad_h) * o * (2 * ACTIVATION + 5) + 2 * np.abs(dc), 1, dtype)
    factors = [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)]
    errors = [error_dc * np.abs(p) + _bound(np.abs(dc * p), 5, dtype) for p in factors]
    # 1 - g g cancels where |g| is near 1: its rounding is u g^2 absolute, not relative
    errors[2] += _bound(np.abs(dc * i) * g * g, 1, dtype)
    errors.append(_bound(np.abs(grad_h) * o * (1 - o) * ACTIVATION
                         + 5 * np.abs(grad_h * tanh_c * o * (1 - o)), 1, dtype))
    error_c_prev = error_dc * f + _bound(np.abs(dc * f), 1, dtype)
    return (grad_gates, np.concatenate(errors, axis=-1)), (grad_c_prev, error_c_prev)


@given(cases())
def test_lstm_cell_backward_within_rounding_of_exact(case):
    rng, B, H, dtype, layout = case
    gates = _array(rng, (B, 4 * H), dtype, "contiguous", scale=3.0)
    c_prev = _array(rng, (B, H), dtype, layout, scale=2.0)
    _, c, activations = reference.lstm_cell(gates, c_prev)
    grad_h = _array(rng, (B, H), dtype, layout)
    grad_c = _array(rng, (B, H), dtype, "contiguous")
    args = (grad_h, grad_c, activations, c_prev, c)
    results = {"numpy": reference.lstm_cell_backward(*args),
               "numba": jitted.lstm_cell_backward(*args)}
    for position, (name, (exact, bound)) in enumerate(zip(
            ("grad_gates", "grad_c_prev"), lstm_backward_exact(*args, dtype))):
        _check(name, {k: r[position] for k, r in results.items()}, exact, bound)


# ----------------------------------------------------------------------------
# GRU

def gru_exact(gi, gh, h_prev, dtype, gh_error=0.0):
    """(h, activations) in float64 with their bounds; `gh_error` bounds an error already in gh
    (a sequence's product)."""
    gi, gh, h_prev = _wide(gi, gh, h_prev)
    h, activations = reference.gru_cell(gi, gh, h_prev)
    r, z, n = _split(activations, 3)
    (gi_r, gi_z, gi_n), (gh_r, gh_z, gh_n) = _split(gi, 3), _split(gh, 3)
    e_r, e_z, e_n = _split(np.broadcast_to(gh_error, gh.shape), 3)
    # the rounded sum inside a sigmoid moves it by at most s' |x| u <= |x| u / 4
    error_r = _bound(ACTIVATION + np.abs(gi_r + gh_r) / 4, 1, dtype) + e_r
    error_z = _bound(ACTIVATION + np.abs(gi_z + gh_z) / 4, 1, dtype) + e_z
    error_argument = (error_r * np.abs(gh_n) + r * e_n
                      + _bound(2 * (np.abs(gi_n) + np.abs(r * gh_n)), 1, dtype))
    error_n = _bound(ACTIVATION, 1, dtype) + (1 - n * n) * error_argument
    error_h = (error_z * (np.abs(n) + np.abs(h_prev)) + error_n * (1 - z)
               + _bound(4 * (np.abs((1 - z) * n) + np.abs(z * h_prev)), 1, dtype))
    return (h, error_h), (activations, np.concatenate([error_r, error_z, error_n], axis=-1))


@given(cases())
def test_gru_cell_within_rounding_of_exact(case):
    rng, B, H, dtype, layout = case
    gi = _array(rng, (B, 3 * H), dtype, layout, scale=2.0)
    gh = _array(rng, (B, 3 * H), dtype, "contiguous", scale=2.0)
    h_prev = _array(rng, (B, H), dtype, layout)
    results = {"numpy": reference.gru_cell(gi, gh, h_prev), "numba": jitted.gru_cell(gi, gh, h_prev)}
    for position, (name, (exact, bound)) in enumerate(zip(
            ("h", "activations"), gru_exact(gi, gh, h_prev, dtype))):
        _check(name, {k: r[position] for k, r in results.items()}, exact, bound)


def gru_backward_exact(grad_h, activations, gh, h_prev, dtype):
    """[(grad_gi, bound), (grad_gh, bound), (grad_h_prev, bound)] in float64."""
    H = h_prev.shape[-1]
    w_grad_h, w_act, w_gh, w_h_prev = _wide(grad_h, activations, gh, h_prev)
    grad_gi, grad_gh, grad_h_prev = reference.gru_cell_backward(w_grad_h, w_act, w_gh, w_h_prev)
    r, z, n = _split(w_act, 3)
    dn_pre = w_grad_h * (1 - z) * (1 - n * n)
    # products of exact inputs only: k roundings of the product, (h_prev - n)'s one, and
    # 1 - n n's, which is u n^2 absolute (it cancels where |n| is near 1)
    cancel = np.abs(w_grad_h * (1 - z)) * n * n
    r_factor = np.abs(w_gh[:, 2 * H:] * r * (1 - r))
    error_r = _bound(10 * np.abs(grad_gi[:, :H]) + cancel * r_factor, 1, dtype)
    error_z = _bound(np.abs(w_grad_h) * (np.abs(w_h_prev) + np.abs(n)) * z * (1 - z), 6, dtype)
    error_n = _bound(6 * np.abs(dn_pre) + cancel, 1, dtype)
    error_gi = np.concatenate([error_r, error_z, error_n], axis=-1)
    error_gh = np.concatenate([error_r, error_z, _bound(8 * np.abs(dn_pre * r) + cancel * r, 1,
                                                        dtype)], axis=-1)
    return [(grad_gi, error_gi), (grad_gh, error_gh),
            (grad_h_prev, _bound(np.abs(grad_h_prev), 1, dtype))]


@given(cases())
def test_gru_cell_backward_within_rounding_of_exact(case):
    rng, B, H, dtype, layout = case
    gi = _array(rng, (B, 3 * H), dtype, "contiguous", scale=2.0)
    gh = _array(rng, (B, 3 * H), dtype, layout, scale=2.0)
    h_prev = _array(rng, (B, H), dtype, layout)
    _, activations = reference.gru_cell(gi, gh, h_prev)
    grad_h = _array(rng, (B, H), dtype, layout)
    args = (grad_h, activations, gh, h_prev)
    results = {"numpy": reference.gru_cell_backward(*args),
               "numba": jitted.gru_cell_backward(*args)}
    for position, (name, (exact, bound)) in enumerate(zip(
            ("grad_gi", "grad_gh", "grad_h_prev"), gru_backward_exact(*args, dtype))):
        _check(name, {k: r[position] for k, r in results.items()}, exact, bound)


def test_tanh_and_sigmoid_saturate_without_overflow():
    """Large pre-activations give exactly 0, 1 or -1 (no inf, no NaN), in both kernel sets."""
    for dtype in FLOATS:
        gates = np.array([[-1e3, 1e3, -1e3, 1e3], [1e3, -1e3, 1e3, -1e3]],
                         dtype=dtype)
        c_prev = np.array([[1.0], [1.0]], dtype=dtype)
        for module in (reference, jitted):
            h, c, activations = module.lstm_cell(gates, c_prev)
            assert np.array_equal(activations, [[0, 1, -1, 1], [1, 0, 1, 0]])
            assert np.array_equal(c, [[1.0], [1.0]])


# ----------------------------------------------------------------------------
# Whole sequences. The error of a recurrence compounds over its steps, by an amount that depends
# on the weights; what a kernel answers for is each step. So every step t is checked against
# the exact cell applied to the kernel's OWN previous state: its pre-activations
# gi[t] + h_prev W_hh^T (in float64) carry the product's rounding, k = H terms plus gi's, then
# the cell's bound above applies. A backward is checked over one step (T = 1), where it is
# the cell's backward and one product; longer sequences are compared with torch's in
# tests/test_rnn.py.

@st.composite
def sequence_cases(draw):
    rng, B, H, dtype, _ = draw(cases())
    return rng, draw(st.integers(1, 4)), B, H, dtype, draw(st.booleans())


def _product_bound(a, w_t, extra, dtype):
    """The rounding bound of extra + a @ w_t, both of whose magnitudes are exact inputs."""
    return _bound(np.abs(a) @ np.abs(w_t) + np.abs(extra), a.shape[-1] + 1, dtype)


@given(sequence_cases())
def test_lstm_sequence_steps_within_rounding(case):
    rng, T, B, H, dtype, reverse = case
    gi = _array(rng, (T * B, 4 * H), dtype, "contiguous", scale=2.0).reshape(T, B, 4 * H)
    w_hh = _array(rng, (4 * H, H), dtype, "contiguous", scale=1.0 / np.sqrt(H))
    h0, c0 = (_array(rng, (B, H), dtype, "contiguous") for _ in range(2))
    for module in (reference, jitted):
        hs, cs, activations = module.lstm_sequence(gi, w_hh, h0, c0, reverse)
        for t in range(T):
            t_prev = t + 1 if reverse else t - 1
            h_prev, c_prev = (h0, c0) if t_prev in (-1, T) else (hs[t_prev], cs[t_prev])
            gates = _wide(gi[t])[0] + _wide(h_prev)[0] @ _wide(w_hh)[0].T
            gates_error = _product_bound(h_prev.astype(np.float64), w_hh.T.astype(np.float64),
                                         gi[t], dtype)
            for name, actual, (exact, bound) in zip(
                    ("h", "c", "activations"), (hs[t], cs[t], activations[t]),
                    lstm_exact(gates, c_prev, dtype, gates_error)):
                assert_within_rounding(actual, exact, bound, err_msg=f"{module.__name__} {name} "
                                                                      f"at step {t}")


@given(sequence_cases())
def test_gru_sequence_steps_within_rounding(case):
    rng, T, B, H, dtype, reverse = case
    gi = _array(rng, (T * B, 3 * H), dtype, "contiguous", scale=2.0).reshape(T, B, 3 * H)
    w_hh = _array(rng, (3 * H, H), dtype, "contiguous", scale=1.0 / np.sqrt(H))
    b_hh = _array(rng, (1, 3 * H), dtype, "contiguous")[0]
    h0 = _array(rng, (B, H), dtype, "contiguous")
    for module in (reference, jitted):
        hs, gh, activations = module.gru_sequence(gi, w_hh, b_hh, h0, reverse)
        for t in range(T):
            t_prev = t + 1 if reverse else t - 1
            h_prev = h0 if t_prev in (-1, T) else hs[t_prev]
            exact_gh = _wide(h_prev)[0] @ _wide(w_hh)[0].T + _wide(b_hh)[0]
            gh_error = _product_bound(h_prev.astype(np.float64), w_hh.T.astype(np.float64),
                                      b_hh, dtype)
            assert_within_rounding(gh[t], exact_gh, gh_error, err_msg=f"{module.__name__} gh")
            for name, actual, (exact, bound) in zip(
                    ("h", "activations"), (hs[t], activations[t]),
                    gru_exact(gi[t], exact_gh, h_prev, dtype, gh_error)):
                assert_within_rounding(actual, exact, bound, err_msg=f"{module.__name__} {name} "
                                                                      f"at step {t}")


@given(cases(), st.booleans())
def test_sequence_backwards_of_one_step_within_rounding(case, reverse):
    rng, B, H, dtype, _ = case
    gates = _array(rng, (B, 4 * H), dtype, "contiguous", scale=3.0)
    c0 = _array(rng, (B, H), dtype, "contiguous", scale=2.0)
    _, c, activations = reference.lstm_cell(gates, c0)
    grad_h, grad_c = (_array(rng, (B, H), dtype, "contiguous") for _ in range(2))
    w_hh = _array(rng, (4 * H, H), dtype, "contiguous", scale=1.0 / np.sqrt(H))
    (exact_gates, gates_bound), (exact_c0, c0_bound) = lstm_backward_exact(
        grad_h, grad_c, activations, c0, c, dtype)
    for module in (reference, jitted):
        grad_gates, grad_h0, grad_c0 = module.lstm_sequence_backward(
            grad_h[None], grad_c, activations[None], c[None], c0, w_hh, reverse)
        assert_within_rounding(grad_gates[0], exact_gates, gates_bound)
        assert_within_rounding(grad_c0, exact_c0, c0_bound)
        # grad h0 = grad_gates W_hh from the kernel's own grad_gates
        assert_within_rounding(grad_h0, _wide(grad_gates[0])[0] @ _wide(w_hh)[0],
                               _product_bound(grad_gates[0].astype(np.float64),
                                              w_hh.astype(np.float64), 0.0, dtype))
    gi, gh = (_array(rng, (B, 3 * H), dtype, "contiguous", scale=2.0) for _ in range(2))
    _, gru_activations = reference.gru_cell(gi, gh, c0)
    w3 = np.ascontiguousarray(w_hh[:3 * H])
    (exact_gi, gi_bound), (exact_gh, gh_bound), (direct, direct_bound) = gru_backward_exact(
        grad_h, gru_activations, gh, c0, dtype)
    for module in (reference, jitted):
        grad_gi, grad_gh, grad_h0 = module.gru_sequence_backward(
            grad_h[None], gru_activations[None], gh[None], c0[None], c0, w3, reverse)
        assert_within_rounding(grad_gi[0], exact_gi, gi_bound)
        assert_within_rounding(grad_gh[0], exact_gh, gh_bound)
        # grad h0 = the direct part + grad_gh W_hh, from the kernel's own grad_gh
        assert_within_rounding(grad_h0, direct + _wide(grad_gh[0])[0] @ _wide(w3)[0],
                               direct_bound + _product_bound(grad_gh[0].astype(np.float64),
                                                             w3.astype(np.float64), direct,
                                                             dtype))
