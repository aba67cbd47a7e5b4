"""PyTorch programs run on tensorlite with nothing changed but their import lines.

Each program below is source text written for PyTorch. It is executed twice: as written, with
the real torch, and with its `import torch...` lines pointed at tensorlite. Everything else in
the text is identical, so any name tensorlite lacks or any behaviour it gets wrong shows up as
an exception or as a difference in the results.

The seven polynomial programs fit sin(x) on [-pi, pi] with a cubic (or a dynamic-depth model),
each with its own way of computing gradients; the starting weights come from fixed value lists
so both runs start from the same point, and both run in float64. Results must agree to
RTOL: every step is a short chain of float64 reductions, and the two libraries may sum in a
different order, so each step can differ by a few ulps; plain gradient descent on these
problems is contracting, so those differences do not grow by more than a few orders of
magnitude over the steps used here.

The GPT program is a small GPT-2-style model written for torch; both copies are built in
float64, torch's weights are loaded into tensorlite by name, and logits, loss and every
parameter's gradient must agree, then again after a few AdamW steps.

A name the programs use that tensorlite lacks is not worked around in the program: the
comparison fails, naming it.
"""

import functools
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorlite  # noqa: E402

RTOL = 1e-9

IMPORT_LINE = re.compile(r"^import torch(\S*)(.*)$", re.MULTILINE)


def as_tensorlite(source):
    """The same program with `import torch[.x] [as y]` pointing at tensorlite."""
    def swap(match):
        submodule, alias = match.group(1), match.group(2)
        if not submodule and not alias.strip():
            return "import tensorlite as torch"
        return f"import tensorlite{submodule}{alias}"
    changed = IMPORT_LINE.sub(swap, source)
    # Only the import lines may differ between the two copies.
    differing = [(a, b) for a, b in zip(source.splitlines(), changed.splitlines()) if a != b]
    assert differing and all(a.startswith("import torch") for a, _ in differing)
    return changed


@functools.lru_cache(maxsize=None)
def run_both(source):
    """The `result` dict each copy leaves behind, (torch's, tensorlite's); cached because
    several tests look at the same runs. Callers only read the results."""
    results = []
    for text in (source, as_tensorlite(source)):
        namespace = {"__name__": "program"}
        exec(compile(text, "<program>", "exec"), namespace)
        results.append(namespace["result"])
    return results


def assert_same_fit(source, drop_factor=20.0):
    ours_torch, ours_tl = run_both(source)
    losses_torch, losses_tl = np.array(ours_torch["losses"]), np.array(ours_tl["losses"])
    assert len(losses_torch) == len(losses_tl)
    np.testing.assert_allclose(losses_tl, losses_torch, rtol=RTOL)
    np.testing.assert_allclose(ours_tl["weights"], ours_torch["weights"], rtol=RTOL, atol=1e-12)
    assert losses_torch[-1] * drop_factor < losses_torch[0]  # the fit converges
    return losses_torch, losses_tl


# ---- 1. manual gradients, no autograd --------------------------------------------------------

MANUAL = """\
import torch
import math

dtype = torch.float64
x = torch.linspace(-math.pi, math.pi, 200, dtype=dtype)
y = torch.sin(x)

a = torch.tensor(0.4, dtype=dtype)
b = torch.tensor(-0.3, dtype=dtype)
c = torch.tensor(0.2, dtype=dtype)
d = torch.tensor(0.1, dtype=dtype)

lr = 2e-5
losses = []
for step in range(400):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum().item()
    losses.append(loss)

    # d(loss)/d(y_pred), then the chain rule by hand for each coefficient
    grad_y_pred = 2.0 * (y_pred - y)
    grad_a = grad_y_pred.sum()
    grad_b = (grad_y_pred * x).sum()
    grad_c = (grad_y_pred * x ** 2).sum()
    grad_d = (grad_y_pred * x ** 3).sum()

    a -= lr * grad_a
    b -= lr * grad_b
    c -= lr * grad_c
    d -= lr * grad_d

result = {"losses": losses, "weights": [a.item(), b.item(), c.item(), d.item()]}
"""


def test_manual_gradients_program():
    assert_same_fit(MANUAL)


# ---- 2. autograd -----------------------------------------------------------------------------

AUTOGRAD = """\
import torch
import math

dtype = torch.float64
x = torch.linspace(-math.pi, math.pi, 200, dtype=dtype)
y = torch.sin(x)

a = torch.tensor(0.4, dtype=dtype, requires_grad=True)
b = torch.tensor(-0.3, dtype=dtype, requires_grad=True)
c = torch.tensor(0.2, dtype=dtype, requires_grad=True)
d = torch.tensor(0.1, dtype=dtype, requires_grad=True)

lr = 2e-5
losses = []
for step in range(400):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum()
    losses.append(loss.item())
    loss.backward()

    with torch.no_grad():
        for coefficient in (a, b, c, d):
            coefficient -= lr * coefficient.grad
            coefficient.grad = None

result = {"losses": losses, "weights": [a.item(), b.item(), c.item(), d.item()]}
"""


def test_autograd_program():
    assert_same_fit(AUTOGRAD)


def test_manual_and_autograd_programs_agree():
    manual, autograd = run_both(MANUAL)[1], run_both(AUTOGRAD)[1]
    np.testing.assert_allclose(autograd["losses"], manual["losses"], rtol=RTOL)


# ---- 3. a custom autograd.Function ------------------------------------------------------------

CUSTOM_FUNCTION = """\
import torch
import math


class CubicLegendre(torch.autograd.Function):
    \"\"\"P3(t) = (5 t^3 - 3 t) / 2, with its derivative written out by hand.\"\"\"

    @staticmethod
    def forward(ctx, t):
        ctx.save_for_backward(t)
        return 0.5 * (5 * t ** 3 - 3 * t)

    @staticmethod
    def backward(ctx, grad_output):
        t, = ctx.saved_tensors
        return grad_output * 1.5 * (5 * t ** 2 - 1)


dtype = torch.float64
x = torch.linspace(-math.pi, math.pi, 200, dtype=dtype)
y = torch.sin(x)

a = torch.full((), 1.0, dtype=dtype, requires_grad=True)
b = torch.full((), 0.5, dtype=dtype, requires_grad=True)
c = torch.full((), 0.3, dtype=dtype, requires_grad=True)
d = torch.full((), 0.2, dtype=dtype, requires_grad=True)

lr = 1e-4
losses = []
for step in range(300):
    P3 = CubicLegendre.apply
    y_pred = a + b * P3(c + d * x)
    loss = (y_pred - y).pow(2).sum()
    losses.append(loss.item())
    loss.backward()

    with torch.no_grad():
        for coefficient in (a, b, c, d):
            coefficient -= lr * coefficient.grad
            coefficient.grad.zero_()

result = {"losses": losses, "weights": [a.item(), b.item(), c.item(), d.item()]}
"""


def test_custom_autograd_function_program():
    assert_same_fit(CUSTOM_FUNCTION)


# ---- 4. nn: Sequential of Linear + Flatten, update by hand ----------------------------------

NN_MODULES = """\
import torch
import math

dtype = torch.float64
x = torch.linspace(-math.pi, math.pi, 200, dtype=dtype)
y = torch.sin(x)

powers = torch.tensor([1, 2, 3])
features = x.unsqueeze(-1).pow(powers)  # (200, 3): x, x^2, x^3

model = torch.nn.Sequential(
    torch.nn.Linear(3, 1),
    torch.nn.Flatten(0, 1),
).to(dtype)
with torch.no_grad():
    model[0].weight.copy_(torch.tensor([[-0.3, 0.2, 0.1]], dtype=dtype))
    model[0].bias.copy_(torch.tensor([0.4], dtype=dtype))

loss_fn = torch.nn.MSELoss(reduction="sum")
lr = 2e-5
losses = []
for step in range(400):
    loss = loss_fn(model(features), y)
    losses.append(loss.item())
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= lr * param.grad

linear = model[0]
result = {"losses": losses,
          "weights": [linear.bias.item()] + [w.item() for w in linear.weight[0]]}
"""


def test_nn_sequential_program():
    losses, _ = assert_same_fit(NN_MODULES)
    # The same coefficients, starting point and learning rate as the autograd program.
    np.testing.assert_allclose(losses, run_both(AUTOGRAD)[0]["losses"], rtol=RTOL)


# ---- 5. optim --------------------------------------------------------------------------------

OPTIM = """\
import torch
import math

dtype = torch.float64
x = torch.linspace(-math.pi, math.pi, 200, dtype=dtype)
y = torch.sin(x)
features = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))

model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1)).to(dtype)
with torch.no_grad():
    model[0].weight.copy_(torch.tensor([[-0.3, 0.2, 0.1]], dtype=dtype))
    model[0].bias.fill_(0.4)

loss_fn = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.RMSprop(model.parameters(), lr=2e-3)
losses = []
for step in range(300):
    loss = loss_fn(model(features), y)
    losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

linear = model[0]
result = {"losses": losses,
          "weights": [linear.bias.item()] + linear.weight.detach().flatten().tolist()}
"""


def test_optim_rmsprop_program():
    assert_same_fit(OPTIM)


# ---- 6. a custom nn.Module ---------------------------------------------------------------------

CUSTOM_MODULE = """\
import torch
import math


class Cubic(torch.nn.Module):
    def __init__(self, start):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(start[0], dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(start[1], dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor(start[2], dtype=torch.float64))
        self.d = torch.nn.Parameter(torch.tensor(start[3], dtype=torch.float64))

    def forward(self, x):
        return self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3

    def string(self):
        return f"y = {self.a.item():.4f} + {self.b.item():.4f} x + " \\
               f"{self.c.item():.4f} x^2 + {self.d.item():.4f} x^3"


x = torch.linspace(-math.pi, math.pi, 200, dtype=torch.float64)
y = torch.sin(x)
model = Cubic([0.4, -0.3, 0.2, 0.1])

criterion = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.SGD(model.parameters(), lr=2e-5, momentum=0.5)
losses = []
for step in range(300):
    loss = criterion(model(x), y)
    losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

result = {"losses": losses, "weights": [p.item() for p in model.parameters()],
          "string": model.string(),
          "names": [name for name, _ in model.named_parameters()]}
"""


def test_custom_module_program():
    assert_same_fit(CUSTOM_MODULE)
    ran_torch, ran_tl = run_both(CUSTOM_MODULE)
    assert ran_tl["names"] == ran_torch["names"] == ["a", "b", "c", "d"]
    assert ran_tl["string"] == ran_torch["string"]


# ---- 7. a dynamic graph ------------------------------------------------------------------------

DYNAMIC = """\
import torch
import math
import random


class GrowingPolynomial(torch.nn.Module):
    \"\"\"a + b x + c x^2 + d x^3, plus e u^4, e u^5, ... up to e u^6 with u = x / pi (scaled
    so that x^6 does not make plain SGD unstable): how many of the extra terms a forward pass
    uses is drawn afresh each call, all sharing the parameter e.\"\"\"

    def __init__(self, draw):
        super().__init__()
        self.draw = draw
        self.abcd = torch.nn.Parameter(torch.tensor([0.4, -0.3, 0.2, 0.1], dtype=torch.float64))
        self.e = torch.nn.Parameter(torch.tensor(0.001, dtype=torch.float64))

    def forward(self, x):
        a, b, c, d = self.abcd
        y = a + b * x + c * x ** 2 + d * x ** 3
        for power in range(4, 4 + self.draw()):
            y = y + self.e * (x / math.pi) ** power
        return y


x = torch.linspace(-math.pi, math.pi, 200, dtype=torch.float64)
y = torch.sin(x)
draws = random.Random(7)
used = []


def draw():
    used.append(draws.randint(0, 3))
    return used[-1]


model = GrowingPolynomial(draw)
criterion = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.SGD(model.parameters(), lr=5e-6, momentum=0.9)
losses = []
for step in range(300):
    loss = criterion(model(x), y)
    losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

result = {"losses": losses, "weights": model.abcd.tolist() + [model.e.item()], "used": used}
"""


def test_dynamic_graph_program():
    assert_same_fit(DYNAMIC)
    ran_torch, ran_tl = run_both(DYNAMIC)
    assert ran_tl["used"] == ran_torch["used"]
    assert set(ran_torch["used"]) == {0, 1, 2, 3}  # every depth was taken


# ---- a nanoGPT-style model ---------------------------------------------------------------------

GPT = """\
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True):
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd, self.bias = n_layer, n_head, n_embd, bias


class CausalSelfAttention(nn.Module):
    def __init__(self, config, flash):
        super().__init__()
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.flash = config.n_head, config.n_embd, flash
        # the mask is only used on the explicit path; not part of the state_dict
        self.register_buffer("mask", torch.tril(torch.ones(config.block_size, config.block_size))
                             .view(1, 1, config.block_size, config.block_size), persistent=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            scores = scores.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")
        self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, config, flash):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, flash)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config, flash=True):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config, flash) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied input and output embeddings

    def forward(self, idx, targets=None):
        b, t = idx.size()
        assert t <= self.config.block_size
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, lr, betas):
        # matrices and embeddings decay; biases and LayerNorm gains do not
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        groups = [
            {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def train(model, idx, targets, steps, clip):
    optimizer = model.configure_optimizers(weight_decay=0.1, lr=1e-2, betas=(0.9, 0.95))
    losses = []
    for _ in range(steps):
        _, loss = model(idx, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    return losses
"""


def build_gpt(source, flash, bias):
    namespace = {"__name__": "gpt"}
    exec(compile(source, "<gpt>", "exec"), namespace)
    return namespace, namespace["GPT"](namespace["Config"](bias=bias), flash=flash).double()


def batch():
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 23, size=(3, 8))
    targets = rng.integers(0, 23, size=(3, 8))
    targets[0, :3] = -1  # ignored positions
    targets[2, 5] = -1
    return idx, targets


def grad_of(p):
    return np.asarray(p.grad.numpy() if hasattr(p.grad, "numpy") else p.grad)


@pytest.mark.parametrize("flash", [True, False], ids=["sdpa", "masked_softmax"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_gpt_program_matches_torch(flash, bias):
    torch.manual_seed(0)
    _, reference = build_gpt(GPT, flash, bias)
    _, model = build_gpt(as_tensorlite(GPT), flash, bias)

    torch_state = reference.state_dict()
    assert set(model.state_dict()) == set(torch_state)  # same names, the tied weight listed under both
    model.load_state_dict({k: v.detach().numpy() for k, v in torch_state.items()})
    assert model.transformer.wte.weight is model.lm_head.weight

    idx, targets = batch()
    logits_ref, loss_ref = reference(torch.tensor(idx), torch.tensor(targets))
    loss_ref.backward()
    logits, loss = model(tensorlite.tensor(idx), tensorlite.tensor(targets))
    loss.backward()

    assert logits.dtype == tensorlite.float64 and tuple(logits.shape) == (3, 8, 23)
    np.testing.assert_allclose(logits.numpy(), logits_ref.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(loss.item(), loss_ref.item(), rtol=1e-12)
    grads_ref = {n: p.grad.numpy() for n, p in reference.named_parameters()}
    grads = {n: grad_of(p) for n, p in model.named_parameters()}
    assert set(grads) == set(grads_ref)
    for name, g in grads_ref.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("clip", [0.0, 0.5], ids=["no_clip", "clip_grad_norm"])
def test_gpt_program_trains_like_torch(clip):
    """A few AdamW steps with nanoGPT's two weight-decay groups, with and without clipping."""
    torch.manual_seed(1)
    torch_ns, reference = build_gpt(GPT, True, True)
    tl_ns, model = build_gpt(as_tensorlite(GPT), True, True)
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    idx, targets = batch()
    losses_ref = torch_ns["train"](reference, torch.tensor(idx), torch.tensor(targets), 8, clip)
    losses = tl_ns["train"](model, tensorlite.tensor(idx), tensorlite.tensor(targets), 8, clip)
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-9)
    assert losses_ref[-1] < 0.7 * losses_ref[0]
    params = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(params[name].detach().numpy(), p.detach().numpy(),
                                   rtol=1e-8, atol=1e-10, err_msg=name)
