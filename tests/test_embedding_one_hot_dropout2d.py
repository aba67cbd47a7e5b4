"""Embedding's padding_idx, F.one_hot and F.dropout2d against torch's meaning."""

import numpy as np
import pytest
import torch

import tensorlite as tl
import tensorlite.nn.functional as F


def test_one_hot_matches_torch():
    labels = np.array([[0, 3], [2, 1]])
    for num_classes in (-1, 4, 6):
        ours = F.one_hot(tl.tensor(labels), num_classes)
        theirs = torch.nn.functional.one_hot(torch.tensor(labels), num_classes)
        assert ours.dtype == tl.int64 and not ours.requires_grad
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("labels, num_classes, message", [
    (np.array([0.0, 1.0]), -1, "integer"),
    (np.array([0, -1]), -1, "non-negative"),
    (np.array([0, 4]), 4, "not smaller than num_classes=4"),
    (np.array([0, 1]), 0, "positive integer"),
])
def test_one_hot_errors(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        F.one_hot(tl.tensor(labels), num_classes)


def test_dropout2d_zeros_whole_channels_and_scales_the_rest():
    tl.manual_seed(0)
    x = tl.ones(8, 16, 3, 5, requires_grad=True)
    y = F.dropout2d(x, p=0.25, training=True)
    per_channel = y.numpy().reshape(8, 16, -1)
    # every channel is all zeros or all 1/(1-p)
    assert np.all((per_channel == 0).all(axis=-1) | (per_channel == 1 / 0.75).all(axis=-1))
    kept = (per_channel[..., 0] != 0).mean()
    assert 0.5 < kept < 0.95  # 128 channels, p = 0.25: far outside these bounds is ~1e-9 likely
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    y.backward(tl.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), g * (y.numpy() / 1.0), rtol=1e-6)


def test_dropout2d_reads_a_3d_input_as_torch_does():
    # torch 2: (N, C, L), one draw per row, with a warning that this will change
    tl.manual_seed(0)
    x = tl.ones(6, 7, 5)
    with pytest.warns(UserWarning, match=r"interpreted as shape \(N, C, L\)"):
        y = F.dropout2d(x, 0.5).numpy()
    rows = y.reshape(42, 5)
    assert np.all((rows == 0).all(axis=1) | (rows == 2.0).all(axis=1))
    assert len({tuple(block.ravel()) for block in y}) > 1  # not one draw per first index
    assert not np.all((y == 0).all(axis=(1, 2)) | (y == 2.0).all(axis=(1, 2)))
    with pytest.warns(UserWarning):
        assert F.dropout2d(x, 0.5, training=False) is x


def test_dropout2d_errors():
    with pytest.raises(ValueError, match="dropout2d: expected a 3-D"):
        F.dropout2d(tl.randn(2, 3), 0.5)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        F.dropout2d(tl.randn(2, 3, 4, 4), 1.5)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_padding_idx_matches_torch(padding_idx):
    tl.manual_seed(0)
    ours = tl.nn.Embedding(5, 3, padding_idx=padding_idx, dtype=tl.float64)
    theirs = torch.nn.Embedding(5, 3, padding_idx=padding_idx, dtype=torch.float64)
    if padding_idx is not None:
        np.testing.assert_array_equal(ours.weight.numpy()[padding_idx], 0.0)
        assert "padding_idx=" in repr(ours)
    theirs.load_state_dict({"weight": torch.tensor(ours.weight.numpy())})
    idx = np.array([[0, 2, 4], [2, 1, 4]])
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    out = ours(tl.tensor(idx))
    (out * tl.tensor(g)).sum().backward()
    expected = theirs(torch.tensor(idx))
    (expected * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)


def test_embedding_padding_idx_gradients_twice():
    # The padding row gets no gradient by definition (not the derivative), so it is held as a
    # constant row 0 here and the check covers the other rows, which padding must not disturb.
    idx = np.array([[1, 0], [0, 3]])
    weight = np.random.default_rng(1).standard_normal((3, 2))

    def fn(w):
        table = tl.concatenate([tl.zeros(1, 2, dtype=tl.float64), w], 0)
        return F.embedding(idx, table, padding_idx=0) ** 2

    assert tl.testing.gradcheck(fn, [weight])
    assert tl.testing.gradgradcheck(fn, [weight])


def test_embedding_padding_idx_out_of_range():
    with pytest.raises(ValueError, match="padding_idx must be an integer in"):
        tl.nn.Embedding(4, 2, padding_idx=4)
