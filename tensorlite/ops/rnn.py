"""Recurrent layers as ops: a whole layer over a whole sequence is ONE graph node.

`LSTMLayer`, `GRULayer` and `RNNLayer` take the sequence x (T, B, I), the initial state(s)
(D, B, H) with D = 2 for a bidirectional layer, and each direction's weights
(w_ih, w_hh[, b_ih, b_hh]), in PyTorch's layout: w_ih (G H, I), w_hh (G H, H) with G = 4 gates
for an LSTM (i, f, g, o), 3 for a GRU (r, z, n), 1 for a plain RNN. The forward is a Python loop
over time steps with, per direction:

    gi = x @ w_ih^T + b             # (T, B, G H): ONE product for all time steps
    for each step t:                # forward in time, or backward for the reverse direction
        gates = gi[t] + h @ w_hh^T  # (B, G H): one product per step
        h, c = cell(gates, c)       # nonlinearities and state update: one fused kernel

and the backward is the same loop run backwards in time (backpropagation through time), which
keeps each step's gate gradients (T, B, G H) and then forms the weight gradients with one
product each over the whole sequence: grad w_ih = G^T x, grad w_hh = G^T h_prev. One node per
layer, and none of the per-step bookkeeping a graph of small ops would need.

For the LSTM and GRU the loop over steps itself is one kernel call, `lstm_sequence` and
`gru_sequence` (and their backwards) in kernels/numpy/rnn.py, the plain loop, and
kernels/numba/rnn.py, where each thread runs every step for its block of batch rows: one
parallel launch per layer and direction rather than two per step. The plain RNN, and the
create_graph path below, loop over steps here in Python.

Outputs. A Function returns one array, so a layer returns its results packed: rows 0..T-1 are
the outputs h_t (T, B, D H); an LSTM layer has one more row, T, holding the final cell states
c_n (B, D H). The modules in tensorlite/nn/rnn.py slice them apart (`y[:T]`, `y[T-1, :, :H]`,
...); each slice's gradient comes back into the one (T [+1], B, D H) gradient this op's backward
reads. The final hidden state of the forward direction is output row T-1, of the reverse one
row 0.

Second order. The plain backward calls the fused cell kernels (kernels.lstm_cell_backward,
...). Under create_graph=True the backward is handed Tensors; it then recomputes the forward
with Tensor ops (sigmoid, tanh, products, all recorded) and runs the same backward loop with
the cell gradients written as Tensor ops, so the engine can differentiate it again. The loops
below serve both cases: the few helpers that differ (`_matmul`, `_lstm_cell`, ...) look at
whether they are handed Tensors.
"""

from __future__ import annotations

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.ops.elementwise import Sigmoid, Tanh
from tensorlite.ops.shape import Concatenate, Stack
from tensorlite.tensor import Tensor

__all__ = ["LSTMLayer", "GRULayer", "RNNLayer"]


# --------------------------------------------------------------------------------------------
# Two-faced helpers: kernels on arrays (the plain path), recorded Tensor ops on Tensors
# (create_graph).

def _any_tensor(*values):
    return any(isinstance(v, Tensor) for v in values)


def _matmul(a, b):
    """a @ b."""
    return a @ b if _any_tensor(a, b) else kernels.matmul(a, b)


def _linear(x, weight, bias):
    """x @ weight^T + bias (bias may be None)."""
    if not _any_tensor(x, weight, bias):
        return kernels.linear(x, weight, bias)
    y = x @ weight.T
    return y if bias is None else y + bias


def _linear_backward(grad, x, weight):
    """(grad @ weight, grad^T @ x, grad summed over rows): the gradients of _linear."""
    if not _any_tensor(grad, x, weight):
        return kernels.linear_backward(grad, x, weight)
    return grad @ weight, grad.T @ x, grad.sum(axis=0)


def _stack(values):
    if isinstance(values, np.ndarray):  # already stacked by a sequence kernel
        return values
    return Stack.run(*values, axis=0)


def _cat(values):
    return Concatenate.run(*values, axis=-1)


def _split(a, parts):
    size = a.shape[-1] // parts
    return [a[:, k * size:(k + 1) * size] for k in range(parts)]


def _lstm_cell(gates, c_prev):
    """(h, c, activations (i, f, g, o)) of one LSTM step (kernels.lstm_cell's contract)."""
    if not _any_tensor(gates, c_prev):
        return kernels.lstm_cell(gates, c_prev)
    i, f, g, o = _split(gates, 4)
    i, f, g, o = Sigmoid.run(i), Sigmoid.run(f), Tanh.run(g), Sigmoid.run(o)
    c = f * c_prev + i * g
    return o * Tanh.run(c), c, _cat([i, f, g, o])


def _lstm_cell_backward(grad_h, grad_c, activations, c_prev, c):
    """(grad_gates, grad_c_prev): the formulas of kernels/numpy/rnn.py."""
    if not _any_tensor(grad_h, grad_c, activations, c_prev, c):
        return kernels.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)
    i, f, g, o = _split(activations, 4)
    tanh_c = Tanh.run(c)
    dc = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    grad_gates = _cat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                       grad_h * tanh_c * o * (1 - o)])
    return grad_gates, dc * f


def _gru_cell(gi, gh, h_prev):
    """(h, activations (r, z, n)) of one GRU step (kernels.gru_cell's contract)."""
    if not _any_tensor(gi, gh, h_prev):
        return kernels.gru_cell(gi, gh, h_prev)
    gi_r, gi_z, gi_n = _split(gi, 3)
    gh_r, gh_z, gh_n = _split(gh, 3)
    r, z = Sigmoid.run(gi_r + gh_r), Sigmoid.run(gi_z + gh_z)
    n = Tanh.run(gi_n + r * gh_n)
    return (1 - z) * n + z * h_prev, _cat([r, z, n])


def _gru_cell_backward(grad_h, activations, gh, h_prev):
    """(grad_gi, grad_gh, grad_h_prev through the update only): kernels/numpy/rnn.py's formulas."""
    if not _any_tensor(grad_h, activations, gh, h_prev):
        return kernels.gru_cell_backward(grad_h, activations, gh, h_prev)
    r, z, n = _split(activations, 3)
    gh_n = _split(gh, 3)[2]
    dn_pre = grad_h * (1 - z) * (1 - n * n)
    dr_pre = dn_pre * gh_n * r * (1 - r)
    dz_pre = grad_h * (h_prev - n) * z * (1 - z)
    return _cat([dr_pre, dz_pre, dn_pre]), _cat([dr_pre, dz_pre, dn_pre * r]), grad_h * z


def _rnn_cell(pre, nonlinearity):
    if nonlinearity == "tanh":
        return Tanh.run(pre) if isinstance(pre, Tensor) else np.tanh(pre)
    return pre.relu() if isinstance(pre, Tensor) else np.maximum(pre, 0)


def _rnn_cell_backward(grad_h, h, nonlinearity):
    if nonlinearity == "tanh":
        return grad_h * (1 - h * h)
    positive = _as_array(h) > 0  # relu'' = 0: the mask is a constant
    return grad_h * positive.astype(_as_array(h).dtype)


# --------------------------------------------------------------------------------------------
# The loops over time, shared by the three layers

def _steps(T, reverse, backward=False):
    """Time steps in the order the loop visits them."""
    forward_in_time = reverse == backward
    return range(T) if forward_in_time else range(T - 1, -1, -1)


def _previous(values, initial, t, reverse):
    """The state before step t: the initial state at the sequence's start."""
    t_prev = t + 1 if reverse else t - 1
    return initial if t_prev in (-1, len(values)) else values[t_prev]


def _shifted(hs, h0, reverse):
    """(T, B, H): the state each step started from, for grad w_hh = G^T h_prev."""
    return _stack(list(hs[1:]) + [h0] if reverse else [h0] + list(hs[:-1]))


def _weights(weights, d, bias):
    """Direction d's (w_ih, w_hh, b_ih, b_hh); the biases None without bias."""
    per = 4 if bias else 2
    w = weights[d * per:(d + 1) * per]
    return (w[0], w[1], w[2], w[3]) if bias else (w[0], w[1], None, None)


def _bias_sum(b_ih, b_hh):
    return None if b_ih is None else b_ih + b_hh


def _direction_grads(grads, bias):
    """A direction's weight gradients in input order (w_ih, w_hh[, b_ih, b_hh])."""
    grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = grads
    return (grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh) if bias else (grad_w_ih, grad_w_hh)


def _as_array(x):
    return x.data if isinstance(x, Tensor) else x


class _RecurrentLayer(Function):
    """What the three layers share: the packing of the outputs and the assembly of the
    gradients over directions. Subclasses define `_run` (one direction's forward loop) and
    `_run_backward` (its backward loop)."""

    extra_rows = 0  # rows after the T outputs (LSTM: the final cell state)
    num_states = 1  # initial-state inputs (LSTM: h0 and c0)

    def forward(self, x, *inputs, bidirectional=False, bias=True, nonlinearity="tanh"):
        T, B, _ = x.shape
        states, weights = inputs[:self.num_states], inputs[self.num_states:]
        self.directions, self.bias, self.nonlinearity = 1 + bool(bidirectional), bias, nonlinearity
        H = states[0].shape[-1]
        self.save_for_backward(x, *inputs)
        out = np.empty((T + self.extra_rows, B, self.directions * H), dtype=x.dtype)
        self.runs = []
        for d in range(self.directions):
            run = self._run(x.reshape(T * B, -1), T, B, [s[d] for s in states],
                            _weights(weights, d, bias), reverse=d == 1)
            out[:T, :, d * H:(d + 1) * H] = run[0]  # (T, B, H), stacked or a list
            if self.extra_rows:
                out[T, :, d * H:(d + 1) * H] = run[1][T - 1 if d == 0 else 0]
            self.runs.append(run)
        return out

    def backward(self, grad):
        x, *inputs = self.saved
        states, weights = inputs[:self.num_states], inputs[self.num_states:]
        T, B, _ = x.shape
        H = states[0].shape[-1]
        x2d = x.reshape((T * B, x.shape[-1]))
        grad_x, grad_states, grad_weights = None, [[] for _ in states], []
        for d in range(self.directions):
            direction_weights = _weights(weights, d, self.bias)
            direction_states = [s[d] for s in states]
            if isinstance(grad, Tensor):  # create_graph: the forward again, in Tensor ops
                run = self._run(x2d, T, B, direction_states, direction_weights, reverse=d == 1)
            else:
                run = self.runs[d]
            columns = slice(d * H, (d + 1) * H)
            grad_out = grad[:T, :, columns]  # (T, B, H)
            grad_last = grad[T, :, columns] if self.extra_rows else None
            gx, g_states, g_weights = self._run_backward(
                grad_out, grad_last, x2d, direction_states, direction_weights, run, d == 1)
            grad_x = gx if grad_x is None else grad_x + gx
            for collected, g in zip(grad_states, g_states):
                collected.append(g)
            grad_weights.extend(_direction_grads(g_weights, self.bias))
        return (grad_x.reshape(x.shape), *[_stack(g) for g in grad_states], *grad_weights)


class LSTMLayer(_RecurrentLayer):
    """An LSTM layer: inputs x (T, B, I), h0, c0 (D, B, H), then per direction w_ih (4H, I),
    w_hh (4H, H)[, b_ih, b_hh (4H,)]; output (T + 1, B, D H): the outputs, then c_n."""

    extra_rows = 1
    num_states = 2

    def _run(self, x2d, T, B, states, weights, reverse):
        (h, c), (w_ih, w_hh, b_ih, b_hh) = states, weights
        gi = _linear(x2d, w_ih, _bias_sum(b_ih, b_hh)).reshape((T, B, -1))  # (T, B, 4H)
        if not _any_tensor(gi, h, c, w_hh):  # the whole loop in one kernel call
            return kernels.lstm_sequence(gi, w_hh, h, c, reverse)
        hs, cs, activations = [None] * T, [None] * T, [None] * T
        for t in _steps(T, reverse):
            gates = gi[t] + _matmul(h, w_hh.T)  # (B, 4H)
            h, c, activations[t] = _lstm_cell(gates, c)
            hs[t], cs[t] = h, c
        return hs, cs, activations

    def _run_backward(self, grad_out, grad_c, x2d, states, weights, run, reverse):
        (h0, c0), (w_ih, w_hh, b_ih, _) = states, weights
        hs, cs, activations = run
        T = len(hs)
        if not _any_tensor(grad_out, *run, c0, w_hh):
            grad_gates, grad_h, grad_c = kernels.lstm_sequence_backward(
                grad_out, grad_c, activations, cs, c0, w_hh, reverse)
        else:
            grad_gates, grad_h = [None] * T, None
            for t in _steps(T, reverse, backward=True):
                dh = grad_out[t] if grad_h is None else grad_out[t] + grad_h
                grad_gates[t], grad_c = _lstm_cell_backward(
                    dh, grad_c, activations[t], _previous(cs, c0, t, reverse), cs[t])
                grad_h = _matmul(grad_gates[t], w_hh)  # (B, H)
        gates2d = _stack(grad_gates).reshape((x2d.shape[0], -1))  # (T B, 4H)
        grad_x, grad_w_ih, grad_b = _linear_backward(gates2d, x2d, w_ih)
        h_prev = _shifted(hs, h0, reverse).reshape((gates2d.shape[0], -1))  # (T B, H)
        grad_w_hh = _matmul(gates2d.T, h_prev)
        grad_b_hh = None if b_ih is None else (grad_b if isinstance(grad_b, Tensor)
                                                else grad_b.copy())
        return grad_x, (grad_h, grad_c), (grad_w_ih, grad_w_hh, grad_b, grad_b_hh)


class GRULayer(_RecurrentLayer):
    """A GRU layer: inputs x (T, B, I), h0 (D, B, H), then per direction w_ih (3H, I),
    w_hh (3H, H)[, b_ih, b_hh (3H,)]; output (T, B, D H). b_hh stays inside the reset product,
    n = tanh(gi_n + r (h W_hn^T + b_hn)), as in PyTorch."""

    def _run(self, x2d, T, B, states, weights, reverse):
        (h,), (w_ih, w_hh, b_ih, b_hh) = states, weights
        gi = _linear(x2d, w_ih, b_ih).reshape((T, B, -1))  # (T, B, 3H)
        if not _any_tensor(gi, h, w_hh, b_hh):  # the whole loop in one kernel call
            return kernels.gru_sequence(gi, w_hh, b_hh, h, reverse)
        hs, ghs, activations = [None] * T, [None] * T, [None] * T
        for t in _steps(T, reverse):
            ghs[t] = _linear(h, w_hh, b_hh)  # (B, 3H)
            h, activations[t] = _gru_cell(gi[t], ghs[t], h)
            hs[t] = h
        return hs, ghs, activations

    def _run_backward(self, grad_out, _, x2d, states, weights, run, reverse):
        (h0,), (w_ih, w_hh, b_ih, _) = states, weights
        hs, ghs, activations = run
        T = len(hs)
        if not _any_tensor(grad_out, *run, h0, w_hh):
            grad_gi, grad_gh, grad_h = kernels.gru_sequence_backward(
                grad_out, activations, ghs, hs, h0, w_hh, reverse)
        else:
            grad_gi, grad_gh, grad_h = [None] * T, [None] * T, None
            for t in _steps(T, reverse, backward=True):
                dh = grad_out[t] if grad_h is None else grad_out[t] + grad_h
                grad_gi[t], grad_gh[t], direct = _gru_cell_backward(
                    dh, activations[t], ghs[t], _previous(hs, h0, t, reverse))
                grad_h = direct + _matmul(grad_gh[t], w_hh)  # (B, H)
        rows = x2d.shape[0]
        gi2d = _stack(grad_gi).reshape((rows, -1))  # (T B, 3H)
        gh2d = _stack(grad_gh).reshape((rows, -1))
        grad_x, grad_w_ih, grad_b_ih = _linear_backward(gi2d, x2d, w_ih)
        h_prev = _shifted(hs, h0, reverse).reshape((rows, -1))  # (T B, H)
        grad_w_hh = _matmul(gh2d.T, h_prev)
        grad_b_hh = None if b_ih is None else gh2d.sum(axis=0)
        return grad_x, (grad_h,), (grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)


class RNNLayer(_RecurrentLayer):
    """An Elman RNN layer, h' = tanh or relu(x W_ih^T + b_ih + h W_hh^T + b_hh): inputs
    x (T, B, I), h0 (D, B, H), then per direction w_ih (H, I), w_hh (H, H)[, b_ih, b_hh (H,)];
    output (T, B, D H)."""

    def _run(self, x2d, T, B, states, weights, reverse):
        (h,), (w_ih, w_hh, b_ih, b_hh) = states, weights
        gi = _linear(x2d, w_ih, _bias_sum(b_ih, b_hh)).reshape((T, B, -1))  # (T, B, H)
        hs = [None] * T
        for t in _steps(T, reverse):
            h = hs[t] = _rnn_cell(gi[t] + _matmul(h, w_hh.T), self.nonlinearity)
        return (hs,)

    def _run_backward(self, grad_out, _, x2d, states, weights, run, reverse):
        (h0,), (w_ih, w_hh, b_ih, _) = states, weights
        hs, = run
        T = len(hs)
        grad_pre, grad_h = [None] * T, None
        for t in _steps(T, reverse, backward=True):
            dh = grad_out[t] if grad_h is None else grad_out[t] + grad_h
            grad_pre[t] = _rnn_cell_backward(dh, hs[t], self.nonlinearity)
            grad_h = _matmul(grad_pre[t], w_hh)
        rows = x2d.shape[0]
        pre2d = _stack(grad_pre).reshape((rows, -1))  # (T B, H)
        grad_x, grad_w_ih, grad_b = _linear_backward(pre2d, x2d, w_ih)
        grad_w_hh = _matmul(pre2d.T, _shifted(hs, h0, reverse).reshape((rows, -1)))
        grad_b_hh = None if b_ih is None else (grad_b if isinstance(grad_b, Tensor)
                                                else grad_b.copy())
        return grad_x, (grad_h,), (grad_w_ih, grad_w_hh, grad_b, grad_b_hh)
