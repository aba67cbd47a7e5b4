"""Recurrent layers as in ``torch.nn``: ``RNN``, ``LSTM``, ``GRU`` and the single-step cells
``RNNCell``, ``LSTMCell``, ``GRUCell``, with PyTorch's arguments, shapes, parameter names, gate
order and initialisation, so that a torch ``state_dict`` loads by name and gives the same
outputs and gradients.

    lstm = nn.LSTM(input_size=64, hidden_size=256, num_layers=2)
    output, (h_n, c_n) = lstm(x)          # x (T, B, 64): output (T, B, 256), h_n (2, B, 256)

Shapes (D = 2 if bidirectional else 1, L = num_layers):

    input   (T, B, input_size), or (B, T, input_size) with batch_first=True, or unbatched
            (T, input_size)
    h0, c0  (L D, B, hidden_size), or (L D, hidden_size) unbatched; zeros when not given
    output  (T, B, D hidden_size): the last layer's h_t, both directions side by side
    h_n     (L D, B, hidden_size): each layer's and direction's final state (batch_first does
            not apply to the states, as in PyTorch)

Parameters of layer k: ``weight_ih_l{k}`` (G H, input of the layer), ``weight_hh_l{k}`` (G H, H),
``bias_ih_l{k}``, ``bias_hh_l{k}`` (G H,), and the same with ``_reverse`` for the second
direction, G being 4 for the LSTM (gates i, f, g, o), 3 for the GRU (r, z, n) and 1 for the RNN.
All start uniform in [-1/sqrt(H), 1/sqrt(H)]. ``dropout`` is applied to the outputs of every
layer but the last, in training mode only.

Each layer runs as one op over the whole sequence (tensorlite/ops/rnn.py): one matrix product
for the input projections of all steps, then per step one product with W_hh and a fused cell
kernel (tensorlite/kernels/numba/rnn.py).

Variable-length batches (masking). ``pack_padded_sequence`` is not provided; with a
unidirectional layer, pad the sequences to a common length instead and read each one's result
at its own last step. The output at step t depends only on steps <= t, so padding after a
sequence's end does not change its valid outputs:

    output, _ = lstm(padded)                              # padded (T, B, I), lengths (B,)
    last = output[lengths - 1, np.arange(B)]              # (B, H): each sequence's final h
    mask = (np.arange(T)[:, None] < lengths)[..., None]   # (T, B, 1): valid positions
    loss = ((output - target) ** 2 * mask).sum() / mask.sum()

``h_n`` (and ``c_n``) are those of the padded end, so use ``last`` rather than ``h_n``. A
bidirectional layer's reverse direction reads the padding first: run such batches sorted into
groups of equal length instead.
"""

from __future__ import annotations

import math

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter
from tensorlite.ops.rnn import GRULayer, LSTMLayer, RNNLayer
from tensorlite.ops.shape import stack

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _shape(x):
    return tuple(x.shape)


def _check_size(name, what, size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"{name}: {what} must be a positive integer, got {size!r}")


class RNNBase(Module):
    """What ``RNN``, ``LSTM`` and ``GRU`` share: parameters, checks and the loop over layers."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        dtype = compat.layer_dtype(name, device, dtype)
        for what, size in (("input_size", input_size), ("hidden_size", hidden_size),
                           ("num_layers", num_layers)):
            _check_size(name, what, size)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in [0, 1] giving the "
                             f"probability of an element to be zeroed, got {dropout!r}")
        if proj_size:
            raise ValueError(f"{name}: proj_size={proj_size} (LSTM with projections) is not "
                             f"supported; use proj_size=0 and a Linear layer on the output")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.proj_size = 0
        gate_size = _GATES[mode] * hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                for kind, shape in shapes:
                    param_name = f"{kind}_l{layer}{suffix}"
                    setattr(self, param_name, Parameter(np.empty(shape, dtype=dtype)))
                    self._flat_weights_names.append(param_name)
        self.reset_parameters()

    def reset_parameters(self):
        """Every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    @property
    def all_weights(self):
        """Per layer and direction, the list of its parameters (as PyTorch's ``all_weights``)."""
        per = 4 if self.bias else 2
        flat = [getattr(self, n) for n in self._flat_weights_names]
        return [flat[k:k + per] for k in range(0, len(flat), per)]

    def flatten_parameters(self):
        """Does nothing: PyTorch's compacts the weights for cuDNN; kept so its programs run."""

    def _layer_op(self):
        return {"LSTM": LSTMLayer, "GRU": GRULayer}.get(self.mode, RNNLayer)

    def _check_state(self, what, state, expected):
        if state is not None and _shape(state) != expected:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape {expected} for an "
                             f"input of this batch, got {_shape(state)}")

    def forward(self, input, hx=None):
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a 3-D input (T, B, {self.input_size}) (or "
                             f"(B, T, {self.input_size}) with batch_first) or a 2-D unbatched "
                             f"input (T, {self.input_size}), got shape {_shape(input)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input size {self.input_size} expected in the last "
                             f"dimension, got input of shape {_shape(input)}")
        weight = getattr(self, self._flat_weights_names[0])
        if np.dtype(input.dtype) != np.dtype(weight.dtype):
            raise ValueError(f"{name}: input of dtype {np.dtype(input.dtype)} given to a layer of "
                             f"dtype {np.dtype(weight.dtype)}; convert one (.double(), .float())")
        batched = input.ndim == 3
        x = input if batched else input.reshape((input.shape[0], 1, input.shape[1]))
        if batched and self.batch_first:
            x = x.transpose(0, 1)  # (B, T, I) -> (T, B, I)
        T, B = x.shape[:2]
        if T == 0:
            raise ValueError(f"{name}: the input has no time steps (shape {_shape(input)})")
        directions = 2 if self.bidirectional else 1
        state_shape = (self.num_layers * directions, B, self.hidden_size)
        states = self._initial_states(hx, batched, state_shape, x.dtype)
        per = 4 if self.bias else 2
        weights = [getattr(self, n) for n in self._flat_weights_names]
        op, H = self._layer_op(), self.hidden_size
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            layer_states = [s[layer * directions:(layer + 1) * directions] for s in states]
            layer_weights = weights[layer * directions * per:(layer + 1) * directions * per]
            y = op.apply(x, *layer_states, *layer_weights, bidirectional=self.bidirectional,
                         bias=self.bias, nonlinearity=self.mode[4:].lower() or "tanh")
            x = y[:T]  # (T, B, D H)
            finals[0].append(y[T - 1, :, :H])
            if directions == 2:
                finals[0].append(y[0, :, H:])
            if len(states) == 2:  # LSTM: row T holds c_n
                finals[1].extend(y[T, :, d * H:(d + 1) * H] for d in range(directions))
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        finals = [stack(f, axis=0) for f in finals]  # (L D, B, H)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if not batched:
            x = x[:, 0]
            finals = [f[:, 0] for f in finals]
        return x, (tuple(finals) if len(finals) == 2 else finals[0])

    def _initial_states(self, hx, batched, state_shape, dtype):
        count = 2 if self.mode == "LSTM" else 1
        if hx is None:
            return [np.zeros(state_shape, dtype=dtype)] * count
        name = type(self).__name__
        if count == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError(f"{name}: hx must be a tuple (h0, c0), got {type(hx).__name__}")
            given = list(hx)
        else:
            given = [hx]
        expected = state_shape if batched else (state_shape[0], state_shape[2])
        for what, state in zip(("h0", "c0"), given):
            self._check_state(what, state, expected)
        if not batched:
            given = [s.reshape(state_shape) for s in given]
        return given

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False)):
            if getattr(self, key) != default:
                text += f", {key}={getattr(self, key)}"
        return text


class RNN(RNNBase):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu with
    ``nonlinearity="relu"``). ``rnn(input, h0=None) -> (output, h_n)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, gates (i, f, g, o):

        i, f, o = sigmoid(.), g = tanh(.)  of  x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)

    ``lstm(input, (h0, c0)=None) -> (output, (h_n, c_n))``. ``proj_size`` must be 0."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Gated recurrent unit, gates (r, z, n):

        r, z = sigmoid(x_t W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z})
        n = tanh(x_t W_in^T + b_in + r (h W_hn^T + b_hn)),  h_t = (1 - z) n + z h_{t-1}

    ``gru(input, h0=None) -> (output, h_n)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)


class RNNCellBase(Module):
    """One time step: parameters ``weight_ih`` (G H, input_size), ``weight_hh`` (G H, H),
    ``bias_ih``, ``bias_hh`` (G H,), uniform in [-1/sqrt(H), 1/sqrt(H)]. Runs the same op as
    the layers, over a sequence of length one."""

    gates = 1
    num_states = 1

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        dtype = compat.layer_dtype(name, device, dtype)
        _check_size(name, "input_size", input_size)
        _check_size(name, "hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        size = self.gates * hidden_size
        self.weight_ih = Parameter(np.empty((size, input_size), dtype=dtype))
        self.weight_hh = Parameter(np.empty((size, hidden_size), dtype=dtype))
        self.bias_ih = Parameter(np.empty(size, dtype=dtype)) if bias else None
        self.bias_hh = Parameter(np.empty(size, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _run(self, op, input, hx, **params):
        """(the op's packed output (1 or 2, B, H), batched?) for one step of `input`."""
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: expected a 2-D input (B, {self.input_size}) or a 1-D "
                             f"unbatched one ({self.input_size},), got shape {_shape(input)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has inconsistent input_size: got shape "
                             f"{_shape(input)}, expected last dimension {self.input_size}")
        batched = input.ndim == 2
        B = input.shape[0] if batched else 1
        x = input.reshape((1, B, self.input_size))
        expected = (B, self.hidden_size) if batched else (self.hidden_size,)
        if hx is None:
            states = [np.zeros((1, B, self.hidden_size), dtype=x.dtype)] * self.num_states
        else:
            given = list(hx) if self.num_states == 2 else [hx]
            if len(given) != self.num_states:
                raise ValueError(f"{name}: hx must be a tuple (h, c), got {len(given)} values")
            for what, state in zip(("h", "c"), given):
                if _shape(state) != expected:
                    raise ValueError(f"{name}: expected {what} of shape {expected} for input "
                                     f"of shape {_shape(input)}, got {_shape(state)}")
            states = [s.reshape((1, B, self.hidden_size)) for s in given]
        weights = [self.weight_ih, self.weight_hh]
        if self.bias:
            weights += [self.bias_ih, self.bias_hh]
        y = op.apply(x, *states, *weights, bias=self.bias, **params)
        return y, batched

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


def _unbatch(t, batched):
    return t if batched else t[0]


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu). ``cell(input, hx=None) -> h'``."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        y, batched = self._run(RNNLayer, input, hx, nonlinearity=self.nonlinearity)
        return _unbatch(y[0], batched)


class LSTMCell(RNNCellBase):
    """One LSTM step (gates i, f, g, o). ``cell(input, (h, c)=None) -> (h', c')``."""

    gates = 4
    num_states = 2

    def forward(self, input, hx=None):
        y, batched = self._run(LSTMLayer, input, hx)
        return _unbatch(y[0], batched), _unbatch(y[1], batched)


class GRUCell(RNNCellBase):
    """One GRU step (gates r, z, n). ``cell(input, hx=None) -> h'``."""

    gates = 3

    def forward(self, input, hx=None):
        y, batched = self._run(GRULayer, input, hx)
        return _unbatch(y[0], batched)
