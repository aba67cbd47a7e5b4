"""Tests of tensorlite.optim: update rules against hand-written NumPy versions of
PyTorch's formulas, flat-buffer bookkeeping, state_dict round trips, gradient
clipping and the learning-rate schedule."""

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tensorlite as tl
from tensorlite import optim, serialization
from tensorlite.testing import assert_within_rounding


# ----------------------------------------------------------------------------
# Reference updates, written from PyTorch's documented algorithms


def reference_sgd(params, grads, buffers, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                  nesterov=False):
    """One torch.optim.SGD step on float64 arrays (params and buffers updated in place)."""
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        g = g + weight_decay * p
        if momentum != 0:
            if buffers[i] is None:
                buffers[i] = g.copy()
            else:
                buffers[i] = momentum * buffers[i] + (1 - dampening) * g
            g = g + momentum * buffers[i] if nesterov else buffers[i]
        p -= lr * g


def reference_adamw(p, g, m, v, step, lr, betas, eps, weight_decay):
    """One torch.optim.AdamW step on one parameter (arrays updated in place)."""
    beta1, beta2 = betas
    p *= 1 - lr * weight_decay
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


SHAPES = [(3, 4), (5,), (2, 3, 2), ()]


def make_params(rng, dtype=np.float64, shapes=SHAPES):
    return [tl.nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def random_grads(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


# ----------------------------------------------------------------------------
# SGD


@pytest.mark.parametrize("momentum, dampening, weight_decay, nesterov", [
    (0.0, 0.0, 0.0, False),
    (0.9, 0.0, 0.0, False),
    (0.9, 0.3, 0.01, False),
    (0.8, 0.0, 0.1, True),
])
def test_sgd_matches_reference(momentum, dampening, weight_decay, nesterov):
    rng = np.random.default_rng(0)
    params = make_params(rng)
    expected = [p.data.copy() for p in params]
    buffers = [None] * len(params)
    opt = optim.SGD(params, lr=0.1, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, nesterov=nesterov)
    for _ in range(5):
        grads = random_grads(rng, params)
        for p, g in zip(params, grads):
            p.grad = tl.Tensor(g.copy())
        opt.step()
        reference_sgd(expected, grads, buffers, 0.1, momentum, dampening, weight_decay, nesterov)
        for p, e in zip(params, expected):
            np.testing.assert_allclose(p.data, e, rtol=1e-12, atol=1e-12)


def test_sgd_param_groups_and_skipped_grads():
    rng = np.random.default_rng(1)
    a, b = make_params(rng, shapes=[(4, 3), (3,)])
    opt = optim.SGD([{"params": [a], "weight_decay": 0.5},
                     {"params": [b], "lr": 0.01}], lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    ea, eb = a.data.copy(), b.data.copy()
    buf_a, buf_b = [None], [None]
    for step in range(4):
        ga, gb = random_grads(rng, [a, b])
        a.grad = tl.Tensor(ga.copy())
        b.grad = None if step == 1 else tl.Tensor(gb.copy())  # b sits out one step
        opt.step()
        reference_sgd([ea], [ga], buf_a, 0.1, 0.9, weight_decay=0.5)
        reference_sgd([eb], [None if step == 1 else gb], buf_b, 0.01, 0.9)
        np.testing.assert_allclose(a.data, ea, rtol=1e-12)
        np.testing.assert_allclose(b.data, eb, rtol=1e-12)


def test_sgd_updates_in_place():
    p = tl.nn.Parameter(np.ones(3, dtype=np.float32))
    data = p.data
    p.grad = tl.Tensor(np.ones(3, dtype=np.float32))
    optim.SGD([p], lr=0.5).step()
    assert p.data is data
    np.testing.assert_array_equal(data, [0.5, 0.5, 0.5])


def test_sgd_rejects_bad_settings():
    p = tl.nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=-1.0)


# ----------------------------------------------------------------------------
# AdamW


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_adamw_matches_reference(kernel_set, dtype, rtol):
    rng = np.random.default_rng(2)
    params = make_params(rng, dtype)
    expected = [p.data.astype(np.float64) for p in params]
    moments = [(np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    hp = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    opt = optim.AdamW(params, **hp)
    for step in range(1, 6):
        grads = random_grads(rng, params)
        for p, g in zip(params, grads):
            p.grad = tl.Tensor(g)
        opt.step()
        for e, g, (m, v) in zip(expected, grads, moments):
            reference_adamw(e, g.astype(np.float64), m, v, step, **hp)
        for p, e in zip(params, expected):
            assert p.data.dtype == dtype
            np.testing.assert_allclose(p.data, e, rtol=rtol, atol=rtol)


def test_adamw_param_groups_with_different_weight_decay(kernel_set):
    rng = np.random.default_rng(3)
    w1, w2, bias = make_params(rng, shapes=[(4, 4), (2, 4), (4,)])
    opt = optim.AdamW([{"params": [w1, w2], "weight_decay": 0.1},
                       {"params": [bias], "weight_decay": 0.0, "lr": 3e-3}],
                      lr=1e-2, betas=(0.9, 0.99))
    settings = [(1e-2, 0.1), (1e-2, 0.1), (3e-3, 0.0)]
    expected = [p.data.copy() for p in (w1, w2, bias)]
    moments = [(np.zeros(e.shape), np.zeros(e.shape)) for e in expected]
    for step in range(1, 5):
        grads = random_grads(rng, [w1, w2, bias])
        for p, g in zip((w1, w2, bias), grads):
            p.grad = tl.Tensor(g)
        opt.step()
        for e, g, (m, v), (lr, wd) in zip(expected, grads, moments, settings):
            reference_adamw(e, g, m, v, step, lr, (0.9, 0.99), 1e-8, wd)
    for p, e in zip((w1, w2, bias), expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10)


def test_adamw_lr_change_between_steps_is_used():
    rng = np.random.default_rng(4)
    (p,) = make_params(rng, shapes=[(6,)])
    e, m, v = p.data.copy(), np.zeros(6), np.zeros(6)
    opt = optim.AdamW([p], lr=1e-2)
    for step, lr in enumerate([1e-2, 5e-3, 1e-3], start=1):
        opt.param_groups[0]["lr"] = lr
        g = rng.standard_normal(6)
        p.grad = tl.Tensor(g)
        opt.step()
        reference_adamw(e, g, m, v, step, lr, (0.9, 0.999), 1e-8, 1e-2)
    np.testing.assert_allclose(p.data, e, rtol=1e-10)


def test_adamw_skips_params_without_grad_like_pytorch(kernel_set):
    """A parameter with grad None is not decayed and its step count does not advance."""
    rng = np.random.default_rng(5)
    params = make_params(rng, shapes=[(3,), (4,), (2, 2)])
    expected = [p.data.copy() for p in params]
    moments = [(np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    steps = [0, 0, 0]
    opt = optim.AdamW(params, lr=0.05, weight_decay=0.2)
    schedule = [(True, True, True), (True, False, True), (False, False, True), (True, True, True)]
    for present in schedule:
        grads = random_grads(rng, params)
        for p, g, has in zip(params, grads, present):
            p.grad = tl.Tensor(g) if has else None
        before = [p.data.copy() for p in params]
        opt.step()
        for i, has in enumerate(present):
            if has:
                steps[i] += 1
                reference_adamw(expected[i], grads[i], *moments[i], steps[i], 0.05, (0.9, 0.999), 1e-8, 0.2)
            else:
                np.testing.assert_array_equal(params[i].data, before[i])
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10)
    assert [opt.state_dict()["state"][i]["step"] for i in range(3)] == steps


def test_adamw_flat_buffer_views_stay_in_sync():
    rng = np.random.default_rng(6)
    params = make_params(rng, np.float32)
    values = [p.data.copy() for p in params]
    opt = optim.AdamW(params, lr=0.1)
    (buffer,) = opt._buffers[0]
    # Values survive the move into the flat buffer, and every p.data is a view of it.
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.data, v)
        assert np.shares_memory(p.data, buffer.data)
    views = [p.data for p in params]
    for p in params:
        p.grad = tl.Tensor(np.ones(p.shape, dtype=np.float32))
    opt.step()
    for p, view, v in zip(params, views, values):
        assert p.data is view                      # still the same array the model holds
        assert not np.array_equal(p.data, v)       # and it was updated
    # A write through a parameter (how Module.load_state_dict loads) reaches the buffer.
    params[0].data[...] = 7.0
    s = buffer.slice(0)
    np.testing.assert_array_equal(buffer.data[s], 7.0)


def _backward_into(params, rng):
    """One backward of a random linear function of `params`; returns its gradients."""
    weights = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    loss = sum(((p * tl.tensor(w)).sum() for p, w in zip(params, weights)), tl.tensor(0.0))
    loss.backward()
    return weights


@pytest.mark.parametrize("name", ["AdamW", "Adam", "Adam-maximize", "Adam-l2"])
def test_backward_writes_gradients_into_the_flat_buffer_and_step_reads_them_in_place(name):
    rng = np.random.default_rng(30)
    options = {"Adam-maximize": dict(maximize=True), "Adam-l2": dict(weight_decay=0.1)}
    make = optim.AdamW if name == "AdamW" else optim.Adam
    params = make_params(rng, np.float32)
    twins = [tl.nn.Parameter(p.data.copy()) for p in params]
    opt = make(params, lr=0.1, **options.get(name, {}))
    twin_opt = make(twins, lr=0.1, **options.get(name, {}))
    (buffer,) = opt._buffers[0]
    for _ in range(3):
        weights = _backward_into(params, rng)
        for p, w in zip(params, weights):
            assert np.shares_memory(p.grad.data, buffer.grad)   # no gradient memory of its own
            np.testing.assert_array_equal(p.grad.data, w)
        grad, _ = buffer.gather_grads()
        assert grad is buffer.grad                              # nothing to copy
        for t, w in zip(twins, weights):                        # the same step from copies
            t.grad = tl.Tensor(w.copy())
        opt.step()
        twin_opt.step()
        for p, w in zip(params, weights):                       # step() left p.grad alone
            np.testing.assert_array_equal(p.grad.data, w)
        for p, t in zip(params, twins):
            np.testing.assert_array_equal(p.data, t.data)
        opt.zero_grad()
        twin_opt.zero_grad()


def test_a_gradient_the_user_keeps_is_not_overwritten_by_the_next_backward():
    rng = np.random.default_rng(31)
    params = make_params(rng, np.float32)
    opt = optim.AdamW(params, lr=0.1)
    first = _backward_into(params, rng)
    kept = [p.grad for p in params]
    opt.zero_grad()
    second = _backward_into(params, rng)
    for g, p, w1, w2 in zip(kept, params, first, second):
        np.testing.assert_array_equal(g.data, w1)               # as in PyTorch
        np.testing.assert_array_equal(p.grad.data, w2)
    twins = [tl.nn.Parameter(p.data.copy()) for p in params]
    twin_opt = optim.AdamW(twins, lr=0.1)
    for t, w in zip(twins, second):
        t.grad = tl.Tensor(w.copy())
    opt.step()
    twin_opt.step()
    for g, p, t, w1 in zip(kept, params, twins, first):
        np.testing.assert_array_equal(p.data, t.data)           # stepped with the new gradients
        np.testing.assert_array_equal(g.data, w1)               # and the kept ones untouched
    del kept, g                                                 # (g: the loop variable)
    opt.zero_grad()
    _backward_into(params, rng)                                 # the homes are free again
    assert all(np.shares_memory(p.grad.data, opt._buffers[0][0].grad) for p in params)


@pytest.mark.parametrize("keep", ["numpy", "data", "detach", "view", "reshape", "transpose"])
def test_an_array_or_view_of_a_kept_gradient_is_not_overwritten(keep):
    p = tl.nn.Parameter(np.ones((2, 3), np.float32))
    opt = optim.AdamW([p], lr=0.1)
    (p * 2.0).sum().backward()
    kept = {"numpy": lambda g: g.numpy(), "data": lambda g: g.data,
            "detach": lambda g: g.detach().numpy(), "view": lambda g: g.numpy()[0],
            "reshape": lambda g: g.numpy().reshape(-1), "transpose": lambda g: g.numpy().T}[keep](p.grad)
    opt.zero_grad()
    (p * 5.0).sum().backward()
    np.testing.assert_array_equal(kept, 2.0)                    # as in PyTorch
    np.testing.assert_array_equal(p.grad.data, 5.0)
    del kept
    opt.zero_grad()
    (p * 7.0).sum().backward()                                  # nothing refers to it: reused
    assert np.shares_memory(p.grad.data, opt._buffers[0][0].grad)


def test_step_reads_a_gradient_whose_array_was_replaced():
    p = tl.nn.Parameter(np.zeros(3, np.float32))
    opt = optim.Adam([p], lr=1.0)
    (p * tl.tensor(np.array([1, -1, 100], np.float32))).sum().backward()
    p.grad.data = np.zeros(3, np.float32)  # rebound, not written in place
    opt.step()
    np.testing.assert_array_equal(p.data, 0.0)


def test_a_gradient_has_its_parameters_dtype_after_the_parameter_changes_dtype():
    p = tl.nn.Parameter(np.ones(3, np.float32))
    optim.AdamW([p], lr=0.1)
    p.data = p.data.astype(np.float64)
    (p * 2.0).sum().backward()
    assert p.grad.dtype == np.float64


def test_a_deep_copied_optimizer_still_steps():
    import copy
    p = tl.nn.Parameter(np.ones(3, np.float32))
    opt = optim.AdamW([p], lr=0.1)
    twin = copy.deepcopy(opt)
    p2 = twin.param_groups[0]["params"][0]
    (p2 * 2.0).sum().backward()
    twin.step()
    assert not np.array_equal(p2.data, 1.0)


def test_zero_dimensional_and_empty_parameters_step_without_a_home():
    a, e = tl.nn.Parameter(np.array(1.0, np.float32)), tl.nn.Parameter(np.zeros(0, np.float32))
    opt = optim.AdamW([a, e], lr=0.1)
    ((a * 3.0) + e.sum()).backward()
    opt.step()
    assert a.item() < 1.0 and e.grad.shape == (0,)


def test_a_copied_parameter_does_not_share_its_optimizers_gradient_buffer():
    import copy
    import pickle
    p = tl.nn.Parameter(np.ones(3, np.float32))
    opt = optim.AdamW([p], lr=0.1)
    for twin in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        (twin * 2.0).sum().backward()
        np.testing.assert_array_equal(twin.grad.data, 2.0)
        assert not np.shares_memory(twin.grad.data, opt._buffers[0][0].grad)
    assert p.grad is None


def test_adamw_adopts_rebound_data_at_next_step():
    p = tl.nn.Parameter(np.zeros(4))
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.0)
    p.data = np.full(4, 3.0)      # rebinding instead of copying in place
    p.grad = tl.Tensor(np.zeros(4))  # zero gradient: Adam leaves the values alone
    opt.step()
    np.testing.assert_array_equal(p.data, 3.0)
    assert np.shares_memory(p.data, opt._buffers[0][0].data)


def test_adamw_with_a_module_and_load_state_dict():
    tl.manual_seed(0)
    layer = tl.nn.Linear(3, 2)
    opt = optim.AdamW(layer.parameters(), lr=0.1)
    x = tl.Tensor(np.ones((5, 3), dtype=np.float32))
    before = layer(x).data.copy()
    layer(x).sum().backward()
    opt.step()
    after = layer(x).data
    assert not np.allclose(before, after)  # the module sees the optimizer's update
    # Loading weights into the module goes into the flat buffer too.
    saved = {k: np.full_like(v, 0.5) for k, v in layer.state_dict().items()}
    layer.load_state_dict(saved)
    np.testing.assert_allclose(opt._buffers[0][0].data, 0.5)
    np.testing.assert_allclose(layer(x).data, 0.5 * 3 + 0.5)


def test_adamw_mixed_dtypes_in_one_group(kernel_set):
    rng = np.random.default_rng(7)
    p32 = tl.nn.Parameter(rng.standard_normal((3, 2)).astype(np.float32))
    p64 = tl.nn.Parameter(rng.standard_normal(5))
    e32, e64 = p32.data.astype(np.float64), p64.data.copy()
    m32, m64 = (np.zeros((3, 2)), np.zeros((3, 2))), (np.zeros(5), np.zeros(5))
    opt = optim.AdamW([p32, p64], lr=0.01)
    assert [b.dtype for b in opt._buffers[0]] == [np.float32, np.float64]
    for step in range(1, 4):
        g32, g64 = rng.standard_normal((3, 2)), rng.standard_normal(5)
        p32.grad, p64.grad = tl.Tensor(g32.astype(np.float32)), tl.Tensor(g64)
        opt.step()
        reference_adamw(e32, g32.astype(np.float32).astype(np.float64), *m32, step, 0.01, (0.9, 0.999), 1e-8, 1e-2)
        reference_adamw(e64, g64, *m64, step, 0.01, (0.9, 0.999), 1e-8, 1e-2)
    assert p32.data.dtype == np.float32 and p64.data.dtype == np.float64
    np.testing.assert_allclose(p32.data, e32, rtol=2e-5)
    np.testing.assert_allclose(p64.data, e64, rtol=1e-10)


@given(lr=st.floats(1e-4, 0.5), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       weight_decay=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_adamw_matches_reference_for_any_hyperparameters(lr, beta1, beta2, weight_decay, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, shapes=[(2, 3), (4,)])
    expected = [p.data.copy() for p in params]
    moments = [(np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    opt = optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=1e-8, weight_decay=weight_decay)
    for step in range(1, 4):
        grads = random_grads(rng, params)
        for p, g in zip(params, grads):
            p.grad = tl.Tensor(g)
        opt.step()
        for e, g, (m, v) in zip(expected, grads, moments):
            reference_adamw(e, g, m, v, step, lr, (beta1, beta2), 1e-8, weight_decay)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------
# Construction rules shared by all optimizers


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.AdamW(ps)])
def test_parameter_list_rules(make):
    p, q = tl.nn.Parameter(np.ones(2)), tl.nn.Parameter(np.ones(3))
    with pytest.raises(TypeError, match="single Tensor"):
        make(p)
    with pytest.raises(ValueError, match="empty"):
        make([])
    with pytest.raises(ValueError, match="more than one parameter group"):
        make([{"params": [p]}, {"params": [p, q]}])
    # A tied parameter listed twice is optimized once.
    opt = make([p, q, p])
    assert len(opt.param_groups[0]["params"]) == 2


def test_tied_parameter_is_updated_once():
    p = tl.nn.Parameter(np.zeros(2))
    p.grad = tl.Tensor(np.ones(2))
    optim.SGD([p, p], lr=1.0).step()
    np.testing.assert_array_equal(p.data, -1.0)


def test_adamw_rejects_parameters_sharing_memory():
    base = np.zeros((4, 4))
    a, b = tl.nn.Parameter(base), tl.nn.Parameter(base[1:3])  # two parameters viewing one array
    assert a.data is base and np.shares_memory(b.data, base)
    with pytest.raises(ValueError, match="share memory"):
        optim.AdamW([a, b])


def test_zero_grad():
    p = tl.nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = tl.Tensor(np.ones(3))
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.data.any()
    opt.zero_grad()
    assert p.grad is None


# ----------------------------------------------------------------------------
# state_dict


def save_and_load_without_pickle(state_dict):
    """Round-trip through np.savez + json exactly as a checkpoint would."""
    arrays, tree = serialization.split_arrays(state_dict)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as npz:
        loaded_arrays = {k: npz[k] for k in npz.files}
    return serialization.join_arrays(loaded_arrays, json.loads(json.dumps(tree)))


OPTIMIZERS = {
    "sgd": lambda groups: optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adamw": lambda groups: optim.AdamW(groups, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1),
    "adam": lambda groups: optim.Adam(groups, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1),
    "rmsprop": lambda groups: optim.RMSprop(groups, lr=0.01, momentum=0.5, centered=True,
                                            weight_decay=0.1),
    "rmsprop-plain": lambda groups: optim.RMSprop(groups, lr=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_continues_bit_identically(name, dtype):
    rng = np.random.default_rng(8)
    params = make_params(rng, dtype)

    def groups(ps):
        return [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0}]

    opt = OPTIMIZERS[name](groups(params))
    for _ in range(3):
        for p, g in zip(params, random_grads(rng, params)):
            p.grad = tl.Tensor(g)
        opt.step()
    opt.param_groups[0]["lr"] = 0.003  # as a schedule would have set it

    state = save_and_load_without_pickle(opt.state_dict())
    clones = [tl.nn.Parameter(p.data.copy()) for p in params]
    restored = OPTIMIZERS[name](groups(clones))
    restored.load_state_dict(state)
    assert restored.param_groups[0]["lr"] == 0.003
    assert type(restored.param_groups[0].get("betas", ())) is tuple

    for _ in range(3):
        grads = random_grads(rng, params)
        for p, c, g in zip(params, clones, grads):
            p.grad, c.grad = tl.Tensor(g), tl.Tensor(g.copy())
        opt.step()
        restored.step()
    for p, c in zip(params, clones):
        np.testing.assert_array_equal(p.data, c.data)
    again = restored.state_dict()
    original = opt.state_dict()
    assert json.dumps(serialization.split_arrays(again)[1]) == json.dumps(serialization.split_arrays(original)[1])
    for i in original["state"]:
        for key, value in original["state"][i].items():
            np.testing.assert_array_equal(again["state"][i][key], value)


def test_state_dict_is_a_copy_and_json_friendly():
    p = tl.nn.Parameter(np.ones(3))
    opt = optim.AdamW([p], lr=0.1)
    p.grad = tl.Tensor(np.ones(3))
    opt.step()
    state = opt.state_dict()
    assert state["param_groups"] == [{"lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8,
                                      "weight_decay": 0.01, "params": [0]}]
    assert state["state"][0]["step"] == 1 and isinstance(state["state"][0]["step"], int)
    saved = state["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(state["state"][0]["exp_avg"], saved)  # not a live view


def test_load_state_dict_errors_leave_the_optimizer_untouched():
    rng = np.random.default_rng(9)
    params = make_params(rng)
    opt = optim.AdamW(params, lr=0.1)
    for p in params:
        p.grad = tl.Tensor(np.ones(p.shape))
    opt.step()
    good = opt.state_dict()

    other = optim.AdamW(make_params(rng), lr=0.1)
    with pytest.raises(ValueError, match="2 parameter groups"):
        other.load_state_dict({"state": {}, "param_groups": good["param_groups"] * 2})
    with pytest.raises(ValueError, match="3 parameters, this optimizer has 4"):
        other.load_state_dict({"state": {}, "param_groups": [dict(good["param_groups"][0], params=[0, 1, 2])]})
    bad_shape = {"state": {**good["state"], 1: dict(good["state"][1], exp_avg=np.zeros(6))},
                 "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match=r"parameter 1: 'exp_avg' has shape \(6,\)"):
        other.load_state_dict(bad_shape)
    sgd_state = {"state": {0: {"momentum_buffer": np.zeros((3, 4))}}, "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match="AdamW state_dict"):
        other.load_state_dict(sgd_state)
    with pytest.raises(ValueError, match="exactly the keys"):
        other.load_state_dict({"state": {}})
    assert other.state_dict()["state"][0]["step"] == 0  # nothing was loaded

    # String keys, as JSON leaves them, are accepted.
    other.load_state_dict({"state": {str(k): v for k, v in good["state"].items()},
                           "param_groups": good["param_groups"]})
    assert other.state_dict()["state"][3]["step"] == 1


def test_state_dict_splits_into_arrays_and_plain_json():
    p = tl.nn.Parameter(np.ones((2, 2), dtype=np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = tl.Tensor(np.ones((2, 2), dtype=np.float32))
    opt.step()
    arrays, tree = serialization.split_arrays(opt.state_dict(), "optim")
    assert sorted(arrays) == ["optim/state/0/momentum_buffer"]
    assert tree["state"]["__items__"][0][1] == {
        "momentum_buffer": {"__array__": "optim/state/0/momentum_buffer"}}
    json.dumps(tree)  # plain JSON


# ----------------------------------------------------------------------------
# Gradient clipping


def test_clip_grad_norm_scales_when_above_max():
    rng = np.random.default_rng(10)
    params = make_params(rng, np.float64)
    grads = random_grads(rng, params)
    for p, g in zip(params, grads):
        p.grad = tl.Tensor(np.array(10 * g))
    expected_norm = math.sqrt(sum(float(np.sum((10 * g) ** 2)) for g in grads))
    held = [p.grad for p in params]
    norm = optim.clip_grad_norm_(params, max_norm=1.0)
    assert isinstance(norm, float)
    assert norm == pytest.approx(expected_norm, rel=1e-12)
    coef = 1.0 / (expected_norm + 1e-6)
    for p, g, h in zip(params, grads, held):
        assert p.grad is h  # modified in place
        np.testing.assert_allclose(p.grad, 10 * g * coef, rtol=1e-12)
    new_norm = math.sqrt(sum(float(np.sum(p.grad.data ** 2)) for p in params))
    assert new_norm == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_grads_alone_and_ignores_none():
    a, b, c = make_params(np.random.default_rng(11), np.float32, shapes=[(3,), (2, 2), ()])
    a.grad = tl.Tensor(np.array([3.0, 0.0, 0.0], dtype=np.float32))
    b.grad = tl.Tensor(np.array([[0.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    c.grad = None
    norm = optim.clip_grad_norm_([a, b, c], max_norm=5.5)
    assert norm == pytest.approx(5.0)
    np.testing.assert_array_equal(a.grad, [3.0, 0.0, 0.0])
    assert a.grad.dtype == np.float32 and c.grad is None
    assert optim.clip_grad_norm_([c], 1.0) == 0.0
    # A 0-d parameter whose gradient is a NumPy scalar is clipped as well.
    c.grad = tl.Tensor(np.float32(-12.0))
    assert optim.clip_grad_norm_([a, b, c], max_norm=6.5) == pytest.approx(13.0)
    np.testing.assert_allclose(c.grad, -12.0 * 6.5 / 13.0, rtol=1e-6)


def test_clip_grad_norm_other_norms():
    p = tl.nn.Parameter(np.zeros(3))
    p.grad = tl.Tensor(np.array([1.0, -4.0, 2.0]))
    assert optim.clip_grad_norm_(p, 10.0, norm_type=math.inf) == 4.0
    assert optim.clip_grad_norm_(p, 10.0, norm_type=1) == pytest.approx(7.0)
    norm = optim.clip_grad_norm_(p, 2.0, norm_type=1)
    np.testing.assert_allclose(p.grad, np.array([1.0, -4.0, 2.0]) * 2.0 / (7.0 + 1e-6))
    assert norm == pytest.approx(7.0)


# ----------------------------------------------------------------------------
# Learning-rate schedule


SCHEDULE = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)


def test_get_lr_key_points():
    lr = lambda it: optim.get_lr(it, **SCHEDULE)  # noqa: E731
    assert lr(0) == pytest.approx(1.0 / 11)          # warmup start
    assert lr(9) == pytest.approx(10.0 / 11)         # last warmup step
    assert lr(10) == pytest.approx(1.0)              # warmup end: peak
    assert lr(60) == pytest.approx(0.55)             # half-way through the cosine
    assert lr(110) == pytest.approx(0.1)             # end of decay
    assert lr(111) == 0.1 and lr(10_000) == 0.1      # after decay
    values = [lr(it) for it in range(10, 111)]
    assert all(x >= y for x, y in zip(values, values[1:]))


def test_get_lr_without_warmup_or_decay_span():
    assert optim.get_lr(0, max_lr=1.0, min_lr=0.0, warmup_iters=0, lr_decay_iters=0) == 1.0
    assert optim.get_lr(1, max_lr=1.0, min_lr=0.0, warmup_iters=0, lr_decay_iters=0) == 0.0
    with pytest.raises(ValueError, match="lr_decay_iters"):
        optim.get_lr(0, max_lr=1.0, min_lr=0.0, warmup_iters=10, lr_decay_iters=5)


def test_cosine_warmup_schedule_sets_every_group():
    schedule = optim.CosineWarmupSchedule(**SCHEDULE)
    opt = optim.SGD([{"params": [tl.nn.Parameter(np.ones(1))]},
                     {"params": [tl.nn.Parameter(np.ones(1))]}], lr=5.0)
    assert schedule.apply(opt, 60) == pytest.approx(0.55)
    assert [g["lr"] for g in opt.param_groups] == [schedule(60)] * 2


# ----------------------------------------------------------------------------
# Optional: the same numbers as PyTorch itself, when it happens to be installed


def test_matches_torch_when_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    values = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(4)]
    grads[1][1] = None  # the second parameter sits out one step
    for make_ours, make_theirs in [
        (lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
         lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        (lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
         lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1)),
        (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=0.1),
         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=0.1)),
        (lambda ps: optim.RMSprop(ps, lr=0.01),
         lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
    ]:
        ours = [tl.nn.Parameter(v.copy()) for v in values]
        theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
        opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
        for step_grads in grads:
            for p, q, g in zip(ours, theirs, step_grads):
                p.grad = None if g is None else tl.Tensor(g.copy())
                q.grad = None if g is None else torch.tensor(g.copy())
            opt_ours.step()
            opt_theirs.step()
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------
# Adam (L2 weight decay through the gradient) and RMSprop


def reference_adam(p, g, m, v, step, lr, betas, eps, weight_decay):
    """One torch.optim.Adam step: the penalty goes into the gradient, then Adam."""
    reference_adamw(p, g + weight_decay * p, m, v, step, lr, betas, eps, 0.0)


def adam_error_bound(errors, p, g, m, v, step, lr, betas, eps, weight_decay, unit):
    """Carry `errors` (arrays bounding the errors of p, m and v, updated in place) through
    one Adam step computed with machine epsilon `unit`, given the exact p, m, v before
    the step (call it before reference_adam). Each operation adds unit times its result's
    size (twice for a product with a constant rounded to the dtype) to the error it
    inherits, which the later operations carry on to first order: the penalty brings p's
    error into the gradient, the moments scale theirs by beta, the update divides m's by
    the denominator. The bound holds whatever the hyperparameters, including moments that
    cancel to near 0."""
    beta1, beta2 = betas
    p_error, m_error, v_error = errors
    g = g + weight_decay * p
    g_error = weight_decay * p_error + unit * (2 * np.abs(weight_decay * p) + np.abs(g))
    new_m = beta1 * m + (1 - beta1) * g
    m_error[...] = (beta1 * m_error + (1 - beta1) * g_error
                    + unit * (2 * np.abs(beta1 * m) + 2 * np.abs((1 - beta1) * g) + np.abs(new_m)))
    new_v = beta2 * v + (1 - beta2) * g * g
    v_error[...] = (beta2 * v_error + 2 * (1 - beta2) * np.abs(g) * g_error
                    + unit * (2 * beta2 * v + 3 * (1 - beta2) * g * g + new_v))
    root = np.sqrt(new_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        root_error = np.minimum(np.where(root > 0, v_error / (2 * root), np.inf),
                                np.sqrt(v_error)) + unit * root
    scale2 = 1 / np.sqrt(1 - beta2 ** step)
    denom = root * scale2 + eps
    denom_error = root_error * scale2 + unit * (2 * root * scale2 + denom)
    step_size = lr / (1 - beta1 ** step)
    update = step_size * new_m / denom
    update_error = (step_size * (m_error / denom + np.abs(new_m) * denom_error / denom ** 2)
                    + 3 * unit * np.abs(update))
    p_error += update_error + unit * np.abs(p - update)


def reference_rmsprop(p, g, state, lr, alpha, eps, weight_decay, momentum, centered):
    """One torch.optim.RMSprop step on float64 arrays (state arrays updated in place)."""
    g = g + weight_decay * p
    v = state.setdefault("square_avg", np.zeros_like(p))
    v[...] = alpha * v + (1 - alpha) * g * g
    if centered:
        a = state.setdefault("grad_avg", np.zeros_like(p))
        a[...] = alpha * a + (1 - alpha) * g
        denom = np.sqrt(v - a * a) + eps
    else:
        denom = np.sqrt(v) + eps
    if momentum > 0:
        buf = state.setdefault("momentum_buffer", np.zeros_like(p))
        buf[...] = momentum * buf + g / denom
        p -= lr * buf
    else:
        p -= lr * g / denom


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(lr=st.floats(1e-4, 0.5), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       weight_decay=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_adam_matches_reference(dtype, lr, beta1, beta2, weight_decay, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype, shapes=[(2, 3), (4,), ()])
    expected = [p.data.astype(np.float64) for p in params]
    moments = [(np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    errors = [tuple(np.zeros(p.shape) for _ in range(3)) for p in params]
    opt = optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=1e-8, weight_decay=weight_decay)
    present = [(True, True, True), (True, False, True), (True, True, True)]
    steps = [0, 0, 0]
    for has in present:
        grads = random_grads(rng, params)
        for p, g, h in zip(params, grads, has):
            p.grad = tl.Tensor(g) if h else None
        opt.step()
        for i, h in enumerate(has):
            if h:
                steps[i] += 1
                hyper = (steps[i], lr, (beta1, beta2), 1e-8, weight_decay)
                adam_error_bound(errors[i], expected[i], grads[i].astype(np.float64),
                                 *moments[i], *hyper, unit=np.finfo(dtype).eps)
                reference_adam(expected[i], grads[i].astype(np.float64), *moments[i], *hyper)
    for p, e, (p_error, _, _) in zip(params, expected, errors):
        assert p.data.dtype == dtype
        assert_within_rounding(p.data, e, p_error)


def test_adam_and_adamw_differ_only_in_how_weight_decay_applies():
    rng = np.random.default_rng(20)
    values = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    for wd in (0.0, 0.3):
        a, w = tl.nn.Parameter(values.copy()), tl.nn.Parameter(values.copy())
        adam, adamw = optim.Adam([a], lr=0.1, weight_decay=wd), optim.AdamW([w], lr=0.1, weight_decay=wd)
        for g in grads:
            a.grad, w.grad = tl.Tensor(g.copy()), tl.Tensor(g.copy())
            adam.step()
            adamw.step()
        assert np.array_equal(a.data, w.data) == (wd == 0.0)
    assert optim.Adam([tl.nn.Parameter(np.ones(1))]).defaults["weight_decay"] == 0.0
    assert optim.AdamW([tl.nn.Parameter(np.ones(1))]).defaults["weight_decay"] == 1e-2
    assert isinstance(adamw, optim.Adam) and adamw.decoupled_weight_decay


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_rmsprop_matches_reference(momentum, centered, weight_decay):
    rng = np.random.default_rng(21)
    params = make_params(rng)
    expected = [p.data.copy() for p in params]
    states = [{} for _ in params]
    hp = dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=weight_decay, momentum=momentum,
              centered=centered)
    opt = optim.RMSprop(params, **hp)
    for step in range(4):
        grads = random_grads(rng, params)
        if step == 2:
            grads[1] = None  # sits out one step
        for p, g in zip(params, grads):
            p.grad = None if g is None else tl.Tensor(g)
        opt.step()
        for e, g, state in zip(expected, grads, states):
            if g is not None:
                reference_rmsprop(e, g, state, **hp)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10, atol=1e-14)
    assert opt.state_dict()["state"][1]["step"] == 3


def test_rmsprop_float32_and_bad_settings():
    p = tl.nn.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.RMSprop([p], lr=0.1, momentum=0.9, centered=True)
    p.grad = tl.Tensor(np.full(3, 0.5, dtype=np.float32))
    opt.step()
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, 1 - 0.1 * 0.5 / (np.sqrt(0.01 * 0.25 - (0.01 * 0.5) ** 2) + 1e-8),
                               rtol=1e-4, atol=1e-6)  # float32 cancellation near 0
    for kwargs in ({"lr": -1}, {"alpha": 1.5}, {"eps": -1}, {"momentum": -0.1}, {"weight_decay": -1}):
        with pytest.raises(ValueError, match="invalid"):
            optim.RMSprop([p], **kwargs)
    with pytest.raises(ValueError, match="RMSprop state_dict"):
        opt.load_state_dict({"state": {0: {"momentum_buffer": np.zeros(3)}},
                             "param_groups": opt.state_dict()["param_groups"]})


def test_rmsprop_state_without_momentum_loads_into_one_with_momentum():
    p = tl.nn.Parameter(np.ones(2))
    plain = optim.RMSprop([p], lr=0.1)
    p.grad = tl.Tensor(np.ones(2))
    plain.step()
    q = tl.nn.Parameter(p.data.copy())
    with_momentum = optim.RMSprop([q], lr=0.1, momentum=0.5)
    saved = plain.state_dict()
    saved["param_groups"][0]["momentum"] = 0.5
    with_momentum.load_state_dict(saved)
    q.grad = tl.Tensor(np.ones(2))
    with_momentum.step()  # starts its momentum buffer at zero, as a fresh one would
    assert with_momentum.state_dict()["state"][0]["step"] == 2


# ----------------------------------------------------------------------------
# lr_scheduler: closed forms written from PyTorch's documentation


from tensorlite.optim import lr_scheduler  # noqa: E402


def one_param_optimizer(lr=1.0, groups=1):
    return optim.SGD([{"params": [tl.nn.Parameter(np.ones(1))]} for _ in range(groups)], lr=lr)


SCHEDULERS = {
    "LambdaLR": (lambda opt: lr_scheduler.LambdaLR(opt, lambda epoch: 0.95 ** epoch),
                 lambda base, e: base * 0.95 ** e),
    "StepLR": (lambda opt: lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
               lambda base, e: base * 0.5 ** (e // 3)),
    "CosineAnnealingLR": (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.1),
                          lambda base, e: 0.1 + (base - 0.1) * (1 + np.cos(np.pi * e / 7)) / 2),
    "LinearLR": (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.75, total_iters=4),
                 lambda base, e: base * (0.25 + 0.5 * min(e, 4) / 4)),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_follows_its_closed_form(name):
    make, closed_form = SCHEDULERS[name]
    opt = one_param_optimizer(lr=2.0, groups=2)
    opt.param_groups[1]["lr"] = 0.5
    scheduler = make(opt)
    for epoch in range(20):  # past T_max: the cosine comes back up, as in PyTorch
        expected = [closed_form(2.0, epoch), closed_form(0.5, epoch)]
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12)
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected, rtol=1e-12)
        scheduler.step()
    scheduler.step(5)  # an explicit epoch uses the closed form
    np.testing.assert_allclose(scheduler.get_last_lr()[0], closed_form(2.0, 5), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_state_dict_round_trip_through_json(name):
    make, _ = SCHEDULERS[name]
    opt = one_param_optimizer()
    scheduler = make(opt)
    for _ in range(5):
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))
    assert "optimizer" not in state and "lr_lambdas" not in state
    opt_state = opt.state_dict()

    # PyTorch's order: build both, then load the optimizer, then the scheduler.
    resumed_opt = one_param_optimizer()
    resumed = make(resumed_opt)
    resumed_opt.load_state_dict(json.loads(json.dumps(opt_state)))
    resumed.load_state_dict(state)
    for _ in range(6):
        scheduler.step()
        resumed.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()
    with pytest.raises(ValueError, match="unexpected keys"):
        resumed.load_state_dict({"bogus": 1})


def test_scheduler_errors_and_resuming_needs_initial_lr():
    opt = one_param_optimizer()
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=4)
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="expected 1 lr_lambdas"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])
    with pytest.raises(ValueError, match="start_factor"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)


def test_stacked_schedulers_multiply_like_pytorch():
    opt = one_param_optimizer(lr=1.0)
    warmup = lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2)
    decay = lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        warmup.step()
        decay.step()
    np.testing.assert_allclose(lrs, [0.5, 0.75, 0.1, 0.1, 0.01], rtol=1e-12)


def test_schedulers_match_torch_when_available():
    torch = pytest.importorskip("torch")
    torch_schedulers = {
        "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.95 ** epoch),
        "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        "CosineAnnealingLR": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.1),
        "LinearLR": lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.75, total_iters=4),
    }
    for name, make_theirs in torch_schedulers.items():
        ours = SCHEDULERS[name][0](one_param_optimizer(lr=2.0))
        theirs = make_theirs(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=2.0))
        for _ in range(20):
            assert ours.get_last_lr() == theirs.get_last_lr(), name  # bit for bit
            theirs.optimizer.step()
            ours.step()
            theirs.step()
