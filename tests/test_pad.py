"""Padding: F.pad in its four modes against torch (forward and gradient, float64, negative
amounts included), gradcheck and gradgradcheck, and torch's argument checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, strategies as st

import tensorlite as tl
from tensorlite import functional as F
from tensorlite.testing import gradcheck, gradgradcheck

MODES = ["constant", "reflect", "replicate", "circular"]


@st.composite
def pad_cases(draw, mode):
    """(x, pad) valid for torch in `mode`: reflect, replicate and circular pad the last 1-3
    dimensions of an input with one or two more."""
    if mode == "constant":
        ndim = draw(st.integers(1, 4))
        padded = draw(st.integers(1, ndim))
    else:
        padded = draw(st.integers(1, 3))
        ndim = padded + draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    pad = []
    for axis in range(ndim - 1, ndim - 1 - padded, -1):  # last dimension first
        size = shape[axis]
        if mode == "reflect":
            low, high = -(size - 1) // 2, size - 1
        elif mode == "circular":
            low, high = -(size - 1) // 2, (size + 1) // 2
        else:
            low, high = -(size // 2), 3
        before, after = draw(st.integers(low, high)), draw(st.integers(low, high))
        assume(size + before + after >= 1)
        if mode == "circular":
            kept = size - max(-before, 0) - max(-after, 0)
            assume(kept >= 1 and before <= kept and after <= kept)
        pad += [before, after]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, rng.standard_normal(shape), tuple(pad)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_pad_matches_torch(mode, data):
    rng, x, pad = data.draw(pad_cases(mode))
    value = data.draw(st.sampled_from([0.0, -1.5])) if mode == "constant" else None
    ours_x = tl.Tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x, requires_grad=True)
    ours = F.pad(ours_x, pad, mode=mode, value=value)
    theirs = TF.pad(theirs_x, pad, mode=mode, value=value)
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
    np.testing.assert_array_equal(ours.data, theirs.detach().numpy())
    grad = rng.standard_normal(ours.shape)
    ours.backward(grad)
    theirs.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(ours_x.grad.data, theirs_x.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_pad_gradcheck_and_gradgradcheck(mode, data):
    _, x, pad = data.draw(pad_cases(mode))
    assert gradcheck(lambda t: F.pad(t, pad, mode=mode) ** 2, [x])
    assert gradgradcheck(lambda t: F.pad(t, pad, mode=mode) ** 2, [x])


def test_pad_keeps_float32_and_copies():
    x = tl.Tensor(np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    for mode in MODES:
        y = F.pad(x, (0, 0), mode=mode)
        assert y.dtype == np.float32 and y is not x
        y.data[...] = 0
        assert x.data.sum() == 15
    np.testing.assert_array_equal(F.pad(x, (2, 1), mode="reflect").data[0, 0],
                                  [2, 1, 0, 1, 2, 1])


X = tl.Tensor(np.zeros((2, 3, 5, 4)))


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.pad(X, (1, 2, 3)), ValueError, "divisible by 2"),
    (lambda: F.pad(X, (1, 1) * 5), ValueError, "at most twice"),
    (lambda: F.pad(X, (1, 1), mode="foo"), ValueError, "unknown padding mode"),
    (lambda: F.pad(X, (1, 1), mode="reflect", value=2), ValueError, "doesn't take a value"),
    (lambda: F.pad(X, (3, 1, 5, 0), mode="reflect"), ValueError,
     "should be less than the corresponding input dimension"),
    (lambda: F.pad(X, (5, 0, 1, 1), mode="circular"), ValueError, "wrap around more than once"),
    (lambda: F.pad(X, (-5, 0)), ValueError, "negative"),
    (lambda: F.pad(X, (1, 1), mode="reflect"), NotImplementedError, "padding size 2"),
    (lambda: F.pad(X[0, 0, 0], (1, 1), mode="replicate"), NotImplementedError, "1-D input"),
    (lambda: F.pad(X, (1.0, 1)), TypeError, "tuple of ints"),
])
def test_pad_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# Where an output is empty, torch's modes differ: circular returns it; reflect and replicate
# return it while some padded dimension keeps a size, and refuse an input with an empty
# non-batch dimension or an output empty along every padded dimension.
EMPTY_CASES = [
    ("circular", (2, 3, 4), (-4, 0)), ("circular", (2, 3, 4), (-1, -3)),
    ("circular", (1, 2, 3, 4), (-2, -2, -1, -2)), ("circular", (1, 2, 3, 4), (0, 0, -3, 0)),
    ("circular", (1, 1, 2, 3, 4), (0, 0, 0, 0, -1, -1)), ("circular", (1, 0, 4), (1, 1)),
    ("reflect", (1, 2, 3, 4), (0, 0, -3, 0)), ("replicate", (1, 2, 3, 4), (-1, -3, 1, 1)),
    ("reflect", (0, 2, 4), (1, 1)), ("replicate", (1, 1, 2, 3, 4), (0, 0, 0, 0, -1, -1)),
]


@pytest.mark.parametrize("mode, shape, amounts", EMPTY_CASES)
def test_pad_to_an_empty_output_matches_torch(mode, shape, amounts):
    x = np.arange(float(np.prod(shape))).reshape(shape)
    ours_x, theirs_x = tl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours, theirs = F.pad(ours_x, amounts, mode=mode), TF.pad(theirs_x, amounts, mode=mode)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.data, theirs.detach().numpy())
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_array_equal(ours_x.grad.data, theirs_x.grad.numpy())


@pytest.mark.parametrize("mode, shape, amounts, message", [
    ("reflect", (2, 3, 4), (-4, 0), r"input of shape \(2, 3, 4\) is too small for padding "
                                    r"\(-4, 0\) in mode 'reflect': calculated output shape "
                                    r"\(2, 3, 0\)"),
    ("replicate", (1, 2, 3, 4), (-2, -2, -1, -2), "too small"),
    ("reflect", (1, 0, 4), (1, 1), "possibly 0 batch size and other non-zero dimensions"),
    ("replicate", (0, 4), (1, 1), "other non-zero dimensions, got input shape \\(0, 4\\)"),
    # torch reads memory it never wrote here: nothing is left to wrap around
    ("circular", (2, 3, 4), (-4, 1), "crops it to nothing and then pads it"),
])
def test_pad_empty_errors_match_torch(mode, shape, amounts, message):
    x = np.zeros(shape)
    if "nothing" not in message:
        with pytest.raises(RuntimeError):
            TF.pad(torch.tensor(x), amounts, mode=mode)
    with pytest.raises(ValueError, match=message):
        F.pad(tl.Tensor(x), amounts, mode=mode)
