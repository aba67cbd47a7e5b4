"""Matrix products and the linear layer, as BLAS calls run from parallel loops.

The Numba twin of ``tensorlite/kernels/numpy/matmul.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import math
from functools import lru_cache

import numpy as np
import numba
from numba import njit, prange

from .. import numpy as reference
from ._common import _OPTS, _flat, _is_float
from ._gemm import (SMALL_MATMUL, _T_C, _T_M, _T_N, _TASK_WIDTH, _NO_TRANS, _TRANS,
                    _batch_shape, _blas_constants, _blas_operand, _concatenated, _gemm,
                    _matmul_supported, _pieces, _run_gemm_task, _run_gemms)


# ----------------------------------------------------------------------------
# matmul
# reference: reference.matmul, reference.matmul_backward
#
# The task tables and the BLAS calls they describe are in _gemm.py.

def matmul(a, b):
    """a @ b (np.matmul semantics) -- see reference.matmul."""
    if not _matmul_supported(a, b):
        return np.matmul(a, b)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = _batch_shape(a, b)
    n_items = math.prod(batch)
    if n_items * m * n * k < SMALL_MATMUL or n_items * m * n == 0:
        return np.matmul(a, b)
    out = np.empty(batch + (m, n), dtype=a.dtype)
    threads = numba.get_num_threads()
    tasks, bases, keep = _gemm(a, b, out, _pieces(n_items, threads))
    _run_gemms(tasks, [bases], out.dtype, parallel=threads > 1)
    return out


def matmul_backward(grad, a, b):
    """(grad @ b^T, a^T @ grad) in the broadcast batch shape -- see
    reference.matmul_backward. Both products run in one parallel launch."""
    if not (_matmul_supported(a, b) and _is_float(grad) and grad.dtype == a.dtype):
        return reference.matmul_backward(grad, a, b)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = grad.shape[:-2]
    n_items = math.prod(batch)
    if n_items * m * n * k < SMALL_MATMUL or n_items * m * n * k == 0:
        return reference.matmul_backward(grad, a, b)
    grad_a = np.empty(batch + (m, k), dtype=a.dtype)
    grad_b = np.empty(batch + (k, n), dtype=a.dtype)
    threads = numba.get_num_threads()
    pieces = _pieces(2 * n_items, threads)
    tasks_a, bases_a, keep_a = _gemm(grad, np.swapaxes(b, -1, -2), grad_a, pieces, 0)
    tasks_b, bases_b, keep_b = _gemm(np.swapaxes(a, -1, -2), grad, grad_b, pieces, 1)
    _run_gemms(_concatenated(tasks_a, tasks_b), [bases_a, bases_b], a.dtype,
               parallel=threads > 1)
    return grad_a, grad_b


# ----------------------------------------------------------------------------
# linear
# reference: reference.linear, reference.linear_backward
#
# Forward: the rows of x are cut into one block per thread; each thread runs BLAS on
# its block (x_block @ weight^T, the transpose being BLAS's 't' flag) and adds the bias
# to the block of output it just wrote, while that block is still in cache.
# Backward: the rows of grad and x are cut into blocks, one per thread (fewer when there are
# few rows), and a block's thread computes everything that block contributes: its rows of
# grad_x = grad @ weight, a partial grad_weight = grad_block^T @ x_block, and a partial bias
# gradient (the block's rows of grad summed while they are in cache). The partials are then
# added in block order. So a thread reads only its own rows of grad and x -- the rows the
# forward pass and the row-wise kernels gave it too -- instead of every thread reading all
# of grad, as splitting grad_weight's rows among the threads did (shakespeare-cpu's
# linear_backward 0-3% faster in step-by-step alternation, gpt-mini's unchanged; the price
# is one n x k partial per extra thread and its sum).

@njit(parallel=True, **_OPTS)
def _gemm_tasks_bias_parallel(tasks, bases, kind, alpha, beta, bias, out):
    row_bytes = out.shape[1] * out.itemsize
    for t in prange(tasks.shape[0]):
        _run_gemm_task(tasks, t, bases, kind, alpha, beta)
        # The block this task wrote: rows [r0, r0 + m), columns [c0, c0 + n).
        r0 = tasks[t, _T_C] // row_bytes
        c0 = (tasks[t, _T_C] - r0 * row_bytes) // out.itemsize
        block_bias = bias[c0:c0 + tasks[t, _T_N]]
        for r in range(r0, r0 + tasks[t, _T_M]):
            row = out[r, c0:c0 + tasks[t, _T_N]]
            for j in range(row.shape[0]):
                row[j] += block_bias[j]


def _linear_supported(x, weight, bias):
    return (_matmul_supported(x, weight.T) and x.ndim == 2 and weight.ndim == 2
            and (bias is None or (_is_float(bias) and bias.dtype == x.dtype
                                  and bias.shape == (weight.shape[0],))))


def linear(x, weight, bias):
    """x @ weight^T + bias -- see reference.linear."""
    if not _linear_supported(x, weight, bias):
        return reference.linear(x, weight, bias)
    (m, k), n = x.shape, weight.shape[0]
    if m * n * k < SMALL_MATMUL or m * n == 0:
        return reference.linear(x, weight, bias)
    out = np.empty((m, n), dtype=x.dtype)
    threads = numba.get_num_threads()
    tasks, bases, keep = _gemm(x, weight.T, out, threads)
    if bias is None:
        _run_gemms(tasks, [bases], out.dtype, parallel=threads > 1)
        return out
    _gemm_tasks_bias_parallel(tasks, np.array([bases], np.int64), *_blas_constants(out.dtype),
                              _flat(bias), out)
    return out


@njit(parallel=True, **_OPTS)
def _linear_backward_blocks(tasks, bases, kind, alpha, beta, grad, bias_rows, partial_bias,
                            grad_weight, partial_weight, grad_bias):
    for t in prange(tasks.shape[0]):
        _run_gemm_task(tasks, t, bases, kind, alpha, beta)
        partial = partial_bias[t]
        partial[:] = 0
        for r in range(bias_rows[t, 0], bias_rows[t, 1]):  # none for grad_weight tasks
            row = grad[r]
            for j in range(row.shape[0]):
                partial[j] += row[j]
    # Block 0 wrote its grad_weight straight into grad_weight, blocks 1.. into partial_weight.
    for i in prange(grad_weight.shape[0]):
        row = grad_weight[i]
        for block in range(partial_weight.shape[0]):
            extra = partial_weight[block, i]
            for j in range(row.shape[0]):
                row[j] += extra[j]
    grad_bias[:] = 0
    for t in range(tasks.shape[0]):
        grad_bias += partial_bias[t]


# A row block of linear_backward has at least this many rows: below it, a partial
# grad_weight (n x k) and its sum cost more than the rows it spares a thread.
LINEAR_BACKWARD_MIN_BLOCK_ROWS = 64


@lru_cache(maxsize=256)
def _linear_backward_plan(m, n, k, blocks, itemsize, x_trans, ldx, x_row_step, weight_trans,
                          ldw):
    """Task table for linear_backward over `blocks` row blocks, in the order x0 w0 x1 w1 ...
    (so each thread's static, contiguous share of the loop holds both tasks of a block), and
    for each task the rows of grad whose bias sum it adds (its block's, for the grad_x task).

    Operand sets: 0 = (grad, weight, grad_x), 1 = (grad, x, grad_weight) for block 0,
    2 = (grad, x, partial_weight) for the other blocks (one n x k slot each)."""
    bounds = [round(i * m / blocks) for i in range(blocks + 1)]
    tasks = np.empty((2 * blocks, _TASK_WIDTH), dtype=np.int64)
    bias_rows = np.zeros((2 * blocks, 2), dtype=np.int64)
    for block in range(blocks):
        start, stop = bounds[block], bounds[block + 1]
        grad_rows = start * n * itemsize  # grad is C-contiguous
        # grad_x[start:stop] = grad[start:stop] @ weight
        tasks[2 * block] = (0, _NO_TRANS, weight_trans, stop - start, k, n, grad_rows, n,
                            0, ldw, start * k * itemsize, k)
        bias_rows[2 * block] = (start, stop)
        # grad_weight (or its partial) = grad[start:stop]^T @ x[start:stop]
        tasks[2 * block + 1] = (1 if block == 0 else 2, _TRANS, x_trans, n, k, stop - start,
                                grad_rows, n, start * x_row_step,
                                ldx, 0 if block == 0 else (block - 1) * n * k * itemsize, k)
    tasks.flags.writeable = False
    bias_rows.flags.writeable = False
    return tasks, bias_rows


def linear_backward(grad, x, weight):
    """(grad @ weight, grad^T @ x, grad summed over rows) -- see reference.linear_backward."""
    if not (_linear_supported(x, weight, None) and _is_float(grad) and grad.dtype == x.dtype
            and grad.shape == (x.shape[0], weight.shape[0])):
        return reference.linear_backward(grad, x, weight)
    (m, k), n = x.shape, weight.shape[0]
    if m * n * k < SMALL_MATMUL or m * n * k == 0:
        return reference.linear_backward(grad, x, weight)
    grad = np.ascontiguousarray(grad)  # the blocks and the bias sum read its rows
    x, x_trans, ldx = _blas_operand(x)
    weight, weight_trans, ldw = _blas_operand(weight)
    blocks = max(1, min(numba.get_num_threads(), m // LINEAR_BACKWARD_MIN_BLOCK_ROWS))
    tasks, bias_rows = _linear_backward_plan(m, n, k, blocks, x.itemsize, x_trans, ldx,
                                             x.strides[0], weight_trans, ldw)
    grad_x = np.empty((m, k), dtype=x.dtype)
    grad_weight = np.empty((n, k), dtype=x.dtype)
    partial_weight = np.empty((blocks - 1, n, k), dtype=x.dtype)
    partial_bias = np.empty((len(tasks), n), dtype=x.dtype)
    grad_bias = np.empty(n, dtype=x.dtype)
    bases = np.array([(grad.ctypes.data, weight.ctypes.data, grad_x.ctypes.data),
                      (grad.ctypes.data, x.ctypes.data, grad_weight.ctypes.data),
                      (grad.ctypes.data, x.ctypes.data, partial_weight.ctypes.data)], np.int64)
    _linear_backward_blocks(tasks, bases, *_blas_constants(x.dtype), grad, bias_rows,
                            partial_bias, grad_weight, partial_weight, grad_bias)
    return grad_x, grad_weight, grad_bias
