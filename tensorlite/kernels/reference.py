"""Reference kernels: the math of every hot operation, written in plain NumPy.

Each function here is the readable statement of what a kernel computes. The Numba
versions in ``jitted.py`` have the same names and signatures and must give the same
answers (``tests/test_kernels.py`` checks this); this module is also the kernel set
used when ``TENSORLITE_KERNELS=numpy``.

Conventions shared by every kernel:

* inputs and outputs are ``np.ndarray``; the floating dtype (float32 or float64) of
  the inputs is kept in the outputs;
* inputs may be non-contiguous views (slices with steps, transposes);
* nothing is modified in place except by ``adamw_step``, whose job is to update.
"""

import numpy as np


# ----------------------------------------------------------------------------
# matmul

def matmul(a, b):
    """Batched matrix product with ``np.matmul`` semantics.

    a: (..., M, K), b: (..., K, N) -> (..., M, N); the leading batch dimensions
    broadcast against each other.
    """
    return np.matmul(a, b)


def matmul_backward(grad, a, b):
    """Gradients of ``out = a @ b`` given ``grad = dL/dout``.

    grad: (batch..., M, N), a: (..., M, K), b: (..., K, N).
    Returns ``(grad_a, grad_b)``:
      grad_a = grad @ b^T   # (batch..., M, K)
      grad_b = a^T @ grad   # (batch..., K, N)
    both in the broadcast batch shape; the caller sums away broadcast dimensions.
    """
    grad_a = np.matmul(grad, np.swapaxes(b, -1, -2))
    grad_b = np.matmul(np.swapaxes(a, -1, -2), grad)
    return grad_a, grad_b


# ----------------------------------------------------------------------------
# linear layer: a matrix product with the weight transposed, plus a bias

def linear(x, weight, bias):
    """y = x @ weight^T + bias, as in torch.nn.functional.linear.

    x: (N, in), weight: (out, in), bias: (out,) or None. Returns (N, out).
    """
    y = np.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


def linear_backward(grad, x, weight):
    """Gradients of y = linear(x, weight, bias) given grad = dL/dy (N, out).

    Returns (grad_x, grad_weight, grad_bias):
      grad_x      = grad @ weight     # (N, in)
      grad_weight = grad^T @ x        # (out, in)
      grad_bias   = sum of grad rows  # (out,)
    """
    return np.matmul(grad, weight), np.matmul(grad.T, x), grad.sum(axis=0)


# ----------------------------------------------------------------------------
# softmax and log-softmax over the last axis

def softmax(x):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.

    Subtracting the row maximum changes nothing mathematically but keeps exp
    from overflowing.
    """
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, grad_y):
    """dL/dx for y = softmax(x): the Jacobian is diag(y) - y y^T, so

    grad_x = y * (grad_y - sum(grad_y * y, -1, keepdims))
    """
    dot = (grad_y * y).sum(axis=-1, keepdims=True)
    return y * (grad_y - dot)


def log_softmax(x):
    """y = x - logsumexp(x) over the last axis (stable: the max is factored out)."""
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, grad_y):
    """dL/dx for y = log_softmax(x): grad_x = grad_y - softmax(x) * sum(grad_y).

    softmax(x) is recovered from the saved output as exp(y).
    """
    return grad_y - np.exp(y) * grad_y.sum(axis=-1, keepdims=True)


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


# ----------------------------------------------------------------------------
# layer norm over the last axis of a 2-D input

def layer_norm(x, weight, bias, eps):
    """y = (x - mean) * rstd * weight + bias, row by row.

    x: (N, C); weight, bias: (C,) or None (meaning ones / zeros).
    mean = x.mean(-1), var = biased variance, rstd = 1 / sqrt(var + eps).
    Returns (y (N, C), mean (N,), rstd (N,)); mean and rstd are saved for backward.
    """
    mean = x.mean(axis=-1)
    centered = x - mean[:, None]
    var = (centered * centered).mean(axis=-1)
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    y = centered * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean, rstd


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """Gradients of layer_norm given grad_y (N, C) and the saved mean, rstd.

    With xhat = (x - mean) * rstd and g = grad_y * weight:
      grad_x      = rstd * (g - mean(g) - xhat * mean(g * xhat))   # per row
      grad_weight = sum over rows of grad_y * xhat                  # (C,)
      grad_bias   = sum over rows of grad_y                         # (C,)
    weight None means ones. Returns (grad_x, grad_weight, grad_bias).
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = grad_y if weight is None else grad_y * weight
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    grad_x = rstd[:, None] * (g - g_mean - xhat * gx_mean)
    grad_weight = (grad_y * xhat).sum(axis=0)
    grad_bias = grad_y.sum(axis=0)
    dtype = x.dtype
    return (grad_x.astype(dtype, copy=False), grad_weight.astype(dtype, copy=False),
            grad_bias.astype(dtype, copy=False))


# ----------------------------------------------------------------------------
# GELU, tanh approximation (as in GPT-2)

GELU_SCALE = np.sqrt(2.0 / np.pi)  # sqrt(2/pi)
GELU_CUBIC = 0.044715


def gelu(x):
    """y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    dtype = x.dtype.type
    inner = dtype(GELU_SCALE) * (x + dtype(GELU_CUBIC) * x * x * x)
    return dtype(0.5) * x * (dtype(1.0) + np.tanh(inner))


def gelu_backward(x, grad_y):
    """dL/dx for the tanh GELU. With u = sqrt(2/pi) (x + 0.044715 x^3), t = tanh(u):

    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """
    dtype = x.dtype.type
    inner = dtype(GELU_SCALE) * (x + dtype(GELU_CUBIC) * x * x * x)
    t = np.tanh(inner)
    d_inner = dtype(GELU_SCALE) * (dtype(1.0) + dtype(3.0 * GELU_CUBIC) * x * x)
    local = dtype(0.5) * (dtype(1.0) + t) + dtype(0.5) * x * (dtype(1.0) - t * t) * d_inner
    return grad_y * local


# ----------------------------------------------------------------------------
# cross-entropy over class logits

def _logsumexp_rows(logits):
    """Stable log(sum(exp(logits), -1)) per row; a row of all -inf gives -inf."""
    m = logits.max(axis=-1)
    safe_m = np.where(np.isfinite(m), m, 0).astype(logits.dtype, copy=False)
    with np.errstate(divide="ignore"):  # log(0) = -inf for all -inf rows
        return safe_m + np.log(np.exp(logits - safe_m[:, None]).sum(axis=-1))


def cross_entropy(logits, targets, ignore_index):
    """Mean negative log-likelihood of the target class.

    logits: (N, C), targets: (N,) integers. Rows whose target equals ignore_index
    do not count. Returns (loss, logsumexp): loss is a Python float, the mean over
    counted rows of logsumexp(row) - row[target] (nan when no row counts);
    logsumexp (N,) is saved for the backward pass.
    """
    lse = _logsumexp_rows(logits)
    counted = targets != ignore_index
    safe_targets = np.where(counted, targets, 0)  # any valid index; masked below
    target_logit = logits[np.arange(logits.shape[0]), safe_targets]
    with np.errstate(invalid="ignore"):  # ignored rows may be all -inf: -inf - -inf
        per_row = np.where(counted, lse - target_logit, 0.0)
    count = int(counted.sum())
    loss = float(per_row.sum(dtype=np.float64) / count) if count > 0 else float("nan")
    return loss, lse


def cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss):
    """dL/dlogits = (softmax(logits) - onehot(targets)) * grad_loss / count.

    softmax is rebuilt from the saved logsumexp; ignored rows get zero gradient.
    """
    counted = targets != ignore_index
    count = int(counted.sum())
    with np.errstate(invalid="ignore"):  # ignored rows may be all -inf; zeroed below
        grad = np.exp(logits - logsumexp[:, None])
    rows = np.nonzero(counted)[0]
    grad[rows, targets[rows]] -= 1.0
    grad[~counted] = 0.0
    if count > 0:
        grad *= grad_loss / count
    return grad.astype(logits.dtype, copy=False)


# ----------------------------------------------------------------------------
# embedding lookup backward

def embedding_backward(indices, grad, num_embeddings):
    """Scatter-add rows of grad into a (num_embeddings, D) table.

    indices: integer array of any shape; grad: indices.shape + (D,). Row
    grad[..., :] is added to grad_weight[indices[...]]; repeated indices
    accumulate (np.add.at is unbuffered, unlike fancy-index +=).
    """
    d = grad.shape[-1]
    grad_weight = np.zeros((num_embeddings, d), dtype=grad.dtype)
    np.add.at(grad_weight, indices.reshape(-1), grad.reshape(-1, d))
    return grad_weight


# ----------------------------------------------------------------------------
# AdamW optimizer update

def adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW update, in place, with PyTorch's semantics.

    All arrays are 1-D, same length (flat parameter buffers); step counts from 1.
      param      *= 1 - lr * weight_decay              (decoupled weight decay)
      exp_avg     = beta1 * exp_avg + (1 - beta1) * grad
      exp_avg_sq  = beta2 * exp_avg_sq + (1 - beta2) * grad^2
      param      -= lr / (1 - beta1^step) * exp_avg
                    / (sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps)
    Returns None.
    """
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    step_size = lr / bias_correction1
    param *= 1.0 - lr * weight_decay
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * grad * grad
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bias_correction2) + eps
    param -= step_size * exp_avg / denom
