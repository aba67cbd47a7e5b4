"""Tests for tensorlite.nn: parameter bookkeeping, checkpoints, modes and the basic layers."""

import math

import numpy as np
import pytest

from hypothesis import given

import tensorlite as tl
from tensorlite import losses, nn
from tensorlite.testing import gradcheck
from tensorlite.testing import strategies as tst


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3))
        self.proj = nn.Linear(3, 2)

    def forward(self, x):
        return self.proj(x * self.scale)


class Outer(nn.Module):
    """Parameters and submodules interleaved.  As in PyTorch, a module lists its own parameters
    first (in assignment order), then each child's (children in assignment order, depth first)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Parameter(np.zeros(4))
        self.inner = Inner()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)])
        self.last = nn.Parameter(np.zeros((2, 2)))
        self.not_a_parameter = tl.Tensor(np.zeros(2), requires_grad=True)
        self.some_number = 3


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.embed.weight = self.head.weight  # tie, as GPT does

    def forward(self, idx):
        return self.head(self.embed(idx))


def test_parameter_is_float_and_requires_grad():
    p = nn.Parameter([1, 2, 3])
    assert p.requires_grad and p.dtype == np.float32
    assert nn.Parameter(np.zeros(2)).dtype == np.float64  # float dtype kept, like Tensor
    assert nn.Parameter(np.zeros(2), dtype=np.float32).dtype == np.float32
    assert isinstance(p, tl.Tensor)


def test_parameter_discovery_order_and_dotted_names():
    names = [name for name, _ in Outer().named_parameters()]
    assert names == [
        "first", "last",
        "inner.scale", "inner.proj.weight", "inner.proj.bias",
        "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
    ]


def test_parameters_matches_named_parameters():
    m = Outer()
    assert [id(p) for p in m.parameters()] == [id(p) for _, p in m.named_parameters()]
    assert m.num_parameters() == 4 + 4 + 3 + (6 + 2) + (4 + 2) + 4  # first, last, inner, blocks


def test_named_modules_and_children():
    m = Outer()
    assert [name for name, _ in m.named_modules()] == [
        "", "inner", "inner.proj", "blocks", "blocks.0", "blocks.1"]
    assert [type(c).__name__ for c in m.children()] == ["Inner", "ModuleList"]
    assert list(dict(m.named_children())) == ["inner", "blocks"]


def test_reassigning_keeps_position_and_non_parameters_unregister():
    m = Outer()
    m.first = nn.Parameter(np.ones(4))  # same name, new Parameter: same place in the order
    assert [name for name, _ in m.named_parameters()][0] == "first"
    assert m.first.data[0] == 1.0
    m.last = None  # no longer a parameter
    assert "last" not in dict(m.named_parameters())
    m.inner = 5  # a plain attribute replaces the submodule
    assert not any(name.startswith("inner") for name, _ in m.named_parameters())
    del m.blocks
    assert [name for name, _ in m.named_parameters()] == ["first"]
    with pytest.raises(AttributeError):
        m.blocks


def test_assigning_before_init_is_a_clear_error():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgot()


def test_tied_weight_appears_once_in_parameters_but_under_both_names_in_state_dict():
    m = Tied()
    assert m.embed.weight is m.head.weight
    params = list(m.parameters())
    assert len(params) == 1
    assert [name for name, _ in m.named_parameters()] == ["embed.weight"]
    assert m.num_parameters() == 15
    assert list(m.state_dict()) == ["embed.weight", "head.weight"]
    # the gradient of a tied weight sums both uses
    idx = np.array([0, 1, 1, 4])
    m(idx).sum().backward()
    w = m.head.weight.data.astype(np.float64)
    expected = np.zeros((5, 3))
    expected += np.ones((4, 5)).T @ w[idx]  # through the head: d sum(x @ W.T) / dW
    np.add.at(expected, idx, np.ones((4, 5)) @ w)  # through the embedding rows
    np.testing.assert_allclose(m.head.weight.grad, expected, rtol=1e-5)


def test_state_dict_holds_copies():
    m = Inner()
    sd = m.state_dict()
    sd["proj.weight"][...] = 123.0
    assert not np.any(m.proj.weight.data == 123.0)
    assert isinstance(sd["scale"], np.ndarray)


def test_load_state_dict_round_trip_copies_in_place():
    tl.manual_seed(0)
    a = Outer()
    tl.manual_seed(1)
    b = Outer()
    arrays_before = {name: p.data for name, p in b.named_parameters()}
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
        assert pb.data is arrays_before[name]  # written in place, not rebound
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.inner(x).data, b.inner(x).data)


def test_load_state_dict_reaches_optimizer_views():
    # AdamW keeps parameters as views of one flat buffer: loading must write into it.
    tl.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = tl.optim.AdamW(model.parameters(), lr=0.1)
    view = model.weight.data
    new = np.arange(6, dtype=np.float32).reshape(2, 3)
    model.load_state_dict({"weight": new, "bias": np.zeros(2)})
    np.testing.assert_array_equal(view, new)
    model(np.ones((1, 3), dtype=np.float32)).sum().backward()
    opt.step()
    assert model.weight.data is view or np.shares_memory(model.weight.data, view)
    assert not np.array_equal(model.weight.data, new)  # the step moved the loaded values


def test_load_state_dict_casts_to_parameter_dtype():
    m = nn.Linear(2, 2)
    m.load_state_dict({"weight": np.ones((2, 2), dtype=np.float64), "bias": [1, 2]})
    assert m.weight.dtype == np.float32
    np.testing.assert_array_equal(m.bias.data, [1.0, 2.0])


def test_load_state_dict_missing_key():
    m = Inner()
    sd = m.state_dict()
    del sd["proj.bias"]
    with pytest.raises(RuntimeError, match=r"missing key.*'proj\.bias'"):
        m.load_state_dict(sd)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["proj.bias"]


def test_load_state_dict_unexpected_key():
    m = Inner()
    sd = m.state_dict()
    sd["proj.extra"] = np.zeros(1)
    with pytest.raises(RuntimeError, match=r"unexpected key.*'proj\.extra'"):
        m.load_state_dict(sd)
    assert m.load_state_dict(sd, strict=False).unexpected_keys == ["proj.extra"]


def test_load_state_dict_shape_mismatch_names_key_and_both_shapes_and_copies_nothing():
    m = Inner()
    before = m.state_dict()
    sd = {name: value + 1.0 for name, value in before.items()}
    sd["proj.weight"] = np.zeros((3, 2))
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    message = str(info.value)
    assert "'proj.weight'" in message and "(3, 2)" in message and "(2, 3)" in message
    # nothing was copied, not even the well-shaped entries
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict(sd, strict=False)  # a wrong shape is never acceptable


def test_train_eval_propagates_to_every_module():
    m = Outer()
    assert all(module.training for module in m.modules())
    assert m.eval() is m
    assert not any(module.training for module in m.modules())
    m.train()
    assert all(module.training for module in m.modules())


def test_dropout_follows_mode():
    tl.manual_seed(0)
    drop = nn.Dropout(0.5)
    x = tl.Tensor(np.ones((100, 100), dtype=np.float32))
    y = drop(x).data
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.4 < np.mean(y == 0) < 0.6
    drop.eval()
    np.testing.assert_array_equal(drop(x).data, x.data)
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_zero_grad_sets_grads_to_none():
    m = Inner()
    m(np.ones((2, 3), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_repr_has_tree_and_parameter_counts():
    text = repr(Outer())
    assert "(inner): Inner(" in text
    assert "(proj): Linear(in_features=3, out_features=2, bias=True)  # 8 params" in text
    assert "(1): Linear(in_features=2, out_features=2, bias=False)  # 4 params" in text
    assert text.splitlines()[-1] == "Total parameters: 29"


def test_linear_init_bounds_and_shapes():
    tl.manual_seed(0)
    layer = nn.Linear(64, 50)
    bound = 1 / math.sqrt(64)
    assert layer.weight.shape == (50, 64) and layer.bias.shape == (50,)
    assert layer.weight.dtype == np.float32
    for p in (layer.weight, layer.bias):
        assert np.all(np.abs(p.data) <= bound)
    # uniform over the whole interval, not a narrower one
    assert layer.weight.data.max() > 0.95 * bound and layer.weight.data.min() < -0.95 * bound
    assert abs(layer.weight.data.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert nn.Linear(4, 3, bias=False).bias is None


def test_linear_forward_and_backward_match_numpy():
    tl.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    x_np = np.random.default_rng(0).standard_normal((2, 5, 4))
    x = tl.Tensor(x_np, requires_grad=True)
    y = layer(x)
    W, b = layer.weight.data, layer.bias.data
    np.testing.assert_allclose(y.data, x_np @ W.T + b, rtol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(layer.weight.grad, g.reshape(-1, 3).T @ x_np.reshape(-1, 4), rtol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, g.reshape(-1, 3).sum(0), rtol=1e-10)
    np.testing.assert_allclose(x.grad, g @ W, rtol=1e-10)


def test_embedding_init_and_lookup():
    tl.manual_seed(0)
    emb = nn.Embedding(1000, 20)
    assert emb.weight.shape == (1000, 20)
    assert abs(emb.weight.data.mean()) < 0.02 and abs(emb.weight.data.std() - 1.0) < 0.02
    idx = np.array([[3, 999], [0, 3]])
    np.testing.assert_array_equal(emb(idx).data, emb.weight.data[idx])


def test_layer_norm_matches_numpy():
    ln = nn.LayerNorm(6).double()
    ln.weight.data[...] = np.linspace(0.5, 2.0, 6)
    ln.bias.data[...] = np.linspace(-1.0, 1.0, 6)
    x = np.random.default_rng(0).standard_normal((3, 6)) * 3 + 1
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln(tl.Tensor(x)).data, normed * ln.weight.data + ln.bias.data, rtol=1e-10)
    no_bias = nn.LayerNorm(6, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_gelu_module_is_tanh_gelu():
    x = np.linspace(-4, 4, 9)
    expected = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(nn.GELU(approximate="tanh")(tl.Tensor(x)).data, expected, rtol=1e-10, atol=1e-15)


def test_containers():
    tl.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    x = np.ones((5, 3), dtype=np.float32)
    expected = seq[2](seq[1](seq[0](x)))
    np.testing.assert_array_equal(seq(x).data, expected.data)
    assert len(seq) == 3 and isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]

    layers = nn.ModuleList()
    layers.append(nn.Linear(1, 1)).extend([nn.Linear(1, 1)])
    assert len(layers) == 2 and layers[-1] is list(layers)[1]

    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    d["b"] = nn.LayerNorm(1)
    assert d.a is d["a"] and "b" in d and list(d) == ["a", "b"]
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_to_double_keeps_ties_and_identity():
    m = Tied()
    param = m.head.weight
    m.double()
    assert m.head.weight is param and m.embed.weight is param
    assert param.dtype == np.float64
    assert m(np.array([1, 2])).dtype == np.float64
    with pytest.raises(TypeError):
        m.to(np.int64)
    assert m.float().head.weight.dtype == np.float32


def test_manual_seed_makes_init_reproducible():
    tl.manual_seed(123)
    a = Outer().state_dict()
    tl.manual_seed(123)
    b = Outer().state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    c = Outer().state_dict()
    assert not np.array_equal(a["inner.proj.weight"], c["inner.proj.weight"])


def test_apply_visits_children_before_parent():
    visited = []
    Outer().apply(lambda module: visited.append(type(module).__name__))
    assert visited == ["Linear", "Inner", "Linear", "Linear", "ModuleList", "Outer"]


def test_forward_not_defined_is_clear():
    with pytest.raises(NotImplementedError, match="Outer"):
        Outer()(1)


# ----------------------------------------------------------------------------------------------
# Activation modules, Flatten, loss modules
# ----------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "ReLU": (nn.ReLU(), lambda x: np.maximum(x, 0)),
    "Tanh": (nn.Tanh(), np.tanh),
    "Sigmoid": (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "SiLU": (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    "Softmax": (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    "LogSoftmax": (nn.LogSoftmax(dim=0), lambda x: x - np.log(np.exp(x).sum(0, keepdims=True))),
    "Identity": (nn.Identity(54, unused=True), lambda x: x),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(x=tst.tensors(shape=(3, 4), min_value=-3, max_value=3, min_magnitude=0.01))
def test_activation_modules_match_numpy_and_gradcheck(name, x):
    module, reference = ACTIVATIONS[name]
    np.testing.assert_allclose(module(tl.Tensor(x)).data, reference(x), rtol=1e-10, atol=1e-14)
    assert gradcheck(module, [x])


def test_softmax_without_dim_uses_pytorch_legacy_choice_and_warns():
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = nn.Softmax()(tl.Tensor(x))
    np.testing.assert_allclose(y.data.sum(axis=1), 1.0)  # 2-D input: dim 1, as torch
    assert "dim=1" in repr(nn.Softmax(dim=1))


def test_flatten():
    x = tl.Tensor(np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5), requires_grad=True)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    assert nn.Flatten(-3, -2)(x).shape == (2, 12, 5)
    assert nn.Flatten(2, 2)(x).shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(nn.Flatten()(x).data, x.data.reshape(2, 60))
    assert gradcheck(nn.Flatten(1, 2), [x.data])
    assert nn.Flatten(0)(tl.Tensor(np.float64(3.0))).shape == (1,)
    with pytest.raises(IndexError, match=r"Flatten: start_dim=4 .* shape \(2, 3, 4, 5\)"):
        nn.Flatten(4)(x)
    with pytest.raises(ValueError, match="start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1)(x)


def test_loss_modules_call_the_functional_losses():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)), rng.random((4, 3))
    logits, targets = rng.standard_normal((4, 3)), np.array([0, 2, -100, 1])
    weight = np.array([1.0, 2.0, 0.5])
    cases = [
        (nn.MSELoss(reduction="sum"), losses.mse_loss(tl.Tensor(x), y, reduction="sum"), (x, y)),
        (nn.L1Loss(), losses.l1_loss(tl.Tensor(x), y), (x, y)),
        (nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none"),
         losses.binary_cross_entropy_with_logits(tl.Tensor(x), y, pos_weight=weight, reduction="none"), (x, y)),
        (nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1),
         losses.cross_entropy(tl.Tensor(logits), targets, weight=weight, label_smoothing=0.1), (logits, targets)),
        (nn.NLLLoss(ignore_index=-100),
         losses.nll_loss(tl.Tensor(logits), targets), (logits, targets)),
    ]
    for module, expected, (a, b) in cases:
        np.testing.assert_array_equal(module(tl.Tensor(a), b).data, expected.data)
    # class weights are buffers, as in PyTorch: in the state_dict, not parameters
    ce = nn.CrossEntropyLoss(weight=weight)
    assert list(ce.state_dict()) == ["weight"] and list(ce.parameters()) == []
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    assert "reduction='mean'" in repr(nn.MSELoss())
    with pytest.raises(ValueError, match="MSELoss: reduction must be one of"):
        nn.MSELoss(reduction="average")


def test_loss_module_float32_with_float64_weights_stays_float32():
    x = tl.Tensor(np.zeros((2, 3), dtype=np.float32), requires_grad=True)
    out = nn.BCEWithLogitsLoss(weight=np.ones(3), pos_weight=np.full(3, 2.0))(x, np.ones((2, 3)))
    out.backward()
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# Buffers, requires_grad_, hooks
# ----------------------------------------------------------------------------------------------

class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("running_mean", np.zeros(2))
        self.register_buffer("count", np.array(0, dtype=np.int64))
        self.register_buffer("scratch", np.ones(3, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.lin(x) - self.running_mean


def test_register_buffer_state_dict_and_not_parameters():
    m = WithBuffers()
    assert isinstance(m.running_mean, tl.Tensor) and not m.running_mean.requires_grad
    assert [n for n, _ in m.named_parameters()] == ["lin.weight", "lin.bias"]
    assert [n for n, _ in m.named_buffers()] == ["running_mean", "count", "scratch"]
    assert list(m.state_dict()) == ["running_mean", "count", "lin.weight", "lin.bias"]
    outer = nn.Sequential(m)
    assert list(outer.state_dict()) == ["0.running_mean", "0.count", "0.lin.weight", "0.lin.bias"]


def test_buffer_assignment_load_and_cast():
    m = WithBuffers()
    held = m.running_mean
    m.running_mean = np.array([1.0, 2.0])  # assignment replaces the buffer's value
    assert m._buffers["running_mean"] is m.running_mean
    np.testing.assert_array_equal(m.state_dict()["running_mean"], [1.0, 2.0])
    with pytest.raises(TypeError, match="buffer 'running_mean' must be a Tensor"):
        m.running_mean = "text"
    sd = m.state_dict()
    sd["running_mean"] = np.array([5.0, 6.0])
    sd["count"] = np.array(7)
    fresh = WithBuffers()
    target = fresh.running_mean
    fresh.load_state_dict(sd)
    assert fresh.running_mean is target  # loaded in place
    np.testing.assert_array_equal(fresh.running_mean.data, [5.0, 6.0])
    assert fresh.count.item() == 7
    del sd["count"]
    with pytest.raises(RuntimeError, match="missing key.*'count'"):
        fresh.load_state_dict(sd)
    fresh.double()
    assert fresh.running_mean.dtype == np.float64 and fresh.scratch.dtype == np.float64
    assert fresh.count.dtype == np.int64  # integer buffers are not cast
    fresh.float()
    assert fresh.running_mean.dtype == np.float32
    assert fresh.to("cpu") is fresh
    with pytest.raises(KeyError, match="attribute 'lin' already exists"):
        fresh.register_buffer("lin", np.zeros(1))
    with pytest.raises(KeyError, match="without '.'"):
        fresh.register_buffer("a.b", np.zeros(1))
    del fresh.running_mean
    assert "running_mean" not in fresh.state_dict()
    assert held is not None


def test_requires_grad_freezes_a_layer():
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    assert model[0].requires_grad_(False) is model[0]
    x = tl.Tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    model(x).sum().backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())


def test_forward_hooks_can_replace_output_and_are_removable():
    layer = nn.Linear(2, 2).double()
    x = tl.Tensor(np.ones((1, 2)))
    plain = layer(x).data.copy()
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append((m, args, out.shape)))
    doubling = layer.register_forward_hook(lambda m, args, out: out * 2)
    np.testing.assert_allclose(layer(x).data, 2 * plain)
    assert seen[0][0] is layer and seen[0][1][0] is x and seen[0][2] == (1, 2)
    doubling.remove()
    doubling.remove()  # removing twice is harmless
    np.testing.assert_allclose(layer(x).data, plain)
    handle.remove()
    layer(x)
    assert len(seen) == 2
    with layer.register_forward_hook(lambda m, args, out: out * 0):
        assert not layer(x).data.any()
    np.testing.assert_allclose(layer(x).data, plain)


def test_forward_pre_hooks_replace_arguments_in_order():
    identity = nn.Identity()
    order = []
    identity.register_forward_pre_hook(lambda m, args: order.append("a") or (args[0] + 1,))
    identity.register_forward_pre_hook(lambda m, args: order.append("b") or args[0] * 10)  # one value
    identity.register_forward_pre_hook(lambda m, args: order.append("first"), prepend=True)
    assert identity(tl.Tensor(1.0)).item() == 20.0
    assert order == ["first", "a", "b"]

    def with_kwargs(module, args, kwargs):
        return (args[0] + 5,), kwargs
    m = nn.Identity()
    m.register_forward_pre_hook(with_kwargs, with_kwargs=True)
    m.register_forward_hook(lambda mod, args, kwargs, out: out * 3, with_kwargs=True)
    assert m(tl.Tensor(1.0)).item() == 18.0
    bad = nn.Identity()
    bad.register_forward_pre_hook(lambda mod, args, kwargs: 1, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"return None or \(args, kwargs\)"):
        bad(tl.Tensor(1.0))
    with pytest.raises(TypeError, match="callable"):
        m.register_forward_hook(3)


def test_hooks_fire_inside_containers_and_record_activations():
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    activations = {}
    handles = [module.register_forward_hook(
        lambda m, args, out, name=name: activations.__setitem__(name, out.shape))
        for name, module in model.named_modules() if name]
    model(np.ones((5, 3), dtype=np.float32))
    assert activations == {"0": (5, 4), "1": (5, 4), "2": (5, 2)}
    for handle in handles:
        handle.remove()
    activations.clear()
    model(np.ones((5, 3), dtype=np.float32))
    assert activations == {}


def test_module_list_and_dict_editing():
    a, b, c = nn.Identity(), nn.Tanh(), nn.ReLU()
    layers = nn.ModuleList([a, b])
    layers.insert(1, c)
    assert list(layers) == [a, c, b] and list(layers._modules) == ["0", "1", "2"]
    del layers[0]
    assert list(layers) == [c, b] and list(layers._modules) == ["0", "1"]
    layers[-1] = a
    assert list(layers) == [c, a]
    with pytest.raises(IndexError, match="out of range"):
        layers[5] = a
    d = nn.ModuleDict({"x": a})
    d.update({"y": b})
    assert d.pop("x") is a and list(d) == ["y"]
