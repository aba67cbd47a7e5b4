"""Tests for tensorlite.nn: parameter bookkeeping, checkpoints, modes and the basic layers."""

import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn


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
    np.testing.assert_allclose(nn.GELU()(tl.Tensor(x)).data, expected, rtol=1e-10, atol=1e-15)


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
