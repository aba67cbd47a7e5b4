"""The neural-network ops behind `tensorlite.functional` (`F`): one fused op each.

Each is one fused op: a single graph node whose forward and backward call a kernel by name
(`kernels.softmax`, defined in `tensorlite/kernels/__init__.py`, which runs the active set), so a
softmax is one node with a one-pass backward, not a chain of exp, sum and divide nodes. The plain-NumPy statement of each formula is in
`tensorlite/kernels/numpy/`, beside its Numba twin in `tensorlite/kernels/numba/`.

Second derivatives. A fused backward kernel cannot be differentiated by the engine, so for
`create_graph=True` each op's backward is itself an op: `SoftmaxBackward`, `GeluBackward`, ...
whose forward is that same kernel (so the numbers are the same) and whose backward, beside it, is
written with differentiable operations. Backwards with several outputs (layer norm, linear,
attention) are instead written as a short composite of differentiable operations in that mode.
The plain first-order path calls the kernels directly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.special

from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.autograd.grad_mode import rng
from tensorlite.ops.arguments import _UNSET, either_keyword
from tensorlite.ops.elementwise import Exp, Tanh
from tensorlite.ops.index import MaskedFill
from tensorlite.tensor import Tensor

__all__ = [
    "softmax", "log_softmax", "gelu", "relu", "layer_norm", "embedding", "dropout", "linear",
    "scaled_dot_product_attention", "dropout2d",
]


def _along_last_axis(function, axis, *arrays):
    """Apply a last-axis kernel along any axis by moving that axis last and back."""
    if axis in (-1, arrays[0].ndim - 1):
        return function(*arrays)
    moved = [np.moveaxis(a, axis, -1) for a in arrays]
    return np.moveaxis(function(*moved), -1, axis)


class Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        y = _along_last_axis(kernels.softmax, axis, x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (SoftmaxBackward.run(y, grad, axis=self.axis),)


class SoftmaxBackward(Function):
    """dx = y * (dy - sum(dy * y)) along the axis, with y = softmax(x): one pass per row in the
    kernel, and differentiable in turn."""

    def forward(self, y, grad, axis=-1):
        self.axis = axis
        self.save_for_backward(y, grad)
        return _along_last_axis(kernels.softmax_backward, axis, y, grad)

    def backward(self, g):
        # With s = sum(dy * y): d dx_i = g_i, so d/d dy = y * (g - sum(g * y)) and
        # d/dy = g * (dy - s) - dy * sum(g * y).
        y, grad = self.saved
        g_dot_y = (g * y).sum(axis=self.axis, keepdims=True)
        s = (grad * y).sum(axis=self.axis, keepdims=True)
        return g * (grad - s) - grad * g_dot_y, y * (g - g_dot_y)


def softmax(x, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim` (or `axis`; default the last), computed stably (the row
    maximum is subtracted)."""
    return Softmax.apply(x, axis=either_keyword("softmax", "dim", dim, "axis", axis, -1))


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        y = _along_last_axis(kernels.log_softmax, axis, x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        y, = self.saved
        return (LogSoftmaxBackward.run(y, grad, axis=self.axis),)


class LogSoftmaxBackward(Function):
    """dx = dy - exp(y) * sum(dy), with y = log_softmax(x)."""

    def forward(self, y, grad, axis=-1):
        self.axis = axis
        self.save_for_backward(y, grad)
        return _along_last_axis(kernels.log_softmax_backward, axis, y, grad)

    def backward(self, g):
        # p = exp(y): d/d dy = g - sum(g * p), d/dy = -g * p * sum(dy).
        y, grad = self.saved
        p = Exp.run(y)
        return (-g * p * grad.sum(axis=self.axis, keepdims=True),
                g - (g * p).sum(axis=self.axis, keepdims=True))


def log_softmax(x, dim=_UNSET, *, axis=_UNSET) -> Tensor:
    """x - logsumexp(x) along `dim` (or `axis`; default the last)."""
    return LogSoftmax.apply(x, axis=either_keyword("log_softmax", "dim", dim, "axis", axis, -1))


class CrossEntropy(Function):
    """Mean of -log softmax(logits)[target] over rows whose target is not `ignore_index`."""

    def forward(self, logits, targets, ignore_index=-100):
        self.targets, self.ignore_index = targets, ignore_index
        loss, self.logsumexp = kernels.cross_entropy(logits, targets, ignore_index)
        self.save_for_backward(logits)
        return np.asarray(loss, dtype=logits.dtype)

    def backward(self, grad):
        logits, = self.saved
        if isinstance(grad, Tensor):  # create_graph: the backward as a differentiable op
            return (CrossEntropyBackward.apply(logits, grad, targets=self.targets,
                                               ignore_index=self.ignore_index),)
        # d loss / d logits = (softmax(logits) - onehot(target)) / count, fused in one kernel.
        return (kernels.cross_entropy_backward(
            logits, self.targets, self.logsumexp, self.ignore_index, float(grad)),)


class CrossEntropyBackward(Function):
    """d loss / d logits = grad * (softmax(logits) - onehot(target)) / count on rows whose target
    is not ignored (the same kernel as the plain backward), as a differentiable op."""

    def forward(self, logits, grad, targets, ignore_index):
        self.save_for_backward(logits, grad)
        valid = targets != ignore_index
        self.row_weight = (valid / max(int(valid.sum()), 1)).astype(logits.dtype)[:, None]
        self.onehot = np.zeros_like(logits)
        self.onehot[np.nonzero(valid)[0], targets[valid]] = 1
        _, logsumexp = kernels.cross_entropy(logits, targets, ignore_index)
        return kernels.cross_entropy_backward(logits, targets, logsumexp, ignore_index,
                                                      float(grad))

    def backward(self, g):
        # With p = softmax(logits): d/d logits = grad * w * p * (g - sum(g * p)) per row,
        # d/d grad = sum(g * w * (p - onehot)).
        logits, grad = self.saved
        p = Softmax.run(logits, axis=-1)
        weighted = g * self.row_weight
        grad_logits = grad * p * (weighted - (weighted * p).sum(axis=-1, keepdims=True))
        return grad_logits, (weighted * (p - self.onehot)).sum()


_GELU_C = math.sqrt(2.0 / math.pi)


class Gelu(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return kernels.gelu(x)

    def backward(self, grad):
        x, = self.saved
        return (GeluBackward.run(x, grad),)


class GeluBackward(Function):
    """dx = dy * gelu'(x), as a differentiable op (forward: the fused kernel)."""

    def forward(self, x, grad):
        self.save_for_backward(x, grad)
        return kernels.gelu_backward(x, grad)

    def backward(self, g):
        # gelu(x) = x/2 (1 + t), t = tanh(u), u = c (x + 0.044715 x^3), so with u' = du/dx:
        # gelu'(x)  = (1 + t)/2 + x/2 (1 - t^2) u'
        # gelu''(x) = (1 - t^2) u' + x/2 (1 - t^2) (u'' - 2 t u'^2)
        x, grad = self.saved
        x_squared = x * x
        t = Tanh.run(x * (_GELU_C + (_GELU_C * 0.044715) * x_squared))  # tanh(u)
        du = _GELU_C + (3 * _GELU_C * 0.044715) * x_squared  # u'
        sech2 = 1 - t * t
        half_x_sech2 = (0.5 * x) * sech2
        first = 0.5 + 0.5 * t + half_x_sech2 * du
        second = sech2 * du + half_x_sech2 * ((6 * _GELU_C * 0.044715) * x - 2 * t * du * du)
        return (g * grad) * second, g * first


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class NormalCdf(Function):
    """Phi(x), the standard normal CDF; d/dx = phi(x). An op of its own so that the exact GELU's
    backward, written with it, can be differentiated again."""

    def forward(self, x):
        self.save_for_backward(x)
        return scipy.special.ndtr(x).astype(x.dtype, copy=False)

    def backward(self, grad):
        x, = self.saved
        return (grad * (Exp.run(-0.5 * (x * x)) * _INV_SQRT_2PI),)


class GeluErf(Function):
    """The exact GELU, x Phi(x) (torch's default, approximate="none")."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * NormalCdf.run(x)

    def backward(self, grad):
        x, = self.saved
        return (GeluErfBackward.run(x, grad),)


class GeluErfBackward(Function):
    """dx = dy * (Phi(x) + x phi(x)), as a differentiable op, so that a create_graph backward
    of the exact GELU records it and its own backward (below) gives the second derivative."""

    def forward(self, x, grad):
        self.save_for_backward(x, grad)
        phi = np.exp(-0.5 * (x * x)) * x.dtype.type(_INV_SQRT_2PI)
        return grad * (NormalCdf.run(x) + x * phi)

    def backward(self, g):
        # gelu'(x) = Phi(x) + x phi(x),  gelu''(x) = phi(x) (2 - x^2)
        x, grad = self.saved
        x_squared = x * x
        phi = Exp.run(-0.5 * x_squared) * _INV_SQRT_2PI
        first = NormalCdf.run(x) + x * phi
        return (g * grad) * (phi * (2 - x_squared)), g * first


def gelu(input, approximate="none") -> Tensor:
    """GELU as torch's `F.gelu`: with approximate="none" (the default) the exact x Phi(x), Phi
    the standard normal CDF; with approximate="tanh" GPT-2's
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), one fused kernel."""
    if approximate == "tanh":
        return Gelu.apply(input)
    if approximate == "none":
        return GeluErf.apply(input)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def relu(x) -> Tensor:
    return x.relu()


class LayerNorm(Function):
    """Normalise over the last axis, then scale and shift; forward and backward are fused."""

    def forward(self, x, weight, bias, eps=1e-5):
        self.eps = eps
        self.save_for_backward(x, weight)
        y, self.mean, self.rstd = kernels.layer_norm(
            x.reshape(-1, x.shape[-1]), weight, bias, eps)  # rows: (N, C)
        return y.reshape(x.shape)

    def backward(self, grad):
        x, weight = self.saved
        if isinstance(grad, Tensor):  # create_graph
            return _layer_norm_backward_composite(grad, x, weight, self.eps)
        rows = x.reshape(-1, x.shape[-1])
        grad_x, grad_weight, grad_bias = kernels.layer_norm_backward(
            grad.reshape(rows.shape), rows, weight, self.mean, self.rstd)
        return grad_x.reshape(x.shape), grad_weight, grad_bias


def _layer_norm_backward_composite(grad, x, weight, eps):
    """The layer-norm backward in differentiable operations (the kernel's formula):
    xhat = (x - mean) * rstd,  dxhat = dy * w,
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
    dw = sum over rows of dy * xhat,  db = sum over rows of dy."""
    centered = x - x.mean(axis=-1, keepdims=True)
    rstd = ((centered * centered).mean(axis=-1, keepdims=True) + eps) ** -0.5
    xhat = centered * rstd
    grad_xhat = grad * weight
    grad_x = rstd * (grad_xhat - grad_xhat.mean(axis=-1, keepdims=True)
                     - xhat * (grad_xhat * xhat).mean(axis=-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return grad_x, (grad * xhat).sum(axis=rows), grad.sum(axis=rows)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    """As torch's `F.layer_norm`: (x - mean) / sqrt(var + eps) * weight + bias, the mean and the
    (biased) variance taken over the trailing dimensions `normalized_shape` (an int or a
    tuple matching the end of the input's shape); `weight` and `bias` have that shape."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(n) for n in normalized_shape)
    k = len(normalized_shape)
    if k == 0 or tuple(input.shape[input.ndim - k:]) != normalized_shape or k > input.ndim:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} does not match the "
                         f"trailing dimensions of input shape {tuple(input.shape)}")
    if k > 1:  # one fused op over the last axis: flatten the normalized dimensions into it
        lead = tuple(input.shape[:input.ndim - k])
        flat = [t.reshape(-1) if t is not None else None for t in (weight, bias)]
        for name, parameter in (("weight", weight), ("bias", bias)):
            if parameter is not None and tuple(parameter.shape) != normalized_shape:
                raise ValueError(f"layer_norm: {name} of shape {tuple(parameter.shape)} does "
                                 f"not match normalized_shape {normalized_shape}")
        out = _layer_norm_last(input.reshape(lead + (-1,)), flat[0], flat[1], eps)
        return out.reshape(tuple(input.shape))
    return _layer_norm_last(input, weight, bias, eps)


def _layer_norm_last(x, weight, bias, eps) -> Tensor:
    size = x.shape[-1]
    dtype = x.dtype
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and tuple(parameter.shape) != (size,):
            raise ValueError(f"layer_norm: {name} of shape {tuple(parameter.shape)} does not "
                             f"match the last axis of input shape {tuple(x.shape)}")
    if weight is None:
        weight = Tensor._make(np.ones(size, dtype=dtype), False)
    if bias is None:
        bias = Tensor._make(np.zeros(size, dtype=dtype), False)
    return LayerNorm.apply(x, weight, bias, eps=eps)


class Embedding(Function):
    def forward(self, weight, indices, keep=None):
        self.indices, self.num_embeddings, self.keep = indices, weight.shape[0], keep
        return weight[indices]

    def backward(self, grad):
        if self.keep is not None:  # padding_idx: its positions send no gradient to the row
            grad = grad * self.keep
        return (EmbeddingBackward.run(grad, indices=self.indices,
                                      num_embeddings=self.num_embeddings),)


class EmbeddingBackward(Function):
    """Rows picked several times receive the sum of their gradients (a scatter-add kernel). Its
    own backward picks the same rows again."""

    def forward(self, grad, indices, num_embeddings):
        self.indices = indices
        return kernels.embedding_backward(indices, grad, num_embeddings)

    def backward(self, g):
        return (Embedding.run(g, indices=self.indices),)


def _padding_index(padding_idx, num_embeddings, where):
    """torch's rule: padding_idx in [-num_embeddings, num_embeddings), negatives from the end."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
            or not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{where}: padding_idx must be an integer in [-{num_embeddings}, "
                         f"{num_embeddings}), got {padding_idx!r}")
    return int(padding_idx) % num_embeddings


def embedding(input, weight, padding_idx=None) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by integer indices `input` of any shape, as
    torch's `F.embedding`; positions holding `padding_idx` contribute no gradient to its row."""
    indices = np.asarray(input.data if isinstance(input, Tensor) else input)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= weight.shape[0]):
        raise IndexError(f"embedding: indices must lie in [0, {weight.shape[0]}), got values "
                         f"in [{indices.min()}, {indices.max()}]")
    padding_idx = _padding_index(padding_idx, weight.shape[0], "embedding")
    if padding_idx is None:
        return Embedding.apply(weight, indices=indices)
    keep = (indices != padding_idx)[..., None].astype(weight.dtype)  # (..., 1)
    return Embedding.apply(weight, indices=indices, keep=keep)


class Dropout(Function):
    def forward(self, x, keep_mask, scale):
        self.mask = keep_mask * np.asarray(scale, dtype=x.dtype)  # 0 or 1/(1-p): a constant
        return x * self.mask

    def backward(self, grad):
        return (grad * self.mask,)


def dropout(x, p=0.5, training=True) -> Tensor:
    """Zero each element with probability p and scale the survivors by 1/(1-p) while training;
    the identity in eval mode or when p == 0."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep_mask = rng().random(x.shape) >= p
    return Dropout.apply(x, keep_mask=keep_mask, scale=1.0 / (1.0 - p))


def dropout2d(input, p=0.5, training=True, inplace=False) -> Tensor:
    """As torch's `F.dropout2d`: zero whole channels of an (N, C, H, W) input with probability p,
    scaling the kept ones by 1/(1-p), while training. One draw per channel, broadcast over H and
    W by the same Dropout op as `dropout`. A 3-D input is read as torch 2 reads it, (N, C, L)
    with one draw per (n, c) row, and with torch's warning that this will change."""
    if inplace:
        raise ValueError("dropout2d: inplace=True is not supported; use the returned tensor")
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D (N, C, L) or 4-D (N, C, H, W) input, got "
                         f"shape {tuple(input.shape)}")
    if not 0 <= p <= 1:
        raise ValueError(f"dropout2d: p must be in [0, 1], got {p}")
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
                      "1D dropout behavior is desired - input is interpreted as shape (N, C, L), "
                      "where C is the channel dim. This behavior will change in a future release "
                      "to interpret the input as one without a batch dimension, i.e. shape "
                      "(C, H, W)", UserWarning, stacklevel=2)
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    keep_mask = rng().random(input.shape[:2] + (1,) * (input.ndim - 2)) >= p  # (N, C, 1[, 1])
    return Dropout.apply(input, keep_mask=keep_mask, scale=1.0 / (1.0 - p))


class Linear(Function):
    """x @ weight.T + bias with weight in PyTorch's (out, in) layout. Leading axes of x are
    folded into rows, so each product is one 2-D matrix multiply; BLAS reads the transposed
    weight (and, in backward, the transposed gradient) in place instead of a copy, and the bias
    is added to each block of the output while it is still in cache."""

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                             f"{weight.shape} (expected last axis {weight.shape[1]})")
        self.save_for_backward(x, weight)
        out = kernels.linear(x.reshape(-1, x.shape[-1]), weight, bias)  # (N, out)
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        x, weight = self.saved
        needs_x, needs_weight = self.needs_input_grad[:2]
        needs_bias = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        grad = grad.reshape((-1, grad.shape[-1]))  # (N, out)
        rows = x.reshape((-1, x.shape[-1]))  # (N, in)
        if not isinstance(grad, Tensor) and needs_x and needs_weight:
            # The usual case: both products in one parallel launch.
            grad_x, grad_weight, grad_bias = kernels.linear_backward(grad, rows, weight)
            return grad_x.reshape(x.shape), grad_weight, grad_bias if needs_bias else None
        # create_graph: `@` records MatMul ops; otherwise call the kernel directly.
        matmul = (lambda a, b: a @ b) if isinstance(grad, Tensor) else kernels.matmul
        grad_x = matmul(grad, weight).reshape(x.shape) if needs_x else None
        grad_weight = matmul(grad.T, rows) if needs_weight else None  # (out, in)
        grad_bias = grad.sum(axis=0) if needs_bias else None
        return grad_x, grad_weight, grad_bias


def linear(x, weight, bias=None) -> Tensor:
    """x @ weight.T + bias, weight of shape (out_features, in_features)."""
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)


class ScaledDotProductAttention(Function):
    """softmax(q @ k^T * scale [+ causal mask]) @ v as one node. With `is_causal`, the queries
    are the LAST Tq positions of the Tk keys, so one new query attends to a whole KV cache.

    Like FlashAttention, it does not keep the (Tq, Tk) attention matrix for backward, which
    would be the largest activation of a GPT: it keeps each query's logsumexp (Tq numbers), and
    backward rebuilds the matrix from q, k and those, one extra q @ k^T for memory linear in T.
    The output is stored as (B, Tq, nh, hs) behind its (B, nh, Tq, hs) shape, so the usual
    `y.transpose(1, 2).reshape(B, T, C)` that merges the heads afterwards copies nothing."""

    def forward(self, q, k, v, is_causal=False, scale=None):
        self.save_for_backward(q, k, v)
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        self.is_causal = is_causal
        out, self.logsumexp = kernels.attention(q, k, v, self.scale, is_causal)
        return out  # (B, nh, Tq, hs)

    def _attention_composite(self, q, k):
        """The attention matrix from differentiable operations (create_graph)."""
        scores = (q @ k.swapaxes(-1, -2)) * self.scale  # (B, nh, Tq, Tk)
        if self.is_causal:
            Tq, Tk = scores.shape[-2:]
            # query i is position Tk - Tq + i and sees keys up to it
            above = np.triu(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq + 1)
            scores = MaskedFill.apply(scores, mask=above, value=-np.inf)
        return Softmax.apply(scores, axis=-1)

    def backward(self, grad):
        q, k, v = self.saved
        if isinstance(grad, Tensor):  # create_graph: the same products, recorded
            attention = self._attention_composite(q, k)
            grad_v = attention.swapaxes(-1, -2) @ grad
            grad_scores = SoftmaxBackward.apply(attention, grad @ v.swapaxes(-1, -2)) * self.scale
            return grad_scores @ k, grad_scores.swapaxes(-1, -2) @ q, grad_v
        return kernels.attention_backward(grad, q, k, v, self.logsumexp, self.scale,
                                                  self.is_causal)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None) -> Tensor:
    """As torch's `F.scaled_dot_product_attention`: queries (..., Tq, hs) over keys and values
    (..., Tk, hs). With `is_causal=True` (not the default, as in PyTorch) query i is position
    Tk - Tq + i and sees keys up to it, which needs Tq <= Tk. The scale defaults to 1/sqrt(hs).
    `attn_mask` (broadcastable to (..., Tq, Tk)) is boolean (True = may attend) or a float
    mask added to the scores; `dropout_p` drops attention weights (training code passes it
    only in training, as with torch). A mask or dropout takes the composite path of
    differentiable operations instead of the fused kernel."""
    q, k, v = query, key, value
    if q.shape[:-2] != k.shape[:-2] or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)} do not fit together")
    if is_causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: causal attention needs Tq <= Tk, got "
                         f"q {tuple(q.shape)} and k {tuple(k.shape)}")
    if attn_mask is None and not dropout_p:
        return ScaledDotProductAttention.apply(q, k, v, is_causal=is_causal, scale=scale)
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal, "
                         "not both (as torch)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (..., Tq, Tk)
    Tq, Tk = scores.shape[-2:]
    if is_causal:
        attn_mask = ~np.triu(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq + 1)
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        if mask.dtype == np.bool_:
            scores = MaskedFill.apply(scores, mask=np.broadcast_to(~mask, scores.shape),
                                      value=-np.inf)
        else:
            scores = scores + attn_mask
    attention = Softmax.apply(scores, axis=-1)
    if dropout_p:
        attention = dropout(attention, dropout_p, True)
    return attention @ v
