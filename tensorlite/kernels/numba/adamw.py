"""AdamW as one flat parallel loop.

The Numba twin of ``tensorlite/kernels/numpy/adamw.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import math

import numpy as np
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _is_float


# ----------------------------------------------------------------------------
# AdamW
# reference: reference.adamw_step
#
# One flat parallel loop reads each of param, grad, exp_avg, exp_avg_sq once and
# writes three of them once, instead of NumPy's dozen passes and temporaries.

@njit(parallel=True, **_OPTS)
def _adamw_step(param, grad, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2,
                one_minus_beta2, eps, decay, step_size, inv_sqrt_bias_correction2):
    for i in prange(param.shape[0]):
        g = grad[i]
        m = beta1 * exp_avg[i] + one_minus_beta1 * g
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        denom = np.sqrt(v) * inv_sqrt_bias_correction2 + eps
        param[i] = param[i] * decay - step_size * m / denom


def adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One in-place AdamW update of flat buffers -- see reference.adamw_step."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if not (_is_float(*arrays) and all(a.dtype == param.dtype and a.ndim == 1
                                       and a.shape == param.shape
                                       and a.flags.c_contiguous for a in arrays)
            and all(a.flags.writeable for a in (param, exp_avg, exp_avg_sq))):
        return reference.adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps,
                                    weight_decay, step)
    as_dtype = param.dtype.type
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    # 1 - beta in float64, then rounded (as the reference and PyTorch do): in float32,
    # 1 - float32(0.9999) is off by 1e-3 relative, and so would be every step's v.
    _adamw_step(param, grad, exp_avg, exp_avg_sq, as_dtype(beta1), as_dtype(1.0 - beta1),
                as_dtype(beta2), as_dtype(1.0 - beta2), as_dtype(eps),
                as_dtype(1.0 - lr * weight_decay), as_dtype(lr / bias_correction1),
                as_dtype(1.0 / math.sqrt(bias_correction2)))
    return None
