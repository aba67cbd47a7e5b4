"""tl.utils.checkpoint.checkpoint: the same values and gradients as the plain call (first and
second order, dropout included), the block's activations freed after forward, and torch's
numbers on the same block."""

import gc
import weakref

import numpy as np
import pytest
import torch

import tensorlite as tl
import tensorlite.nn.functional as F
from tensorlite import nn
from tensorlite.utils.checkpoint import checkpoint


class Block(nn.Module):
    """x + W2 gelu(W1 layer_norm(x)), with dropout: a transformer MLP sub-block."""

    def __init__(self, width, p=0.0):
        super().__init__()
        self.ln = nn.LayerNorm(width, dtype=tl.float64)
        self.fc = nn.Linear(width, 3 * width, dtype=tl.float64)
        self.proj = nn.Linear(3 * width, width, dtype=tl.float64)
        self.p = p
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = F.gelu(self.fc(self.ln(x)), approximate="tanh")
        return x + F.dropout(self.proj(h), self.p, self.training)


def gradients(model, x, use_checkpoint, seed=0):
    tl.manual_seed(seed)
    model.zero_grad()
    x = tl.tensor(x, requires_grad=True)
    y = checkpoint(model, x, use_reentrant=False) if use_checkpoint else model(x)
    y = checkpoint(model, y) if use_checkpoint else model(y)  # two blocks in a row
    loss = (y * y).sum()
    loss.backward()
    return loss.item(), x.grad.numpy(), {n: p.grad.numpy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_same_loss_and_gradients_as_the_plain_call(p):
    tl.manual_seed(1)
    model = Block(6, p)
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    plain = gradients(model, x, False)
    calls = model.calls
    checked = gradients(model, x, True)
    # one extra forward per block, in backward; dropout draws the same masks the second time
    assert model.calls - calls == 4
    assert plain[0] == pytest.approx(checked[0], rel=1e-12)
    np.testing.assert_allclose(checked[1], plain[1], rtol=1e-10, atol=1e-12)
    for name in plain[2]:
        np.testing.assert_allclose(checked[2][name], plain[2][name], rtol=1e-10, atol=1e-12)


def test_the_blocks_activations_are_freed_after_forward():
    kept = []

    def block(x, w):
        hidden = (x @ w).tanh()
        kept.append(weakref.ref(hidden))
        return hidden.sum(axis=-1)

    x = tl.randn(3, 4, requires_grad=True)
    w = tl.randn(4, 4, requires_grad=True)
    y = checkpoint(block, x, w)
    gc.collect()
    assert kept[0]() is None  # nothing of the first run survives
    y.sum().backward()
    expected_x, expected_w = tl.autograd.grad(block(x, w).sum(), [x, w])
    np.testing.assert_allclose(x.grad.numpy(), expected_x.numpy(), rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), expected_w.numpy(), rtol=1e-6)


def test_the_recomputed_activations_are_freed_as_the_blocks_backward_proceeds():
    """The second run's ops drop what they saved once their backward has run, as ops of a plain
    graph do, so a block's backward holds less than all of its activations at once."""
    released = []

    def block(x, w):
        hidden = (x @ w).tanh()
        square = hidden * hidden
        consumer = weakref.ref(square._ctx)  # weak: the first run's graph must still go
        hidden.register_hook(lambda grad: released.append(consumer().released))
        return square.sum(axis=-1)

    x = tl.randn(3, 4, requires_grad=True)
    w = tl.randn(4, 4, requires_grad=True)
    checkpoint(block, x, w).sum().backward()
    assert released == [True]  # when hidden's gradient is ready, its consumer has let go


def test_a_block_reading_a_non_leaf_of_the_outer_graph_leaves_that_graph_whole():
    x = tl.tensor(np.random.default_rng(6).standard_normal((2, 3)), requires_grad=True)
    shared = x.exp()  # a non-leaf the block reads without being given it

    def block(t):
        return (t * shared).sin()

    y = checkpoint(block, x * 2.0)
    (y.sum() + shared.sum()).backward()  # the walk reaches `shared`'s op after the block's
    v = x.numpy()  # d/dx of sum(sin(2x e^x)) + sum(e^x)
    expected = np.cos(2 * v * np.exp(v)) * (2 * np.exp(v) + 2 * v * np.exp(v)) + np.exp(v)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_captured_parameters_receive_gradients_through_autograd_grad():
    w = tl.tensor(np.random.default_rng(2).standard_normal((3, 3)), requires_grad=True)
    x = tl.tensor(np.random.default_rng(3).standard_normal((2, 3)), requires_grad=True)

    def block(x):
        return (x @ w).sin()  # w is read, not passed

    gx, gw = tl.autograd.grad(checkpoint(block, x).sum(), [x, w])
    ex, ew = tl.autograd.grad(block(x).sum(), [x, w])
    np.testing.assert_allclose(gx.numpy(), ex.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gw.numpy(), ew.numpy(), rtol=1e-12)
    assert w.grad is None and x.grad is None  # autograd.grad accumulates nothing


def test_second_order_through_a_checkpoint():
    w = np.random.default_rng(4).standard_normal((3, 3))

    def fn(x):
        return checkpoint(lambda t: (t @ tl.tensor(w)).tanh() * t, x)

    x = np.random.default_rng(5).standard_normal((2, 3))
    assert tl.testing.gradcheck(fn, [x])
    assert tl.testing.gradgradcheck(fn, [x])


def test_several_outputs_and_a_non_tensor_argument():
    x = tl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)

    def block(x, scale):
        return x * scale, (x * x).sum(axis=0)

    a, b = checkpoint(block, x, 2.0)
    assert a.shape == (2, 3) and b.shape == (3,)
    (a.sum() + b.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 + 2 * x.numpy())


def test_matches_torch_checkpoint():
    tl.manual_seed(3)
    ours = Block(5)
    # the same block in torch, weights copied by name
    ln = torch.nn.LayerNorm(5, dtype=torch.float64)
    fc = torch.nn.Linear(5, 15, dtype=torch.float64)
    proj = torch.nn.Linear(15, 5, dtype=torch.float64)
    for module, prefix in ((ln, "ln"), (fc, "fc"), (proj, "proj")):
        module.load_state_dict({k.split(".", 1)[1]: torch.tensor(v)
                                for k, v in ours.state_dict().items() if k.startswith(prefix)})

    def torch_block(x):
        return x + proj(torch.nn.functional.gelu(fc(ln(x)), approximate="tanh"))

    x = np.random.default_rng(6).standard_normal((3, 5))
    tx = torch.tensor(x, requires_grad=True)
    torch.utils.checkpoint.checkpoint(torch_block, tx, use_reentrant=False).pow(2).sum().backward()
    lx = tl.tensor(x, requires_grad=True)
    checkpoint(ours, lx).pow(2).sum().backward()
    np.testing.assert_allclose(lx.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.fc.weight.grad.numpy(), fc.weight.grad.numpy(), rtol=1e-10)


def test_plain_call_outside_grad_mode_and_errors():
    x = tl.randn(2, requires_grad=True)
    with tl.no_grad():
        y = checkpoint(lambda t: t * 2, x)
    assert not y.requires_grad
    with pytest.raises(ValueError, match="non-reentrant"):
        checkpoint(lambda t: t, x, use_reentrant=True)
    with pytest.raises(TypeError, match="must return a Tensor"):
        checkpoint(lambda t: 3, x)


def test_gpt_with_checkpointed_blocks_gives_the_same_gradients():
    from tensorlite.models.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.1)
    tl.manual_seed(0)
    model = GPT(config, dtype=np.float64)
    idx = np.random.default_rng(0).integers(0, 11, size=(2, 8))
    results = []
    for enabled in (False, True):
        model.gradient_checkpointing = enabled
        model.zero_grad()
        tl.manual_seed(1)  # the same dropout masks in both runs
        _, loss = model(idx, idx)
        loss.backward()
        results.append((loss.item(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    for name, grad in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], grad, rtol=1e-9, atol=1e-12)
