"""Scaled dot-product attention and its backward pass."""

import numpy as np


# ----------------------------------------------------------------------------
# attention: softmax(q @ k^T * scale [causal mask]) @ v, without keeping the
# (Tq, Tk) attention matrix for backward

def _causal_mask(tq, tk):
    """Boolean (Tq, Tk) mask, True where query i may see key j.

    Queries are aligned to the END of the keys (as with a KV cache): query row i
    sits at absolute position i + Tk - Tq and sees keys j <= i + Tk - Tq.
    """
    offset = tk - tq
    rows = np.arange(tq)[:, None]
    cols = np.arange(tk)[None, :]
    return cols <= rows + offset


def _attention_probabilities(q, k, scale, is_causal, logsumexp=None):
    """(p, logsumexp): p = softmax over keys of the scaled (masked) scores."""
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)  # (..., Tq, Tk)
    if is_causal:
        scores = np.where(_causal_mask(*scores.shape[-2:]), scores, -np.inf)
    if logsumexp is None:
        row_max = scores.max(axis=-1, keepdims=True)  # finite: a row sees at least one key
        total = np.exp(scores - row_max).sum(axis=-1, keepdims=True)
        logsumexp = (row_max + np.log(total))[..., 0]
    return np.exp(scores - logsumexp[..., None]), logsumexp


def _check_attention(q, k, v, is_causal):
    """Raise ValueError unless q (..., Tq, D), k and v (..., Tk, D) fit together (and, when
    causal, Tq <= Tk). Both kernel sets call it."""
    if (q.ndim < 2 or k.shape != v.shape or q.shape[:-2] != k.shape[:-2]
            or q.shape[-1] != k.shape[-1]):
        raise ValueError(f"attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not fit "
                         f"together")
    if is_causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"attention: causal attention needs Tq <= Tk, got q {q.shape} and "
                         f"k {k.shape}")


def attention(q, k, v, scale, is_causal):
    """Scaled dot-product attention of queries q (..., Tq, D) over keys k and values v
    (..., Tk, D), same leading axes. With is_causal, query i sees keys j <= i + Tk - Tq
    (queries aligned to the end of the keys, Tq <= Tk).

    Returns (out (..., Tq, D), logsumexp (..., Tq)): logsumexp of each query's scaled,
    masked scores is all backward needs to rebuild the attention matrix from q and k.
    """
    _check_attention(q, k, v, is_causal)
    p, logsumexp = _attention_probabilities(q, k, scale, is_causal)
    out = np.matmul(p, v).astype(q.dtype, copy=False)
    return out, logsumexp.astype(q.dtype, copy=False)


def attention_backward(grad, q, k, v, logsumexp, scale, is_causal):
    """(grad_q, grad_k, grad_v) for out = attention(q, k, v, scale, is_causal)[0].

    With p the attention matrix (rebuilt from logsumexp) and dp = grad @ v^T, the
    softmax backward is ds = p * (dp - rowsum(p * dp)); the scores were q @ k^T * scale.
    """
    _check_attention(q, k, v, is_causal)
    p, _ = _attention_probabilities(q, k, scale, is_causal, logsumexp)  # (..., Tq, Tk)
    grad_v = np.matmul(np.swapaxes(p, -1, -2), grad)
    grad_p = np.matmul(grad, np.swapaxes(v, -1, -2))
    grad_scores = p * (grad_p - (p * grad_p).sum(axis=-1, keepdims=True)) * q.dtype.type(scale)
    grad_q = np.matmul(grad_scores, k)
    grad_k = np.matmul(np.swapaxes(grad_scores, -1, -2), q)
    return tuple(g.astype(q.dtype, copy=False) for g in (grad_q, grad_k, grad_v))
