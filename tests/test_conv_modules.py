"""The convolution-family modules (Conv1d, Conv2d, ConvTranspose2d, the pooling layers,
BatchNorm1d/2d, Dropout2d) against torch's.

Each comparison builds both modules in float64, copies torch's state_dict into tensorlite's by
name, runs the same input through both and back-propagates the same upstream gradient: outputs,
input gradients and every parameter's gradient must agree to RTOL (float64 sums in a different
order differ by a few ulps). BatchNorm is also stepped several times in training mode, where
its running statistics and num_batches_tracked must follow torch's, then compared in eval mode.
Initialisation, state_dict names, extra_repr and the argument errors are checked against torch
too."""

import math
import re

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-10, 1e-12


def load_from_torch(module, torch_module):
    """Copy torch_module's state into module by name (strict: every key must match)."""
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    return module


def run_both(module, torch_module, x, seed=0, forward_args=()):
    """Forward x through both, backward the same random upstream gradient; returns
    ((out, x.grad), (torch_out, torch_x.grad)) as arrays."""
    x_tl = tl.Tensor(x.copy(), requires_grad=True)
    x_t = torch.tensor(x, requires_grad=True)
    out_tl = module(x_tl, *forward_args)
    out_t = torch_module(x_t, *forward_args)
    assert tuple(out_tl.shape) == tuple(out_t.shape)
    upstream = np.random.default_rng(seed).standard_normal(tuple(out_t.shape))
    (out_tl * tl.Tensor(upstream)).sum().backward()
    (out_t * torch.tensor(upstream)).sum().backward()
    return ((out_tl.data, np.asarray(x_tl.grad)),
            (out_t.detach().numpy(), x_t.grad.numpy()))


def assert_same(module, torch_module, x, **kwargs):
    (out, grad), (out_t, grad_t) = run_both(module, torch_module, x, **kwargs)
    np.testing.assert_allclose(out, out_t, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, grad_t, rtol=RTOL, atol=ATOL)
    torch_params = dict(torch_module.named_parameters())
    for name, p in module.named_parameters():
        np.testing.assert_allclose(np.asarray(p.grad), torch_params[name].grad.numpy(),
                                   rtol=RTOL, atol=ATOL, err_msg=name)
    assert sorted(name for name, _ in module.named_parameters()) == sorted(torch_params)


def pair(name, *args, **kwargs):
    """The same module from both libraries, in float64, tensorlite's loaded with torch's state."""
    torch_module = getattr(torch.nn, name)(*args, **kwargs).double()
    module = getattr(nn, name)(*args, **kwargs).double()
    return load_from_torch(module, torch_module), torch_module


def data(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------------

CONV1D = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2, bias=False),
    dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding="same"),
    dict(in_channels=2, out_channels=2, kernel_size=4, padding="same"),  # uneven split
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="replicate"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, stride=2,
         padding_mode="circular"),
]


@pytest.mark.parametrize("kwargs", CONV1D, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's, on speed
def test_conv1d_matches_torch(kwargs):
    module, torch_module = pair("Conv1d", **kwargs)
    assert_same(module, torch_module, data(2, kwargs["in_channels"], 11))


CONV2D = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
         groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, bias=False),  # depthwise
    dict(in_channels=2, out_channels=3, kernel_size=3, dilation=(2, 1), padding=(2, 1)),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 4), padding="same", dilation=(1, 2)),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=(1, 2), padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="replicate"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=(2, 1), stride=2,
         padding_mode="circular"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", padding_mode="reflect"),
]


@pytest.mark.parametrize("kwargs", CONV2D, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_conv2d_matches_torch(kwargs):
    module, torch_module = pair("Conv2d", **kwargs)
    assert_same(module, torch_module, data(2, kwargs["in_channels"], 7, 8))


def test_conv_unbatched_input_matches_torch():
    module, torch_module = pair("Conv2d", 2, 3, 3, padding=1)
    assert_same(module, torch_module, data(2, 5, 6))
    module, torch_module = pair("Conv1d", 2, 3, 3, padding=1, padding_mode="circular")
    assert_same(module, torch_module, data(2, 9))


CONV_TRANSPOSE2D = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1,
         groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2),
         bias=False),
    dict(in_channels=2, out_channels=2, kernel_size=4, stride=2, padding=1),
]


@pytest.mark.parametrize("kwargs", CONV_TRANSPOSE2D,
                         ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_conv_transpose2d_matches_torch(kwargs):
    module, torch_module = pair("ConvTranspose2d", **kwargs)
    assert_same(module, torch_module, data(2, kwargs["in_channels"], 5, 4))


@pytest.mark.parametrize("output_size", [[9, 9], [10, 10], [2, 4, 10, 9]])
def test_conv_transpose2d_output_size_matches_torch(output_size):
    module, torch_module = pair("ConvTranspose2d", 4, 2, 3, stride=2, padding=1)
    assert_same(module, torch_module, data(2, 4, 5, 5), forward_args=(output_size,))


def test_conv_transpose2d_output_size_out_of_range():
    module = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match=r"valid sizes range from \[9, 9\] to \[10, 10\]"):
        module(tl.zeros(1, 4, 5, 5), [11, 9])
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        module(tl.zeros(1, 4, 5, 5), [9])


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

POOLS = [
    ("MaxPool1d", dict(kernel_size=3), (2, 3, 10)),
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 10)),
    ("MaxPool2d", dict(kernel_size=2), (2, 3, 8, 6)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 3, 7, 6)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), (2, 3, 8, 8)),
    ("MaxPool2d", dict(kernel_size=2), (3, 8, 6)),  # unbatched
    ("AvgPool1d", dict(kernel_size=3), (2, 3, 10)),
    ("AvgPool1d", dict(kernel_size=4, stride=2, padding=2, count_include_pad=False,
                       ceil_mode=True), (2, 3, 11)),
    ("AvgPool2d", dict(kernel_size=2), (2, 3, 8, 6)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1), (2, 3, 7, 7)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                       ceil_mode=True), (2, 3, 8, 8)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=3), (2, 3, 6, 6)),
    ("AdaptiveAvgPool2d", dict(output_size=(1, 1)), (2, 3, 7, 5)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 4)), (2, 3, 7, 6)),
    ("AdaptiveAvgPool2d", dict(output_size=5), (2, 3, 7, 9)),
    ("AdaptiveAvgPool2d", dict(output_size=(None, 2)), (2, 3, 4, 5)),
]


@pytest.mark.parametrize("name,kwargs,shape", POOLS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(POOLS)])
def test_pooling_matches_torch(name, kwargs, shape):
    module, torch_module = pair(name, **kwargs)
    assert_same(module, torch_module, data(*shape))
    assert module.extra_repr() == torch_module.extra_repr()


# ----------------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------------

BATCHNORM = [
    ("BatchNorm1d", dict(num_features=3), (8, 3)),
    ("BatchNorm1d", dict(num_features=3), (4, 3, 5)),
    ("BatchNorm1d", dict(num_features=3, momentum=None), (6, 3)),
    ("BatchNorm2d", dict(num_features=4), (3, 4, 5, 5)),
    ("BatchNorm2d", dict(num_features=4, momentum=0.3, eps=1e-3), (2, 4, 3, 3)),
    ("BatchNorm2d", dict(num_features=4, momentum=None), (2, 4, 3, 3)),
    ("BatchNorm2d", dict(num_features=4, affine=False), (2, 4, 3, 3)),
    ("BatchNorm2d", dict(num_features=4, track_running_stats=False), (2, 4, 3, 3)),
    ("BatchNorm2d", dict(num_features=4, bias=False), (2, 4, 3, 3)),
]


@pytest.mark.parametrize("name,kwargs,shape", BATCHNORM,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BATCHNORM)])
def test_batchnorm_training_steps_and_eval_match_torch(name, kwargs, shape):
    module, torch_module = pair(name, **kwargs)
    if module.weight is not None:
        # Weights other than ones and zeros, so that the affine part is checked too.
        with torch.no_grad():
            torch_module.weight.uniform_(0.5, 1.5)
            if torch_module.bias is not None:
                torch_module.bias.uniform_(-0.5, 0.5)
        load_from_torch(module, torch_module)
    for step in range(4):
        x = data(*shape, seed=10 + step) * (step + 1) + step  # statistics that move
        module.zero_grad()
        torch_module.zero_grad()
        assert_same(module, torch_module, x, seed=step)
        torch_buffers = dict(torch_module.named_buffers())
        assert sorted(name for name, _ in module.named_buffers()) == sorted(torch_buffers)
        for buffer_name, buffer in module.named_buffers():
            np.testing.assert_allclose(buffer.data, torch_buffers[buffer_name].numpy(),
                                       rtol=RTOL, atol=ATOL, err_msg=buffer_name)
    if module.track_running_stats:
        assert module.num_batches_tracked.dtype == np.int64
        assert int(module.num_batches_tracked) == 4
    module.eval()
    torch_module.eval()
    module.zero_grad()
    torch_module.zero_grad()
    assert_same(module, torch_module, data(*shape, seed=99) * 3 + 1, seed=7)
    if module.track_running_stats:
        assert int(module.num_batches_tracked) == 4  # eval leaves the statistics alone
    assert module.extra_repr() == torch_module.extra_repr()


def test_batchnorm_buffers_in_state_dict_and_dtypes():
    module, torch_module = nn.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    state, torch_state = module.state_dict(), torch_module.state_dict()
    assert list(state) == list(torch_state) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for key in state:
        assert state[key].shape == tuple(torch_state[key].shape), key
        np.testing.assert_array_equal(state[key], torch_state[key].numpy())
    assert state["num_batches_tracked"].dtype == np.int64
    module.double()  # casts the float buffers, not the counter
    assert module.running_mean.dtype == module.running_var.dtype == np.float64
    assert module.num_batches_tracked.dtype == np.int64
    untracked = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert untracked.state_dict() == {} and list(untracked.parameters()) == []
    assert untracked.running_mean is None and untracked.num_batches_tracked is None


def test_batchnorm_reset_running_stats():
    module = nn.BatchNorm1d(3)
    module(tl.randn(8, 3) * 4 + 2)
    assert int(module.num_batches_tracked) == 1 and not np.allclose(module.running_mean.data, 0)
    module.reset_running_stats()
    np.testing.assert_array_equal(module.running_mean.data, 0)
    np.testing.assert_array_equal(module.running_var.data, 1)
    assert int(module.num_batches_tracked) == 0


@pytest.mark.parametrize("name,shape", [("BatchNorm2d", (2, 3, 4)), ("BatchNorm2d", (2, 3)),
                                        ("BatchNorm2d", (1, 2, 3, 4, 5)),
                                        ("BatchNorm1d", (2, 3, 4, 5)), ("BatchNorm1d", (3,))])
def test_batchnorm_rejects_the_ranks_torch_rejects(name, shape):
    with pytest.raises(ValueError):
        getattr(torch.nn, name)(3)(torch.zeros(shape))
    with pytest.raises(ValueError, match=rf"{name}: expected .* got shape {re.escape(str(shape))}"):
        getattr(nn, name)(3)(tl.zeros(*shape))


def test_batchnorm_wrong_channel_count_is_named():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 3 channels .* \(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(tl.zeros(2, 4, 5, 5))


# ----------------------------------------------------------------------------------------------
# Dropout2d
# ----------------------------------------------------------------------------------------------

def test_dropout2d_drops_whole_channels_and_scales():
    module = nn.Dropout2d(p=0.5)
    x = tl.ones(8, 16, 3, 4)
    tl.manual_seed(0)
    y = module(x).data
    per_channel = y.reshape(8, 16, -1)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))
    dropped = (per_channel == 0).all(-1).mean()
    assert 0.3 < dropped < 0.7
    tl.manual_seed(0)
    np.testing.assert_array_equal(module(x).data, y)  # the global generator decides
    module.eval()
    assert module(x) is x
    assert module.extra_repr() == torch.nn.Dropout2d(p=0.5).extra_repr()


def test_dropout2d_arguments():
    with pytest.raises(ValueError, match="must be in"):
        nn.Dropout2d(1.5)
    with pytest.raises(ValueError, match="inplace"):
        nn.Dropout2d(inplace=True)
    np.testing.assert_array_equal(nn.Dropout2d(0.0)(tl.ones(2, 3, 2, 2)).data, 1.0)


# ----------------------------------------------------------------------------------------------
# Initialisation, names, repr
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,args,kwargs", [
    ("Conv1d", (6, 32, 5), {}),
    ("Conv2d", (8, 64, 3), {}),
    ("Conv2d", (8, 64, (5, 3)), dict(groups=4)),
    ("ConvTranspose2d", (16, 48, 3), {}),
    ("ConvTranspose2d", (16, 48, 4), dict(groups=2)),
])
def test_default_init_is_torchs(name, args, kwargs):
    """weight and bias uniform in +-1/sqrt(fan_in) with fan_in = weight.shape[1] * kernel
    area, as torch's reset_parameters: the bounds hold, are nearly reached, and the variance
    is the uniform's bound**2 / 3."""
    tl.manual_seed(3)
    module = getattr(nn, name)(*args, **kwargs)
    torch_module = getattr(torch.nn, name)(*args, **kwargs)
    assert tuple(module.weight.shape) == tuple(torch_module.weight.shape)
    assert tuple(module.bias.shape) == tuple(torch_module.bias.shape)
    assert module.weight.dtype == np.float32
    fan_in = module.weight.shape[1] * math.prod(module.weight.shape[2:])
    bound = 1 / math.sqrt(fan_in)
    for values, torch_values in ((module.weight.data, torch_module.weight),
                                 (module.bias.data, torch_module.bias)):
        for v in (values, torch_values.detach().numpy()):
            assert np.abs(v).max() <= bound * (1 + 1e-6)
        if values.size > 1000:
            assert np.abs(values).max() > 0.99 * bound
            n = values.size
            # the sample variance of a uniform is within 6 standard errors of bound**2 / 3
            assert abs(values.var() - bound ** 2 / 3) < 6 * bound ** 2 * math.sqrt(4 / 45 / n)


def test_reset_parameters_follows_manual_seed():
    tl.manual_seed(5)
    a = nn.Conv2d(3, 4, 3)
    tl.manual_seed(5)
    b = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


def lenet(library):
    m = library.nn
    return m.Sequential(
        m.Conv2d(1, 6, 5, padding=2), m.BatchNorm2d(6), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(6, 16, 5), m.ReLU(), m.AvgPool2d(2), m.Dropout2d(0.1),
        m.ConvTranspose2d(16, 8, 2, stride=2),
        m.AdaptiveAvgPool2d((2, 2)), m.Flatten(), m.Linear(32, 10), m.BatchNorm1d(10))


def test_state_dict_names_and_shapes_equal_torchs_and_load():
    module, torch_module = lenet(tl), lenet(torch)
    state, torch_state = module.state_dict(), torch_module.state_dict()
    assert list(state) == list(torch_state)
    for key, value in torch_state.items():
        assert state[key].shape == tuple(value.shape), key
        assert state[key].dtype == value.numpy().dtype, key
    torch_module.double().eval()
    module.double().eval()
    load_from_torch(module, torch_module)
    assert_same(module, torch_module, data(3, 1, 28, 28))


@pytest.mark.parametrize("name,args,kwargs", [
    ("Conv1d", (3, 4, 3), {}),
    ("Conv1d", (4, 4, 3), dict(stride=2, padding=1, dilation=2, groups=2, bias=False,
                               padding_mode="reflect")),
    ("Conv2d", (3, 4, 3), dict(padding="same")),
    ("Conv2d", (3, 4, (3, 5)), dict(padding="valid", padding_mode="circular")),
    ("Conv2d", (4, 4, 3), dict(stride=(2, 1), padding=(1, 0), dilation=2, groups=4)),
    ("ConvTranspose2d", (3, 4, 3), dict(stride=2, padding=1, output_padding=1, bias=False)),
    ("MaxPool1d", (3,), {}),
    ("MaxPool2d", ((2, 3),), dict(stride=1, padding=1, ceil_mode=True)),
    ("AvgPool1d", (3,), dict(stride=2, padding=1)),
    ("AvgPool2d", (3,), dict(stride=(2, 1))),
    ("AdaptiveAvgPool2d", ((None, 3),), {}),
    ("BatchNorm1d", (5,), dict(momentum=None, affine=False)),
    ("BatchNorm2d", (5,), dict(eps=1e-3, track_running_stats=False)),
    ("Dropout2d", (0.25,), {}),
])
def test_extra_repr_and_attributes_equal_torchs(name, args, kwargs):
    module = getattr(nn, name)(*args, **kwargs)
    torch_module = getattr(torch.nn, name)(*args, **kwargs)
    assert module.extra_repr() == torch_module.extra_repr()
    for attribute in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                      "dilation", "groups", "padding_mode", "output_padding", "transposed",
                      "ceil_mode", "count_include_pad", "output_size", "num_features", "eps",
                      "momentum", "affine", "track_running_stats", "p",
                      "_reversed_padding_repeated_twice"):
        if hasattr(torch_module, attribute):
            assert getattr(module, attribute) == getattr(torch_module, attribute), attribute


def test_device_and_dtype_keywords():
    assert nn.Conv2d(1, 2, 3, dtype=tl.float64, device="cpu").weight.dtype == np.float64
    assert nn.BatchNorm2d(2, dtype=tl.float64).running_var.dtype == np.float64
    with pytest.raises(RuntimeError):
        nn.Conv2d(1, 2, 3, device="cuda")


# ----------------------------------------------------------------------------------------------
# Argument errors, as torch's
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,args,kwargs,message", [
    ("Conv2d", (3, 4, 3), dict(groups=2), "in_channels must be divisible by groups"),
    ("Conv2d", (4, 3, 3), dict(groups=2), "out_channels must be divisible by groups"),
    ("Conv2d", (4, 4, 3), dict(groups=0), "groups must be a positive integer"),
    ("Conv2d", (3, 4, 3), dict(padding="full"), "invalid padding string 'full'"),
    ("Conv2d", (3, 4, 3), dict(padding="same", stride=2), "padding='same' is not supported"),
    ("Conv1d", (3, 4, 3), dict(padding_mode="mirror"), "padding_mode must be one of"),
    ("ConvTranspose2d", (3, 4, 3), dict(padding_mode="reflect"), 'Only "zeros" padding mode'),
])
def test_constructor_errors_as_torchs(name, args, kwargs, message):
    with pytest.raises(ValueError):
        getattr(torch.nn, name)(*args, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(nn, name)(*args, **kwargs)


def test_conv_bad_kernel_size_is_named():
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be an int or a tuple of 2"):
        nn.Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv1d(1, 1, "3")


# ----------------------------------------------------------------------------------------------
# A program written for torch, run unchanged but for its imports
# ----------------------------------------------------------------------------------------------

PROGRAM = '''
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, padding_mode="replicate")
        self.head = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.conv2(x)))
        return self.head(torch.flatten(x, 1))

model = Net().double()
model.load_state_dict(initial_state)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
dataset = TensorDataset(torch.tensor(inputs), torch.tensor(labels))
loader = DataLoader(dataset, batch_size=8, shuffle=False)
losses = []
for epoch in range(2):
    model.train()
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
model.eval()
with torch.no_grad():
    logits = model(torch.tensor(inputs)).numpy()
result = dict(losses=losses, logits=logits,
              state={k: np.asarray(v).copy() for k, v in model.state_dict().items()})
'''


def test_a_torch_cnn_program_runs_unchanged_but_for_imports():
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((20, 1, 8, 8))
    labels = rng.integers(0, 3, size=20)
    namespace = {}
    exec(compile(PROGRAM.split("model = Net()")[0], "<setup>", "exec"), namespace)
    torch.manual_seed(0)
    initial = {k: v.double().numpy() for k, v in namespace["Net"]().state_dict().items()}
    results = []
    for text in (PROGRAM, PROGRAM.replace("import torch", "import tensorlite as torch", 1)
                 .replace("import torch.nn", "import tensorlite.nn")
                 .replace("from torch.utils.data", "from tensorlite.utils.data")):
        scope = {"initial_state": {k: torch.tensor(v) for k, v in initial.items()}
                 if "tensorlite" not in text else initial,
                 "inputs": inputs, "labels": labels}
        exec(compile(text, "<program>", "exec"), scope)
        results.append(scope["result"])
    torch_result, tl_result = results
    np.testing.assert_allclose(tl_result["losses"], torch_result["losses"], rtol=1e-9)
    np.testing.assert_allclose(tl_result["logits"], torch_result["logits"], rtol=1e-9, atol=1e-12)
    assert list(tl_result["state"]) == list(torch_result["state"])
    for key, value in torch_result["state"].items():
        np.testing.assert_allclose(tl_result["state"][key], value, rtol=1e-9, atol=1e-12,
                                   err_msg=key)
