"""Recurrent cell kernels, reference: the LSTM and GRU cell updates after the matrix products.

Contract shared with numba/rnn.py (the ops in tensorlite/ops/rnn.py call these through
tensorlite.kernels). The products x @ W_ih^T (for all time steps at once) and h @ W_hh^T (per
step) are done by the caller with BLAS; a cell kernel does the rest of one time step in one pass.
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
