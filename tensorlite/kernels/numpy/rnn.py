"""Recurrent cell kernels, reference: the LSTM and GRU cell updates after the matrix products.

Contract shared with numba/rnn.py (the ops in tensorlite/ops/rnn.py call these). The product
x @ W_ih^T for all time steps at once is done by the caller; a cell kernel does the rest of one
time step after the products, and a sequence kernel (end of this file) runs the loop over the
time steps of one direction, the per-step product h @ W_hh^T included.
Gate order as PyTorch: LSTM (i, f, g, o), GRU (r, z, n).

The backward formulas, with s' = s (1 - s) for a sigmoid s and t' = 1 - t^2 for a tanh t:

    LSTM  c = f c_prev + i g,  h = o tanh(c)
          dc      = grad_c + grad_h o (1 - tanh(c)^2)
          d(i, f, g, o) pre-activations = (dc g i', dc c_prev f', dc i g', grad_h tanh(c) o')
          dc_prev = dc f
    GRU   n = tanh(gi_n + r gh_n),  h = (1 - z) n + z h_prev
          dn_pre  = grad_h (1 - z) n'       (the pre-activation of n)
          dr_pre  = dn_pre gh_n r',  dz_pre = grad_h (h_prev - n) z'
          grad_gi = (dr_pre, dz_pre, dn_pre),  grad_gh = (dr_pre, dz_pre, dn_pre r)
          grad_h_prev = grad_h z            (the part through the state update only: the
                                             caller adds grad_gh @ W_hh)
"""

import numpy as np
from scipy.special import expit


def _split(a, parts):
    """The gate blocks of a (B, parts * H) array, as views."""
    size = a.shape[-1] // parts
    return [a[..., k * size:(k + 1) * size] for k in range(parts)]


def lstm_cell(gates, c_prev):
    """(h, c, activations) of one LSTM step: gates (B, 4H) are the pre-activation sums
    x W_ih^T + b_ih + h W_hh^T + b_hh; activations (B, 4H) = (sigmoid i, sigmoid f, tanh g,
    sigmoid o); c = f * c_prev + i * g; h = o * tanh(c)."""
    i, f, g, o = _split(gates, 4)
    activations = np.concatenate([expit(i), expit(f), np.tanh(g), expit(o)], axis=-1)  # (B, 4H)
    i, f, g, o = _split(activations, 4)
    c = f * c_prev + i * g  # (B, H)
    h = o * np.tanh(c)  # (B, H)
    return h, c, activations


def lstm_cell_backward(grad_h, grad_c, activations, c_prev, c):
    """(grad_gates (B, 4H), grad_c_prev (B, H)) of lstm_cell, given the gradients reaching h and
    c (grad_c: from the next step's cell state; zeros at the last step)."""
    i, f, g, o = _split(activations, 4)
    tanh_c = np.tanh(c)
    dc = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    grad_gates = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                 dc * i * (1 - g * g), grad_h * tanh_c * o * (1 - o)], axis=-1)
    return grad_gates, dc * f


def gru_cell(gi, gh, h_prev):
    """(h, activations) of one GRU step: gi = x W_ih^T + b_ih and gh = h_prev W_hh^T + b_hh, both
    (B, 3H); r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
    h = (1 - z) * n + z * h_prev; activations (B, 3H) = (r, z, n)."""
    gi_r, gi_z, gi_n = _split(gi, 3)
    gh_r, gh_z, gh_n = _split(gh, 3)
    r = expit(gi_r + gh_r)
    z = expit(gi_z + gh_z)
    n = np.tanh(gi_n + r * gh_n)
    h = (1 - z) * n + z * h_prev  # (B, H)
    return h, np.concatenate([r, z, n], axis=-1)


def gru_cell_backward(grad_h, activations, gh, h_prev):
    """(grad_gi (B, 3H), grad_gh (B, 3H), grad_h_prev (B, H)) of gru_cell."""
    r, z, n = _split(activations, 3)
    gh_n = _split(gh, 3)[2]
    dn_pre = grad_h * (1 - z) * (1 - n * n)
    dr_pre = dn_pre * gh_n * r * (1 - r)
    dz_pre = grad_h * (h_prev - n) * z * (1 - z)
    grad_gi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    grad_gh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
    return grad_gi, grad_gh, grad_h * z


# ----------------------------------------------------------------------------
# Whole sequences: the loop over time steps around the cell kernels above, for one direction.
# gi holds x W_ih^T + biases for all steps (the caller's one product); each step adds
# h_prev W_hh^T. `reverse` runs from the last step to the first (a bidirectional layer's second
# direction). Results are stacked over time in the input's order (index t is step t).

def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def lstm_sequence(gi, w_hh, h0, c0, reverse):
    """(hs, cs (T, B, H), activations (T, B, 4H)) of an LSTM over gi (T, B, 4H) =
    x W_ih^T + b_ih + b_hh, from h0, c0 (B, H), with w_hh (4H, H)."""
    T = gi.shape[0]
    hs = np.empty(gi.shape[:2] + h0.shape[-1:], dtype=gi.dtype)
    cs, activations = np.empty_like(hs), np.empty_like(gi)
    h, c = h0, c0
    for t in _order(T, reverse):
        h, c, activations[t] = lstm_cell(gi[t] + h @ w_hh.T, c)
        hs[t], cs[t] = h, c
    return hs, cs, activations


def lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh, reverse):
    """(grad_gates (T, B, 4H), grad_h0, grad_c0 (B, H)) of lstm_sequence, given the gradients
    reaching every output h_t (T, B, H) and the final cell state (B, H)."""
    T = grad_hs.shape[0]
    grad_gates = np.empty_like(activations)
    grad_h = np.zeros_like(grad_hs[0])
    for t in _order(T, not reverse):
        t_prev = t + 1 if reverse else t - 1
        c_prev = c0 if t_prev in (-1, T) else cs[t_prev]
        grad_gates[t], grad_c = lstm_cell_backward(grad_hs[t] + grad_h, grad_c, activations[t],
                                                   c_prev, cs[t])
        grad_h = grad_gates[t] @ w_hh  # (B, H)
    return grad_gates, grad_h, grad_c


def gru_sequence(gi, w_hh, b_hh, h0, reverse):
    """(hs (T, B, H), gh (T, B, 3H) = h_prev W_hh^T + b_hh per step, activations (T, B, 3H)) of a
    GRU over gi (T, B, 3H) = x W_ih^T + b_ih; b_hh may be None."""
    T = gi.shape[0]
    hs = np.empty(gi.shape[:2] + h0.shape[-1:], dtype=gi.dtype)
    gh, activations = np.empty_like(gi), np.empty_like(gi)
    h = h0
    for t in _order(T, reverse):
        gh[t] = h @ w_hh.T if b_hh is None else h @ w_hh.T + b_hh
        h, activations[t] = gru_cell(gi[t], gh[t], h)
        hs[t] = h
    return hs, gh, activations


def gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse):
    """(grad_gi, grad_gh (T, B, 3H), grad_h0 (B, H)) of gru_sequence."""
    T = grad_hs.shape[0]
    grad_gi, grad_gh = np.empty_like(activations), np.empty_like(activations)
    grad_h = np.zeros_like(grad_hs[0])
    for t in _order(T, not reverse):
        t_prev = t + 1 if reverse else t - 1
        h_prev = h0 if t_prev in (-1, T) else hs[t_prev]
        grad_gi[t], grad_gh[t], direct = gru_cell_backward(grad_hs[t] + grad_h, activations[t],
                                                           gh[t], h_prev)
        grad_h = direct + grad_gh[t] @ w_hh
    return grad_gi, grad_gh, grad_h
