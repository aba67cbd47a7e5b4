"""Tests for tensorlite.nn.init, the torch-path aliases (tensorlite.nn.functional) and the parts
of Module that PyTorch programs rely on: devices and dtypes in to(), non-persistent buffers,
recurse=, and full backward hooks. Where torch is installed, behaviour is compared with it."""

import collections
import math
import warnings

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.nn import init

SEED = 20240611


def standard_normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def standard_normal_pdf(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def assert_mean_and_std(values, mean, std, kurtosis, within=6.0):
    """The sample mean and variance of ``values`` are within ``within`` standard errors of the
    distribution's: SE(mean) = std / sqrt(n), SE(variance) = std**2 sqrt((kurtosis - 1) / n),
    where kurtosis = E[(x - mean)**4] / std**4 (3 for a normal, 9/5 for a uniform). Six
    standard errors: a correct sampler fails one such check in about 5e8."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    assert abs(values.mean() - mean) <= within * std / math.sqrt(n), (values.mean(), mean)
    variance_error = within * std ** 2 * math.sqrt((kurtosis - 1) / n)
    assert abs(values.var() - std ** 2) <= variance_error, (values.std(), std)


UNIFORM_KURTOSIS, NORMAL_KURTOSIS = 9 / 5, 3.0


def fresh(*shape, dtype=np.float32):
    return nn.Parameter(np.full(shape, np.nan, dtype=dtype))


# ----------------------------------------------------------------------------------------------
# Gains and fans, against torch
# ----------------------------------------------------------------------------------------------

NONLINEARITIES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_calculate_gain_matches_torch(nonlinearity):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity), rel=1e-15)


@pytest.mark.parametrize("slope", [0, 0.2, 1, math.sqrt(5), np.float64(0.3)])
def test_calculate_gain_leaky_relu_slope_matches_torch(slope):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15)


def test_calculate_gain_rejects_what_torch_rejects():
    torch = pytest.importorskip("torch")
    for args in [("swish",), ("leaky_relu", True), ("leaky_relu", "0.1")]:
        with pytest.raises(ValueError):
            torch.nn.init.calculate_gain(*args)
        with pytest.raises(ValueError):
            init.calculate_gain(*args)


@pytest.mark.parametrize("shape", [(3, 4), (1, 1), (5, 3, 2), (6, 4, 3, 3), (2, 3, 1, 2, 5),
                                   (7, 0), (0, 4, 3)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(tl.zeros(*shape)) == expected


@pytest.mark.parametrize("shape", [(), (5,)])
def test_fans_need_two_dimensions(shape):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(tl.zeros(*shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(tl.zeros(*shape))


# ----------------------------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------------------------

def test_uniform_and_normal_distributions():
    tl.manual_seed(SEED)
    w = init.uniform_(fresh(300, 200), -0.5, 1.5)
    assert w.data.min() >= -0.5 and w.data.max() < 1.5
    assert_mean_and_std(w.data, 0.5, 2.0 / math.sqrt(12), UNIFORM_KURTOSIS)
    w = init.uniform_(fresh(300, 200))  # torch's default: [0, 1)
    assert w.data.min() >= 0 and w.data.max() < 1
    assert_mean_and_std(w.data, 0.5, 1.0 / math.sqrt(12), UNIFORM_KURTOSIS)
    w = init.normal_(fresh(300, 200), mean=-2.0, std=0.3)
    assert_mean_and_std(w.data, -2.0, 0.3, NORMAL_KURTOSIS)
    w = init.normal_(fresh(300, 200))
    assert_mean_and_std(w.data, 0.0, 1.0, NORMAL_KURTOSIS)


@pytest.mark.parametrize("shape", [(256, 384), (64, 32, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, init.calculate_gain("relu")])
def test_xavier_distributions(shape, gain):
    tl.manual_seed(SEED)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(tl.zeros(*shape))
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    w = init.xavier_uniform_(fresh(*shape), gain=gain)
    bound = math.sqrt(3.0) * std
    assert np.abs(w.data).max() <= bound
    assert_mean_and_std(w.data, 0.0, std, UNIFORM_KURTOSIS)
    w = init.xavier_normal_(fresh(*shape), gain=gain)
    assert_mean_and_std(w.data, 0.0, std, NORMAL_KURTOSIS)


@pytest.mark.parametrize("shape", [(300, 200), (48, 16, 3, 3)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "FAN_OUT"])
@pytest.mark.parametrize("a, nonlinearity", [(0, "relu"), (0, "leaky_relu"), (math.sqrt(5), "leaky_relu"),
                                             (0, "tanh"), (0, "linear")])
def test_kaiming_distributions(shape, mode, a, nonlinearity):
    tl.manual_seed(SEED)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(tl.zeros(*shape))
    fan = fan_in if mode.lower() == "fan_in" else fan_out
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = init.kaiming_uniform_(fresh(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    assert np.abs(w.data).max() <= math.sqrt(3.0) * std
    assert_mean_and_std(w.data, 0.0, std, UNIFORM_KURTOSIS)
    w = init.kaiming_normal_(fresh(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    assert_mean_and_std(w.data, 0.0, std, NORMAL_KURTOSIS)


def test_kaiming_rejects_an_unknown_mode_and_skips_empty_tensors():
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(tl.zeros(3, 4), mode="fan_avg")
    empty = tl.zeros(0, 4)
    with pytest.warns(UserWarning, match="zero-element"):
        assert init.kaiming_normal_(empty) is empty


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (1.0, 0.5, 0.0, 1.2),
                                             (0.0, 1.0, 2.0, 3.0), (0.0, 0.02, -0.04, 0.04)])
def test_trunc_normal_distribution(mean, std, a, b):
    tl.manual_seed(SEED)
    w = init.trunc_normal_(fresh(300, 200, dtype=np.float64), mean=mean, std=std, a=a, b=b)
    assert w.data.min() >= a and w.data.max() <= b
    # The truncated normal's mean and variance in closed form.
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = standard_normal_cdf(beta) - standard_normal_cdf(alpha)
    pdf_a, pdf_b = standard_normal_pdf(alpha), standard_normal_pdf(beta)
    shift = (pdf_a - pdf_b) / mass
    true_mean = mean + std * shift
    true_std = std * math.sqrt(1 + (alpha * pdf_a - beta * pdf_b) / mass - shift ** 2)
    # A truncated normal has a lighter tail than a normal: kurtosis 3 bounds its own.
    assert_mean_and_std(w.data, true_mean, true_std, NORMAL_KURTOSIS)


def test_trunc_normal_warns_when_the_interval_is_far_from_the_mean():
    with pytest.warns(UserWarning, match="more than 2 std"):
        init.trunc_normal_(tl.zeros(10), mean=0.0, std=1.0, a=3.0, b=4.0)


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (6, 6), (4, 2, 3), (7, 1)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal_rows_or_columns_are_orthonormal(shape, gain):
    tl.manual_seed(SEED)
    w = init.orthogonal_(fresh(*shape, dtype=np.float64), gain=gain)
    matrix = w.data.reshape(shape[0], -1) / gain
    rows, cols = matrix.shape
    product = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
    np.testing.assert_allclose(product, np.eye(min(rows, cols)), atol=1e-12)
    w32 = init.orthogonal_(fresh(*shape), gain=gain)  # float32: orthonormal to float32 rounding
    m32 = w32.data.reshape(shape[0], -1).astype(np.float64) / gain
    product = m32 @ m32.T if rows <= cols else m32.T @ m32
    np.testing.assert_allclose(product, np.eye(min(rows, cols)), atol=1e-6)


def test_orthogonal_needs_two_dimensions():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(tl.zeros(4))


def test_constant_fills():
    w = fresh(3, 4)
    assert init.constant_(w, 0.25) is w and (w.data == 0.25).all()
    assert (init.zeros_(w).data == 0).all() and (init.ones_(w).data == 1).all()
    np.testing.assert_array_equal(init.eye_(fresh(2, 3)).data, np.eye(2, 3))
    with pytest.raises(ValueError):
        init.eye_(fresh(2, 2, 2))


# ----------------------------------------------------------------------------------------------
# How init writes: in place, no graph, dtype kept, reproducible
# ----------------------------------------------------------------------------------------------

ALL_RANDOM = [
    lambda t, **g: init.uniform_(t, -1, 1, **g),
    lambda t, **g: init.normal_(t, 0, 1, **g),
    lambda t, **g: init.trunc_normal_(t, **g),
    lambda t, **g: init.xavier_uniform_(t, **g),
    lambda t, **g: init.xavier_normal_(t, **g),
    lambda t, **g: init.kaiming_uniform_(t, **g),
    lambda t, **g: init.kaiming_normal_(t, **g),
    lambda t, **g: init.orthogonal_(t, **g),
]


@pytest.mark.parametrize("fill", ALL_RANDOM)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_is_in_place_without_a_graph_and_keeps_dtype(fill, dtype):
    p = fresh(6, 5, dtype=dtype)
    array = p.data
    version = p._version
    assert fill(p) is p
    assert p.data is array and p.dtype == dtype and np.isfinite(p.data).all()
    assert p.is_leaf and p.requires_grad and p.grad is None
    assert p._version > version  # an in-place change, as for any other
    (p * 2).sum().backward()  # still an ordinary leaf
    np.testing.assert_array_equal(p.grad, np.full((6, 5), 2, dtype=dtype))


@pytest.mark.parametrize("fill", ALL_RANDOM)
def test_init_draws_from_manual_seed_or_the_generator_given(fill):
    tl.manual_seed(7)
    a = fill(fresh(4, 6)).data.copy()
    tl.manual_seed(7)
    b = fill(fresh(4, 6)).data.copy()
    np.testing.assert_array_equal(a, b)
    c = fill(fresh(4, 6), generator=np.random.default_rng(1)).data.copy()
    d = fill(fresh(4, 6), generator=np.random.default_rng(1)).data.copy()
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(a, c)
    with pytest.raises(TypeError, match="generator"):
        fill(fresh(4, 6), generator=7)


def test_init_rejects_what_is_not_a_tensor():
    with pytest.raises(TypeError, match="expects a Tensor"):
        init.normal_([1.0, 2.0])


# ----------------------------------------------------------------------------------------------
# Layers initialise through init, as torch's do
# ----------------------------------------------------------------------------------------------

def test_linear_initialises_as_torch_does():
    tl.manual_seed(SEED)
    layer = nn.Linear(5, 3)
    tl.manual_seed(SEED)
    weight, bias = tl.zeros(3, 5), tl.zeros(3)
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    init.uniform_(bias, -1 / math.sqrt(5), 1 / math.sqrt(5))
    np.testing.assert_array_equal(layer.weight.data, weight.data)
    np.testing.assert_array_equal(layer.bias.data, bias.data)

    big = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert np.abs(big.weight.data).max() <= bound and np.abs(big.bias.data).max() <= bound
    assert_mean_and_std(big.weight.data, 0.0, bound / math.sqrt(3), UNIFORM_KURTOSIS)
    before = big.weight.data.copy()
    big.reset_parameters()
    assert not np.array_equal(before, big.weight.data)


def test_embedding_and_layer_norm_initialise_as_torch_does():
    tl.manual_seed(SEED)
    table = nn.Embedding(500, 64)
    tl.manual_seed(SEED)
    np.testing.assert_array_equal(table.weight.data, init.normal_(tl.zeros(500, 64)).data)
    assert_mean_and_std(table.weight.data, 0.0, 1.0, NORMAL_KURTOSIS)
    norm = nn.LayerNorm(6)
    assert (norm.weight.data == 1).all() and (norm.bias.data == 0).all()
    plain = nn.LayerNorm(6, elementwise_affine=False)
    assert plain.weight is None and plain.bias is None and not list(plain.parameters())
    x = tl.randn(2, 6)
    np.testing.assert_allclose(plain(x).data, norm(x).data, rtol=1e-6, atol=1e-6)


def test_layer_norm_takes_torchs_argument_order():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.LayerNorm(4, 1e-3, True, False), torch.nn.LayerNorm(4, 1e-3, True, False)
    assert ours.eps == theirs.eps and ours.bias is None and theirs.bias is None


# ----------------------------------------------------------------------------------------------
# tensorlite.nn.functional and tensorlite.nn.init under torch's paths
# ----------------------------------------------------------------------------------------------

def test_nn_functional_is_tensorlite_functional():
    import tensorlite.nn.functional as F
    from tensorlite.nn.functional import relu
    from tensorlite.nn import functional as G

    assert F is tl.functional and G is tl.functional
    assert F.relu is tl.functional.relu and relu is tl.functional.relu
    import tensorlite.nn.init as init_module
    assert tl.nn.init is init_module is init


def test_parameter_takes_torchs_arguments():
    torch = pytest.importorskip("torch")
    frozen, theirs = nn.Parameter(np.ones(3), False), torch.nn.Parameter(torch.ones(3), False)
    assert frozen.requires_grad is theirs.requires_grad is False
    layer = nn.Linear(3, 1)
    layer.scale = frozen
    assert any(p is frozen for p in layer.parameters())  # still a parameter of its module
    empty = nn.Parameter()
    assert empty.shape == tuple(torch.nn.Parameter().shape) and empty.requires_grad
    assert nn.Parameter([1, 2], dtype=np.float64).dtype == np.float64


# ----------------------------------------------------------------------------------------------
# Devices and dtypes
# ----------------------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("running", np.zeros(2, dtype=np.float32))
        self.register_buffer("count", np.array(0, dtype=np.int64))
        self.register_buffer("scratch", np.ones(2, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.fc(x) + self.running


@pytest.mark.parametrize("call", [
    lambda m: m.to(np.float64), lambda m: m.to(tl.float64), lambda m: m.to("float64"),
    lambda m: m.to("cpu", np.float64), lambda m: m.to(device="cpu", dtype=tl.float64),
    lambda m: m.to(tl.zeros(1, dtype=np.float64)), lambda m: m.to("cpu:0", dtype=np.float64),
    lambda m: m.double(),
])
def test_to_casts_parameters_grads_and_float_buffers(call):
    m = Net()
    m(tl.ones(1, 3)).sum().backward()
    assert call(m) is m
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m.parameters())
    assert m.running.dtype == np.float64 and m.scratch.dtype == np.float64
    assert m.count.dtype == np.int64
    assert m(tl.ones(1, 3, dtype=np.float64)).dtype == np.float64


def test_to_device_only_changes_nothing():
    m = Net()
    arrays = [p.data for p in m.parameters()]
    for call in (lambda: m.to("cpu"), lambda: m.to(device="cpu"), m.cpu, m.float,
                 lambda: m.to(np.float32), lambda: m.to("cpu", non_blocking=True)):
        assert call() is m
    assert all(p.data is a for p, a in zip(m.parameters(), arrays))  # nothing copied


def test_to_with_grads_matches_torch():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Linear(3, 2)
    theirs(torch.ones(1, 3)).sum().backward()
    theirs.double()
    ours = nn.Linear(3, 2)
    ours(tl.ones(1, 3)).sum().backward()
    ours.double()
    assert theirs.weight.grad.dtype == torch.float64 and ours.weight.grad.dtype == np.float64
    np.testing.assert_array_equal(ours.weight.grad, theirs.weight.grad.numpy())


def test_other_devices_and_dtypes_are_one_line_errors():
    m = Net()
    for call in (lambda: m.to("cuda"), lambda: m.to("cuda:1", np.float32),
                 lambda: m.to(device="mps"), m.cuda, lambda: nn.Linear(2, 2, device="cuda"),
                 lambda: nn.Embedding(2, 2, device="cuda"), lambda: nn.LayerNorm(2, device="meta")):
        with pytest.raises(RuntimeError, match="CPU only") as error:
            call()
        assert "\n" not in str(error.value)
    for call in (lambda: m.to(np.int64), lambda: m.to(np.float16), lambda: m.to("float16"),
                 lambda: m.to(np.float32, np.float64), lambda: nn.Linear(2, 2, dtype=np.int32)):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.to(dtype=np.float64, devise="cpu")


def test_layers_take_device_and_dtype_keywords():
    for layer in (nn.Linear(2, 3, device="cpu", dtype=tl.float64),
                  nn.Embedding(4, 3, device="cpu", dtype=np.float64),
                  nn.LayerNorm(3, device="cpu", dtype="float64")):
        assert all(p.dtype == np.float64 for p in layer.parameters())
    assert nn.Linear(2, 3).weight.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# Buffers, recurse=, register_module: as torch
# ----------------------------------------------------------------------------------------------

def torch_net(torch):
    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("running", torch.zeros(2))
            self.register_buffer("count", torch.tensor(0))
            self.register_buffer("scratch", torch.ones(2), persistent=False)
    return TorchNet()


def test_non_persistent_buffers_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = Net(), torch_net(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    saved = ours.state_dict()
    ours.scratch = np.full(2, 5.0, dtype=np.float32)
    assert ours.load_state_dict(saved) == ([], [])  # nothing expected for the scratch buffer
    np.testing.assert_array_equal(ours.scratch.data, [5.0, 5.0])


def test_recurse_false_and_register_module_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Sequential(Net()), torch.nn.Sequential(torch_net(torch))
    for module in (ours, theirs):
        module.register_module("extra", type(module[0].fc)(2, 2))
        module.register_parameter("scale", type(module[0].fc.weight)(np.ones(1, dtype=np.float32)
                                                                      if module is ours else torch.ones(1)))
    for recurse in (True, False):
        assert ([n for n, _ in ours.named_parameters(recurse=recurse)]
                == [n for n, _ in theirs.named_parameters(recurse=recurse)])
        assert ([n for n, _ in ours.named_buffers(recurse=recurse)]
                == [n for n, _ in theirs.named_buffers(recurse=recurse)])
        assert len(list(ours.parameters(recurse))) == len(list(theirs.parameters(recurse)))
        assert len(list(ours.buffers(recurse))) == len(list(theirs.buffers(recurse)))


# ----------------------------------------------------------------------------------------------
# Full backward hooks, against torch
# ----------------------------------------------------------------------------------------------

def linear_pair(torch, dtype=np.float64):
    """A tensorlite Linear and a torch one with the same float64 weights."""
    ours = nn.Linear(3, 2, dtype=dtype)
    theirs = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data.astype(np.float64)))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data.astype(np.float64)))
    return ours, theirs


def recorder(calls, torch=None):
    def hook(module, grad_input, grad_output):
        as_array = (lambda g: g.detach().numpy().copy()) if torch else (lambda g: np.array(g.data))
        for g in grad_input + grad_output:
            assert g is None or isinstance(g, torch.Tensor if torch else tl.Tensor)
        calls.append((module, tuple(None if g is None else as_array(g) for g in grad_input),
                      tuple(None if g is None else as_array(g) for g in grad_output)))
    return hook


def assert_same_calls(ours, theirs):
    assert len(ours) == len(theirs)
    for (_, our_in, our_out), (_, their_in, their_out) in zip(ours, theirs):
        for a, b in zip(our_in + our_out, their_in + their_out):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        assert len(our_in) == len(their_in) and len(our_out) == len(their_out)


@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_full_backward_hook_on_linear_matches_torch(input_requires_grad):
    torch = pytest.importorskip("torch")
    ours, theirs = linear_pair(torch)
    our_calls, their_calls = [], []
    ours.register_full_backward_hook(recorder(our_calls))
    theirs.register_full_backward_hook(recorder(their_calls, torch))
    x = np.random.default_rng(0).standard_normal((4, 3))
    upstream = np.random.default_rng(1).standard_normal((4, 2))
    our_x = tl.Tensor(x, requires_grad=input_requires_grad)
    their_x = torch.tensor(x, requires_grad=input_requires_grad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours(our_x).backward(upstream)
        theirs(their_x).backward(torch.from_numpy(upstream))
    assert_same_calls(our_calls, their_calls)
    assert our_calls[0][0] is ours
    warned = [str(w.message) for w in caught if "no inputs require gradients" in str(w.message)]
    assert len(warned) == (0 if input_requires_grad else 2)  # torch's and ours
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)
    if input_requires_grad:
        np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-12)


def test_full_backward_hook_sees_only_this_calls_gradient_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = linear_pair(torch)
    ours = nn.Sequential(ours)  # hooks on a container too
    our_calls, their_calls = [], []
    ours[0].register_full_backward_hook(recorder(our_calls))
    theirs.register_full_backward_hook(recorder(their_calls, torch))
    x = np.ones((1, 3))
    our_x, their_x = tl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ours(our_x)[:, :1] * 3 + our_x[:, :1]).sum().backward()  # x also used outside the layer
    (theirs(their_x)[:, :1] * 3 + their_x[:, :1]).sum().backward()
    assert_same_calls(our_calls, their_calls)
    np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-12)


def hooked_pair(torch, forward):
    """A tensorlite module and a torch one computing ``forward``, each with a full backward hook
    recording its calls: (ours, theirs, our_calls, their_calls)."""
    ours = type("Ours", (nn.Module,), {"forward": forward})()
    theirs = type("Theirs", (torch.nn.Module,), {"forward": forward})()
    our_calls, their_calls = [], []
    ours.register_full_backward_hook(recorder(our_calls))
    theirs.register_full_backward_hook(recorder(their_calls, torch))
    return ours, theirs, our_calls, their_calls


def two_outputs(self, a, k, b):
    return a * k + b, a - b


def test_full_backward_hook_with_several_arguments_and_outputs_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs, our_calls, their_calls = hooked_pair(torch, two_outputs)
    a, b = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    our_a, their_a = tl.Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for use_both in (False, True):
        o1, o2 = ours(our_a, 3.0, tl.Tensor(b))
        (o1.sum() + o2.sum() * 2 if use_both else o1.sum()).backward()
        t1, t2 = theirs(their_a, 3.0, torch.tensor(b))
        (t1.sum() + t2.sum() * 2 if use_both else t1.sum()).backward()
    assert_same_calls(our_calls, their_calls)  # first call: grad_output of the unused one None
    assert our_calls[0][2][1] is None and our_calls[0][1][1] is None


def pick_rows(self, idx, table):
    return table[idx]


def test_full_backward_hook_shows_zeros_for_tensors_without_gradient_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs, our_calls, their_calls = hooked_pair(torch, pick_rows)
    table = np.arange(8.0).reshape(4, 2)
    ours(tl.Tensor(np.array([0, 3, 0])), tl.Tensor(table, requires_grad=True)).sum().backward()
    theirs(torch.tensor([0, 3, 0]), torch.tensor(table, requires_grad=True)).sum().backward()
    assert_same_calls(our_calls, their_calls)
    assert our_calls[0][1][0].dtype == np.int64  # zeros of the index's own dtype, as torch


def test_full_backward_hook_can_replace_grad_input_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = linear_pair(torch)
    ours.register_full_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    theirs.register_full_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    our_x, their_x = tl.Tensor(np.ones((2, 3)), requires_grad=True), torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    ours(our_x).sum().backward()
    theirs(their_x).sum().backward()
    np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)

    ours.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="invalid number of grad_input, got 2, but expected 1"):
        ours(our_x).sum().backward()


def test_full_backward_pre_hook_replaces_grad_output_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = linear_pair(torch)
    our_calls, their_calls = [], []
    for module, calls, t in ((ours, our_calls, None), (theirs, their_calls, torch)):
        module.register_full_backward_pre_hook(lambda m, go: (go[0] * 0.5,))
        module.register_full_backward_hook(recorder(calls, t))
    our_x, their_x = tl.Tensor(np.ones((2, 3)), requires_grad=True), torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    ours(our_x).sum().backward()
    theirs(their_x).sum().backward()
    assert_same_calls(our_calls, their_calls)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-12)


def test_backward_hooks_run_last_layer_first_as_torch():
    torch = pytest.importorskip("torch")
    orders = []
    for lib, make in ((nn, lambda: nn.Linear(2, 2)), (torch.nn, lambda: torch.nn.Linear(2, 2))):
        model = lib.Sequential(make(), lib.Tanh(), make())
        order = []
        for i, layer in enumerate(model):
            layer.register_full_backward_hook(lambda m, gi, go, i=i: order.append(("full", i)))
            layer.register_full_backward_pre_hook(lambda m, go, i=i: order.append(("pre", i)))
        x = tl.ones(1, 2, requires_grad=True) if lib is nn else torch.ones(1, 2, requires_grad=True)
        model(x).sum().backward()
        orders.append(order)
    assert orders[0] == orders[1]


def test_backward_hook_is_removable_and_silent_under_no_grad():
    calls = []
    layer = nn.Linear(3, 3)
    handle = layer.register_full_backward_hook(lambda m, gi, go: calls.append(gi))
    x = tl.ones(1, 3, requires_grad=True)
    with tl.no_grad():
        layer(x)
    assert not calls  # nothing recorded, nothing to hook
    layer(x).sum().backward()
    assert len(calls) == 1
    handle.remove()
    layer(x).sum().backward()
    assert len(calls) == 1


def test_backward_hook_in_double_backward_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = linear_pair(torch)
    our_calls, their_calls = [], []
    ours.register_full_backward_hook(recorder(our_calls))
    theirs.register_full_backward_hook(recorder(their_calls, torch))
    x = np.array([[0.3, -1.2, 0.8]])
    our_x, their_x = tl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (our_gx,) = tl.autograd.grad((ours(our_x).tanh() ** 2).sum(), our_x, create_graph=True)
    (their_gx,) = torch.autograd.grad((theirs(their_x).tanh() ** 2).sum(), their_x, create_graph=True)
    np.testing.assert_allclose(our_gx.data, their_gx.detach().numpy(), rtol=1e-12)
    (our_gx ** 2).sum().backward()  # through the hooked call again: its hook runs again, as torch's
    (their_gx ** 2).sum().backward()
    assert_same_calls(our_calls, their_calls)
    assert len(our_calls) == 2
    np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10)


Pair = collections.namedtuple("Pair", "first second")


@pytest.mark.parametrize("container", [tuple, list, lambda values: Pair(*values)])
def test_backward_hook_keeps_the_output_container(container):
    class Split(nn.Module):
        def forward(self, x):
            return container([x * 2, 5])

    calls = []
    module = Split()
    module.register_full_backward_hook(lambda m, gi, go: calls.append((gi, go)))
    x = tl.ones(2, requires_grad=True)
    output = module(x)
    assert type(output) is type(container([0, 0])) and output[1] == 5
    output[0].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    (grad_input,), (grad_first, grad_second) = calls[0]
    np.testing.assert_array_equal(grad_input.data, [2.0, 2.0])
    np.testing.assert_array_equal(grad_first.data, [1.0, 1.0])
    assert grad_second is None


def test_hooked_module_output_is_a_view_of_the_same_values():
    layer = nn.Linear(2, 2)
    x = tl.randn(3, 2, requires_grad=True)
    plain = layer(x)
    layer.register_full_backward_hook(lambda m, gi, go: None)
    hooked = layer(x)
    np.testing.assert_array_equal(plain.data, hooked.data)
    with pytest.raises(RuntimeError, match="view"):
        hooked.mul_(2)  # as in torch: the hook's output must not be changed in place


# ----------------------------------------------------------------------------------------------
# Optimizers: PyTorch's keywords, maximize, named parameters, closures
# ----------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.1),
    "SGD-nesterov": dict(lr=0.05, momentum=0.8, nesterov=True),
    "Adam": dict(lr=0.05, weight_decay=0.1),
    "AdamW": dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
}


def optimizer_class(lib, key):
    return getattr(lib.optim, key.split("-")[0])


@pytest.mark.parametrize("key", OPTIMIZERS)
def test_optimizers_take_torchs_keywords(key):
    torch = pytest.importorskip("torch")
    import inspect

    theirs = set(inspect.signature(optimizer_class(torch, key)).parameters)
    ours = set(inspect.signature(optimizer_class(tl, key)).parameters)
    assert theirs <= ours, theirs - ours
    p = nn.Parameter(np.ones(3))
    p.grad = tl.Tensor(np.ones(3))
    performance = [dict(foreach=True), dict(foreach=False), dict(capturable=True), dict(fused=True)]
    for keywords in performance:
        if set(keywords) <= theirs:  # accepted, and ignored
            optimizer_class(tl, key)([p], **OPTIMIZERS[key], **keywords).step()
    if "fused" in theirs:
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
            optimizer_class(tl, key)([p], **OPTIMIZERS[key], foreach=True, fused=True)
    with pytest.raises(NotImplementedError, match="differentiable"):
        optimizer_class(tl, key)([p], **OPTIMIZERS[key], differentiable=True)


def test_amsgrad_is_refused_clearly():
    with pytest.raises(NotImplementedError, match="amsgrad"):
        tl.optim.AdamW([nn.Parameter(np.ones(1))], amsgrad=True)
    tl.optim.Adam([nn.Parameter(np.ones(1))], 0.1, (0.9, 0.99), 1e-8, 0.0, False)  # torch's order


@pytest.mark.parametrize("key", OPTIMIZERS)
@pytest.mark.parametrize("maximize", [False, True])
def test_maximize_matches_torch(key, maximize):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    our_opt = optimizer_class(tl, key)(ours, maximize=maximize, **OPTIMIZERS[key])
    their_opt = optimizer_class(torch, key)(theirs, maximize=maximize, **OPTIMIZERS[key])
    for _ in range(4):
        grads = [rng.standard_normal(a.shape) for a in start]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = tl.Tensor(g.copy())
            q.grad = torch.from_numpy(g.copy())
        our_opt.step()
        their_opt.step()
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-11, atol=1e-13)
    groups = our_opt.state_dict()["param_groups"]
    assert ("maximize" in groups[0]) == maximize  # a default state_dict keeps its layout


def test_maximize_climbs_and_survives_a_state_dict_round_trip():
    p = nn.Parameter(np.array([0.0]))
    opt = tl.optim.AdamW([p], lr=0.1, maximize=True, weight_decay=0.0)
    for _ in range(20):
        opt.zero_grad()
        (-(p - 3.0) ** 2).sum().backward()  # maximum at 3
        opt.step()
    assert 1.0 < p.item() < 4.0
    other = tl.optim.AdamW([nn.Parameter(np.array([0.0]))], lr=0.1, weight_decay=0.0)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["maximize"] is True


def test_named_parameters_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), \
        torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    our_opt = tl.optim.AdamW(ours.named_parameters(), lr=0.1)
    their_opt = torch.optim.AdamW(theirs.named_parameters(), lr=0.1)
    assert our_opt.param_groups[0]["param_names"] == their_opt.param_groups[0]["param_names"]
    assert our_opt.param_groups[0]["params"] == list(ours.parameters())
    saved = our_opt.state_dict()["param_groups"][0]
    assert saved["param_names"] == their_opt.state_dict()["param_groups"][0]["param_names"]
    assert saved["params"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="named parameters"):
        tl.optim.SGD([("w", nn.Parameter(np.ones(1))), nn.Parameter(np.ones(1))], lr=0.1)


def test_step_returns_the_closures_loss_computed_with_grad_as_torch():
    p = nn.Parameter(np.array([2.0]))
    opt = tl.optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    with tl.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 4.0 and p.item() == 1.0  # 2 - 0.25 * 2 * 2
    assert opt.step() is None
