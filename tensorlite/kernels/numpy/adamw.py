"""The AdamW optimizer update, in place."""

import numpy as np


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
