"""Five small programs written as a PyTorch user writes them in their first hour, with `tl` in
place of `torch`. Each trains to a stated loss, and each is run twice, in float32 and in
float64: the float32 run must follow the float64 one (the reference is the same program in
higher precision, not a number copied from somewhere).
"""

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import functional as F
from tensorlite import nn

# float32 against float64 after a few hundred optimizer steps: rounding differences grow, but
# stay far below the tolerances below on these well-conditioned problems.
LOSS_RTOL = 2e-3
PARAM_ATOL = 2e-3


def assert_follows_float64(run32, run64):
    np.testing.assert_allclose(run32["losses"], run64["losses"], rtol=LOSS_RTOL, atol=1e-6)
    for name, value in run64["params"].items():
        np.testing.assert_allclose(run32["params"][name], value, atol=PARAM_ATOL, rtol=LOSS_RTOL,
                                   err_msg=name)


def finished(model, losses):
    return {"losses": np.array(losses), "params": {name: p.data.astype(np.float64).copy()
                                                   for name, p in model.named_parameters()}}


# ---- 1. MLP regression: MSELoss, Adam, StepLR ------------------------------------------------

def mlp_regression(dtype, steps=300):
    tl.manual_seed(0)
    x = tl.linspace(-3, 3, 64, dtype=dtype).reshape(64, 1)
    y = x.sin()
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)).to(dtype)
    loss_fn = nn.MSELoss()
    optimizer = tl.optim.Adam(model.parameters(), lr=0.02)
    scheduler = tl.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return finished(model, losses)


def test_mlp_regression_with_mse_adam_and_step_lr():
    run32, run64 = mlp_regression(np.float32), mlp_regression(np.float64)
    assert run64["losses"][0] > 0.1
    assert run64["losses"][-1] < 5e-3  # fits sin on [-3, 3]
    assert_follows_float64(run32, run64)


# ---- 2. logistic regression: BCEWithLogitsLoss ---------------------------------------------

def logistic_regression(dtype, steps=200):
    tl.manual_seed(1)
    rng = np.random.default_rng(1)
    features = rng.standard_normal((200, 2))
    labels = (features @ np.array([2.0, -1.0]) + 0.3 * rng.standard_normal(200) > 0)
    x = tl.tensor(features, dtype=dtype)
    y = tl.tensor(labels, dtype=dtype).unsqueeze(1)
    model = nn.Linear(2, 1).to(dtype)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = tl.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    accuracy = ((model(x).data > 0) == labels[:, None]).mean()
    return {**finished(model, losses), "accuracy": accuracy}


def test_logistic_regression_with_bce_with_logits():
    run32, run64 = logistic_regression(np.float32), logistic_regression(np.float64)
    assert run64["losses"][-1] < 0.25 < np.log(2) < run64["losses"][0] + 0.2
    assert run64["accuracy"] > 0.9
    assert_follows_float64(run32, run64)


# ---- 3. freezing a layer --------------------------------------------------------------------

def frozen_first_layer(dtype, steps=150):
    tl.manual_seed(2)
    x = tl.randn(32, 4, dtype=dtype)
    y = (x[:, :1] * 2.0 - x[:, 1:2]).tanh()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)).to(dtype)
    model[0].requires_grad_(False)  # freeze the first layer
    frozen_before = {k: v.copy() for k, v in model[0].state_dict().items()}
    optimizer = tl.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {**finished(model, losses), "frozen_before": frozen_before, "model": model}


def test_freezing_a_layer_with_requires_grad_false():
    run32, run64 = frozen_first_layer(np.float32), frozen_first_layer(np.float64)
    for run in (run32, run64):
        model = run["model"]
        for name, value in model[0].state_dict().items():
            np.testing.assert_array_equal(value, run["frozen_before"][name], err_msg=name)
        assert all(p.grad is None for p in model[0].parameters())
        assert model[2].weight.grad is not None
    assert run64["losses"][-1] < 0.5 * run64["losses"][0]
    assert_follows_float64(run32, run64)


# ---- 4. gradient clipping through a hook -----------------------------------------------------

def clipped_by_hooks(dtype, steps=200, clip=0.1):
    tl.manual_seed(3)
    x = tl.randn(64, 3, dtype=dtype)
    y = x @ tl.tensor([[1.5], [-2.0], [0.5]], dtype=dtype) + 0.25
    model = nn.Linear(3, 1).to(dtype)
    largest_seen = []
    for p in model.parameters():
        p.register_hook(lambda grad: grad.clamp(-clip, clip))
    optimizer = tl.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.MSELoss()(model(x), y)
        loss.backward()
        largest_seen.append(max(float(np.abs(p.grad).max()) for p in model.parameters()))
        optimizer.step()
        losses.append(loss.item())
    return {**finished(model, losses), "largest_grad": max(largest_seen)}


def test_gradient_clipping_through_a_hook():
    run32, run64 = clipped_by_hooks(np.float32), clipped_by_hooks(np.float64)
    assert run64["largest_grad"] <= 0.1 + 1e-12  # the hook really clipped every gradient
    assert run64["losses"][0] > 1.0 and run64["losses"][-1] < 1e-3
    assert_follows_float64(run32, run64)


# ---- 5. save, load and resume ---------------------------------------------------------------

def build(dtype):
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    optimizer = tl.optim.Adam(model.parameters(), lr=0.05)
    scheduler = tl.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.7)
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, x, y, steps):
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.MSELoss()(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def save_load_resume(dtype, path, steps=60):
    tl.manual_seed(4)
    x = tl.randn(40, 2, dtype=dtype)
    y = (x[:, :1] * x[:, 1:]).tanh()
    model, optimizer, scheduler = build(dtype)
    losses = train(model, optimizer, scheduler, x, y, steps // 2)
    tl.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "losses": losses}, path)

    tl.manual_seed(99)  # a fresh model with other weights: everything must come from the file
    model, optimizer, scheduler = build(dtype)
    state = tl.load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    losses = list(state["losses"]) + train(model, optimizer, scheduler, x, y, steps - steps // 2)
    return finished(model, losses)


def uninterrupted(dtype, steps=60):
    tl.manual_seed(4)
    x = tl.randn(40, 2, dtype=dtype)
    y = (x[:, :1] * x[:, 1:]).tanh()
    model, optimizer, scheduler = build(dtype)
    return finished(model, train(model, optimizer, scheduler, x, y, steps))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_and_resume_equals_training_straight_through(dtype, tmp_path):
    resumed = save_load_resume(dtype, tmp_path / "checkpoint.tl")
    straight = uninterrupted(dtype)
    np.testing.assert_array_equal(resumed["losses"], straight["losses"])
    for name, value in straight["params"].items():
        np.testing.assert_array_equal(resumed["params"][name], value, err_msg=name)
    assert straight["losses"][-1] < 0.5 * straight["losses"][0]


def test_save_load_resume_program_follows_float64(tmp_path):
    assert_follows_float64(save_load_resume(np.float32, tmp_path / "a.tl"),
                           save_load_resume(np.float64, tmp_path / "b.tl"))
