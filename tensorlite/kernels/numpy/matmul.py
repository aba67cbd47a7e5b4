"""Matrix products: ``matmul`` (batched, broadcasting) and ``linear`` (x @ W^T + b)."""

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
