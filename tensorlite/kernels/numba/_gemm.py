"""Matrix products handed to BLAS as tables of independent gemm tasks.

BLAS (SciPy's OpenBLAS, the one Numba links against) does the arithmetic. What is
tuned is how the work is handed to it: a product is cut into independent gemm calls
-- one per batch item, or row/column blocks of a 2-D product, or the two products of
a backward pass -- and a prange loop runs them on Numba's threads with BLAS on one
thread each. Operands are passed with their own strides (a transposed view is just
a 't' flag for BLAS), so nothing is copied. matmul.py and attention.py use this.
"""

import math
from functools import lru_cache

import numpy as np
from numba import njit, prange, types

from ._common import _FLOATS, _OPTS, _is_float


_gemm_type = types.intc(types.char, types.char, types.char,           # kind, transa, transb
                        types.intp, types.intp, types.intp,           # m, n, k
                        types.intp, types.intp, types.intp,           # alpha*, a*, lda
                        types.intp, types.intp, types.intp,           # b*, ldb, beta*
                        types.intp, types.intp)                       # c*, ldc
# Numba's own wrapper around the BLAS ?gemm (column-major, Fortran convention).
_xxgemm = types.ExternalFunction("numba_xxgemm", _gemm_type)

# One row of a task table describes one row-major product C = op(A) @ op(B). Pointers
# are stored as byte offsets from the base addresses of operand set _T_SET (one set per
# product of a call; matmul_backward has two), so a table depends only on shapes and
# strides and can be cached.
_T_SET, _T_TRANS_A, _T_TRANS_B, _T_M, _T_N, _T_K = 0, 1, 2, 3, 4, 5
_T_A, _T_LDA, _T_B, _T_LDB, _T_C, _T_LDC = 6, 7, 8, 9, 10, 11
_TASK_WIDTH = 12
_NO_TRANS, _TRANS = ord("n"), ord("t")
_BLAS_KIND = {np.dtype(np.float32): np.int8(ord("s")), np.dtype(np.float64): np.int8(ord("d"))}
_ONE = {dt: np.ones(1, dt) for dt in _FLOATS}
_ZERO = {dt: np.zeros(1, dt) for dt in _FLOATS}
_ONE_PTR = {dt: a.ctypes.data for dt, a in _ONE.items()}
_ZERO_PTR = {dt: a.ctypes.data for dt, a in _ZERO.items()}


@njit(**_OPTS)
def _run_gemm_task(tasks, t, bases, kind, alpha, beta):
    base = bases[tasks[t, _T_SET]]  # (a, b, c) base addresses
    # Row-major C = A @ B is column-major C^T = B^T @ A^T: pass B first, swap m and n.
    _xxgemm(kind, np.int8(tasks[t, _T_TRANS_B]), np.int8(tasks[t, _T_TRANS_A]),
            tasks[t, _T_N], tasks[t, _T_M], tasks[t, _T_K], alpha,
            base[1] + tasks[t, _T_B], tasks[t, _T_LDB], base[0] + tasks[t, _T_A],
            tasks[t, _T_LDA], beta, base[2] + tasks[t, _T_C], tasks[t, _T_LDC])


@njit(parallel=True, **_OPTS)
def _gemm_tasks_parallel(tasks, bases, kind, alpha, beta):
    for t in prange(tasks.shape[0]):
        _run_gemm_task(tasks, t, bases, kind, alpha, beta)


@njit(**_OPTS)
def _gemm_tasks_serial(tasks, bases, kind, alpha, beta):
    for t in range(tasks.shape[0]):
        _run_gemm_task(tasks, t, bases, kind, alpha, beta)


def _blas_operand(x):
    """How BLAS reads the matrices in the last two axes of x.

    Returns (x, trans, ld): trans is 't' when the matrices are stored column by column
    (a transposed view), ld the stride between rows (or columns) in elements. Layouts
    BLAS cannot describe (steps inside a row, negative strides) are copied to C order.
    """
    rows, cols = x.shape[-2:]
    row_stride, col_stride = x.strides[-2:]
    size = x.itemsize
    if row_stride % size == 0 and col_stride % size == 0 and row_stride >= 0 and col_stride >= 0:
        row_stride //= size
        col_stride //= size
        if (col_stride == 1 or cols == 1) and (rows == 1 or row_stride >= max(cols, 1)):
            return x, _NO_TRANS, (row_stride if rows > 1 else max(cols, 1))
        if (row_stride == 1 or rows == 1) and (cols == 1 or col_stride >= max(rows, 1)):
            return x, _TRANS, (col_stride if cols > 1 else max(rows, 1))
    x = np.ascontiguousarray(x)
    return x, _NO_TRANS, max(cols, 1)


def _batch_offsets(batch, shape, strides):
    """Byte offset of each (flattened) broadcast batch item inside an operand."""
    shape = (1,) * (len(batch) - len(shape)) + tuple(shape)
    strides = (0,) * (len(batch) - len(strides)) + tuple(strides)
    offsets = np.zeros(1, dtype=np.int64)
    for extent, size, stride in zip(batch, shape, strides):
        step = stride if size > 1 else 0  # a size-1 axis broadcasts
        offsets = (offsets[:, None] + step * np.arange(extent, dtype=np.int64)).reshape(-1)
    return offsets


@lru_cache(maxsize=1024)
def _gemm_plan(operand_set, batch, a_batch, a_strides, b_batch, b_strides, m, n, k, trans_a,
               lda, trans_b, ldb, a_row_step, b_col_step, itemsize, pieces):
    """Task table for C = A @ B over a broadcast batch, C C-contiguous.

    Each batch item is cut into `pieces` blocks of rows (or of columns when C is wide),
    so that the number of tasks divides evenly among the threads.
    """
    a_offsets = _batch_offsets(batch, a_batch, a_strides)
    b_offsets = _batch_offsets(batch, b_batch, b_strides)
    c_offsets = np.arange(len(a_offsets), dtype=np.int64) * (m * n * itemsize)
    split_rows = m >= n
    extent = m if split_rows else n
    pieces = max(1, min(pieces, extent))
    bounds = [round(i * extent / pieces) for i in range(pieces + 1)]
    tasks = np.empty((len(a_offsets) * pieces, _TASK_WIDTH), dtype=np.int64)
    tasks[:, _T_SET] = operand_set
    tasks[:, _T_TRANS_A] = trans_a
    tasks[:, _T_TRANS_B] = trans_b
    tasks[:, _T_M] = m
    tasks[:, _T_N] = n
    tasks[:, _T_K] = k
    tasks[:, _T_LDA] = lda
    tasks[:, _T_LDB] = ldb
    tasks[:, _T_LDC] = n
    for piece in range(pieces):
        start, stop = bounds[piece], bounds[piece + 1]
        chunk = tasks[piece::pieces]
        if split_rows:
            chunk[:, _T_M] = stop - start
            chunk[:, _T_A] = a_offsets + start * a_row_step
            chunk[:, _T_B] = b_offsets
            chunk[:, _T_C] = c_offsets + start * n * itemsize
        else:
            chunk[:, _T_N] = stop - start
            chunk[:, _T_A] = a_offsets
            chunk[:, _T_B] = b_offsets + start * b_col_step
            chunk[:, _T_C] = c_offsets + start * itemsize
    tasks.flags.writeable = False
    return tasks


def _gemm(a, b, out, pieces, operand_set=0):
    """(task table, base addresses, operands) computing out = a @ b (out C-contiguous).

    The returned operands (copies, if a layout needed one) must stay alive until the
    tasks have run."""
    a, trans_a, lda = _blas_operand(a)
    b, trans_b, ldb = _blas_operand(b)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    tasks = _gemm_plan(operand_set, out.shape[:-2], a.shape[:-2], a.strides[:-2],
                       b.shape[:-2], b.strides[:-2], m, n, k, trans_a, lda, trans_b, ldb,
                       a.strides[-2], b.strides[-1], out.itemsize, pieces)
    return tasks, (a.ctypes.data, b.ctypes.data, out.ctypes.data), (a, b)


_concatenated_cache = {}


def _concatenated(first, second):
    """One task table running two products in the same parallel launch (cached: the
    tables come from _gemm_plan's cache, so the same pair recurs every step)."""
    key = (id(first), id(second))
    hit = _concatenated_cache.get(key)
    if hit is not None and hit[0] is first and hit[1] is second:
        return hit[2]
    tasks = np.concatenate([first, second])
    tasks.flags.writeable = False
    if len(_concatenated_cache) > 256:
        _concatenated_cache.clear()
    _concatenated_cache[key] = (first, second, tasks)  # holding them keeps the ids valid
    return tasks


# Below this many multiply-adds a product is not worth a parallel launch; it goes to
# np.matmul, which (numba kernel set) runs single-threaded BLAS too.
SMALL_MATMUL = 32 * 32 * 32
_blas_ready = False


def _prepare_blas():
    """First matmul: load SciPy's BLAS and look up ?gemm from the main thread, then
    apply the threading policy to that library too."""
    global _blas_ready
    import scipy.linalg.cython_blas  # noqa: F401  (Numba's numba_xxgemm calls into it)
    for dtype in _FLOATS:
        one = np.ones((1, 1), dtype)
        out = np.empty((1, 1), dtype)
        tasks, bases, keep = _gemm(one, one, out, 1)
        _gemm_tasks_serial(tasks, np.array([bases], np.int64), _BLAS_KIND[dtype],
                           _ONE_PTR[dtype], _ZERO_PTR[dtype])
        del keep
    from .. import apply_threading_policy
    apply_threading_policy()
    _blas_ready = True


def _blas_constants(dtype):
    """(BLAS kind, pointer to 1, pointer to 0) for dtype, loading BLAS on first use."""
    if not _blas_ready:
        _prepare_blas()
    return _BLAS_KIND[dtype], _ONE_PTR[dtype], _ZERO_PTR[dtype]


def _run_gemms(tasks, bases, dtype, parallel):
    kernel = _gemm_tasks_parallel if parallel else _gemm_tasks_serial
    kernel(tasks, np.array(bases, np.int64), *_blas_constants(dtype))


def _matmul_supported(a, b):
    return (_is_float(a, b) and a.dtype == b.dtype and a.ndim >= 2 and b.ndim >= 2
            and a.shape[-1] == b.shape[-2] and a.shape[-1] > 0)


def _batch_shape(a, b):
    a_batch, b_batch = a.shape[:-2], b.shape[:-2]
    return a_batch if a_batch == b_batch else np.broadcast_shapes(a_batch, b_batch)


def _pieces(n_items, threads):
    """Blocks per product so that n_items * blocks spreads evenly over the threads."""
    return threads // math.gcd(n_items, threads)
