"""Numba kernels: the same functions as ``reference.py``, fused and parallel.

Every public function here has the name, signature and result of its counterpart in
``reference.py`` (read that first: it is the statement of the math). The sections below
follow the same order; each starts with ``# reference: reference.<name>`` and says what
is done differently for speed. The recurring tricks:

* fusion: one pass over a row does the max, the exponentials, the sum and the scaling,
  instead of NumPy's four temporary arrays;
* ``prange`` over rows (or over a flat buffer) spreads the work over Numba's threads;
* ``_sum``: row sums in an 8-lane SIMD accumulator whose order of additions is
  written out here rather than left to the compiler (see "Reproducible floating
  point" below);
* ``fast_exp``: NumPy's ``exp`` is a library call that stops LLVM from vectorising the
  loop around it, so float32 uses a short polynomial (below) that compiles to SIMD code;
  ``_max`` does the same for running maxima;
* matrix products are left to BLAS, called on independent pieces (batch items, row
  blocks, the two products of a backward pass) from one parallel loop with BLAS
  itself on one thread -- see ``tensorlite.kernels`` for this threading policy.

Reproducible floating point: every kernel is compiled with IEEE semantics (no
``fastmath``), so the optimiser may not reorder a sum or fuse a multiply-add; the
order of every floating-point operation is the one written here. This is what makes a
kernel give the same bits whether it was compiled in this process or loaded from the
on-disk cache. With ``fastmath`` it did not: Numba compiles a ``prange`` body as its
own library, which the compiling process runs, and caches the kernel's module, in
which that body was optimised a second time after being linked in; with ``reassoc``
the two optimisations summed a row's partial sums in different orders (``(a+b)+c)+d``
against ``(a+b)+(c+d)``), so a cold and a warm process disagreed in the last bits.

Each kernel compiles on its first call (``cache=True`` keeps the machine code on disk,
so later processes load it in milliseconds); importing this module compiles nothing.
The thin Python wrappers make inputs contiguous when they must, pick the float type's
constants, and fall back to ``reference`` for what the kernels do not handle (integer
dtypes, empty arrays).
"""

import math
import os
from functools import lru_cache

import numpy as np
import numba
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import reference

# Threading layer: OpenMP first, with a short spin. Measured on a 2-core VM (see the
# module docstring of tensorlite.kernels): waking a sleeping worker costs ~40 us, more
# than many kernels take, so workqueue (whose workers always sleep) made a GPT training
# step ~1.8x slower than OpenMP; OpenMP's default spin of ~300,000 rounds (~8 ms here)
# stalled launches by up to 8 ms whenever another process held the second core.
# GOMP_SPINCOUNT=10000 (~0.25 ms) keeps the worker awake across the short NumPy steps
# between kernels and bounds that stall. These are defaults, set before the OpenMP
# runtime loads: NUMBA_THREADING_LAYER, OMP_WAIT_POLICY and GOMP_SPINCOUNT in the
# environment win.
GOMP_SPINCOUNT = "10000"
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT

# No fastmath (see "Reproducible floating point" above): reductions vectorise through
# _sum's explicit SIMD lanes instead of letting LLVM reassociate.
_OPTS = dict(cache=True, nogil=True)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------
# Scalar helpers used inside kernels

def _as(ref, value):
    """`value` converted to the float type of `ref` (an array or a float scalar).

    Inside a kernel a bare literal such as 0.5 is float64 and would promote float32
    arithmetic to float64 (half-width SIMD); writing _as(x, 0.5) keeps it float32.
    """
    return np.asarray(ref).dtype.type(value)


@overload(_as)
def _as_impl(ref, value):
    kind = ref.dtype if isinstance(ref, types.Array) else ref
    if kind == types.float32:
        return lambda ref, value: np.float32(value)
    return lambda ref, value: np.float64(value)


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _max(typingctx, a, b):
    """max(a, b) for two floats of one type, as LLVM's maxnum.

    A loop `m = max(m, x[j])` written with Python's max (a compare and a select) is
    not vectorised by LLVM; maxnum is, because the call carries the no-NaN flag. That
    flag only licenses LLVM to pick either operand when one is NaN: a NaN in a row
    still reaches the output through the row's sum of exponentials. Infinities are
    handled exactly (the -inf of masked logits).
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        float_type = args[0].type
        name = "llvm.maxnum.f32" if float_type == ir.FloatType() else "llvm.maxnum.f64"
        maxnum = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float_type, [float_type, float_type]), name)
        return builder.call(maxnum, args, fastmath=("nnan", "nsz"))

    return a(a, b), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding, as LLVM's fma intrinsic.

    Without fastmath LLVM may not fuse `a * b + c` by itself (that is ``contract``,
    which a second optimisation of the same code may apply differently). An explicit
    fma is always fused: one FMA instruction on CPUs that have it, a correctly rounded
    library fma elsewhere -- the same bits either way, in every compilation. LLVM
    vectorises it like a multiply.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        float_type = args[0].type
        name = "llvm.fma.f32" if float_type == ir.FloatType() else "llvm.fma.f64"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float_type, [float_type] * 3), name)
        return builder.call(fma, args)

    return a(a, b, c), codegen


_LANES = 8  # elements per SIMD accumulator (one AVX register of float32)
_ACCUMULATORS = 4  # independent accumulators, so additions need not wait on each other


def _is_float_vector(a):
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and isinstance(a.dtype, types.Float))


def _simd_reduction(step):
    """LLVM IR generator for a sum over the elements of 1-D arrays in _sum's order.

    step(builder, fma, values, accumulator) -> the accumulator after one step, where
    values holds, per argument, a chunk of 8 elements (in the SIMD body) or one element
    (in the tail) of an array argument, or a scalar argument broadcast to match.
    """
    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(signature.return_type)
        vector = ir.VectorType(scalar, _LANES)
        align = scalar.get_abi_size(context.target_data)
        bits = align * 8
        arrays = {position: context.make_array(kind)(context, builder, value)
                  for position, (kind, value) in enumerate(zip(signature.args, args))
                  if isinstance(kind, types.Array)}
        n = arrays[0].nitems
        fma_of = {width: cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(kind, [kind] * 3), name)
            for width, kind, name in ((_LANES, vector, f"llvm.fma.v{_LANES}f{bits}"),
                                      (1, scalar, f"llvm.fma.f{bits}"))}

        def values_at(start, width):
            kind = vector if width > 1 else scalar
            values = []
            for position, value in enumerate(args):
                if position in arrays:
                    address = builder.gep(arrays[position].data, [start])
                    values.append(builder.load(address, typ=kind, align=align))
                elif width > 1:
                    values.append(_splat(builder, value, vector))
                else:
                    values.append(value)
            return values

        def fma(width):
            return lambda a, b, c: builder.call(fma_of[width], [a, b, c])

        def add_chunk(accumulator, start):
            total = step(builder, fma(_LANES), values_at(start, _LANES), builder.load(accumulator))
            builder.store(total, accumulator)

        rounds_end = builder.sub(n, builder.srem(n, n.type(_LANES * _ACCUMULATORS)))
        chunks_end = builder.sub(n, builder.srem(n, n.type(_LANES)))
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(vector, None))
                        for _ in range(_ACCUMULATORS)]
        with cgutils.for_range_slice(builder, n.type(0), rounds_end,
                                     n.type(_LANES * _ACCUMULATORS)) as (j, _):
            for q, accumulator in enumerate(accumulators):
                add_chunk(accumulator, builder.add(j, n.type(q * _LANES)))
        for q in range(_ACCUMULATORS - 1):  # the last < 4 full chunks, in order
            start = builder.add(rounds_end, n.type(q * _LANES))
            with builder.if_then(builder.icmp_signed("<", start, chunks_end)):
                add_chunk(accumulators[q], start)
        acc = [builder.load(accumulator) for accumulator in accumulators]
        while len(acc) > 1:  # pairwise: (0+1) + (2+3)
            acc = [builder.fadd(acc[k], acc[k + 1]) for k in range(0, len(acc), 2)]
        folded = acc[0]
        width = _LANES
        while width > 1:  # fold the upper half of the lanes onto the lower half
            width //= 2
            mask = ir.VectorType(ir.IntType(32), width)
            low = builder.shuffle_vector(folded, folded, ir.Constant(mask, list(range(width))))
            high = builder.shuffle_vector(folded, folded,
                                          ir.Constant(mask, list(range(width, 2 * width))))
            folded = builder.fadd(low, high)
        total = cgutils.alloca_once_value(
            builder, builder.extract_element(folded, ir.IntType(32)(0)))
        with cgutils.for_range_slice(builder, chunks_end, n, n.type(1)) as (j, _):
            builder.store(step(builder, fma(1), values_at(j, 1), builder.load(total)), total)
        return builder.load(total)

    return codegen


def _splat(builder, value, vector):
    """`value` in every lane of a vector of type `vector`."""
    lanes = builder.insert_element(ir.Constant(vector, None), value, ir.IntType(32)(0))
    return builder.shuffle_vector(lanes, lanes, ir.Constant(
        ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count))


@intrinsic
def _sum(typingctx, a):
    """Sum of a contiguous 1-D float array, in an order fixed by this code, in SIMD.

    Four 8-lane vector accumulators take turns: accumulator q adds the chunks
    a[8c : 8c + 8] with c = q (mod 4), so four additions are in flight at once rather
    than each waiting for the last. The n mod 32 elements past the last full round
    go chunk by chunk to accumulators 0, 1, 2 and then one by one to a scalar tail.
    The end is a fixed tree: the accumulators as (acc0 + acc1) + (acc2 + acc3); its
    lanes folded in halves, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as
    SIMD shuffles and adds; and the tail elements last, in order. Written as explicit
    vector code because without the reassociation licence LLVM would not vectorise a
    plain `total += a[j]` loop -- and with it, LLVM picks the order.
    """
    if not _is_float_vector(a):
        return None
    return a.dtype(a), _simd_reduction(lambda builder, fma, values, acc:
                                       builder.fadd(acc, values[0]))


@intrinsic
def _dot(typingctx, a, b):
    """sum(a * b) of two contiguous 1-D float arrays of one length, in _sum's order.

    Each product is added to its accumulator by a fused multiply-add, so no scratch
    array of products is written.
    """
    if not (_is_float_vector(a) and _is_float_vector(b) and a.dtype == b.dtype):
        return None
    return a.dtype(a, b), _simd_reduction(lambda builder, fma, values, acc:
                                          fma(values[0], values[1], acc))


@intrinsic
def _sum_squared_deviations(typingctx, a, center):
    """sum((a - center)^2) of a contiguous 1-D float array, in _sum's order."""
    if not (_is_float_vector(a) and center == a.dtype):
        return None

    def step(builder, fma, values, acc):
        deviation = builder.fsub(values[0], values[1])
        return fma(deviation, deviation, acc)

    return a.dtype(a, center), _simd_reduction(step)


def _exp_float32(x):
    """exp(x) for float32 x, vectorisable: exp(x) = 2^k * exp(r).

    k = round(x / ln 2) and r = x - k ln 2, |r| <= ln(2)/2, where a degree-7 polynomial
    (Cephes' expf coefficients, evaluated with fused multiply-adds) gives exp(r) to
    about 1e-7 relative error. ln 2 is split in two (Cody-Waite) so k*ln2 is subtracted
    without rounding error. 2^k is built directly in the float's exponent bits. x is
    first clamped to [-88, 88.7], which keeps k in [-127, 128]; the two ends of that
    range are the bit patterns of 0 and of inf, so inputs below about -87.7 give 0
    (the result would be subnormal) and inputs above about 88.4 give inf with no
    further test. A NaN passes both clamps and gives NaN.
    """
    xc = np.float32(-88.0) if x < np.float32(-88.0) else x
    xc = np.float32(88.7) if xc > np.float32(88.7) else xc
    k = np.floor(_fma(xc, np.float32(1.4426950408889634), np.float32(0.5)))
    r = _fma(k, np.float32(-0.693359375), xc)
    r = _fma(k, np.float32(2.12194440e-4), r)
    p = np.float32(1.9875691500e-4)  # Horner's scheme, one fused multiply-add per step
    p = _fma(p, r, np.float32(1.3981999507e-3))
    p = _fma(p, r, np.float32(8.3334519073e-3))
    p = _fma(p, r, np.float32(4.1665795894e-2))
    p = _fma(p, r, np.float32(1.6666665459e-1))
    p = _fma(p, r, np.float32(5.0000001201e-1))
    exp_r = _fma(p, r * r, r) + np.float32(1.0)
    two_to_k = _int32_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
    return exp_r * two_to_k


def fast_exp(x):
    """exp(x); inside kernels float32 uses the SIMD-friendly polynomial above."""
    return np.exp(x)


@overload(fast_exp)
def _fast_exp_impl(x):
    if x == types.float32:
        return _exp_float32
    return lambda x: np.exp(x)  # float64: the exact library exp


@njit(parallel=True, **_OPTS)
def exp_array(x, out):
    """out[i] = fast_exp(x[i]) over 1-D arrays (used to test fast_exp's accuracy)."""
    for i in prange(x.shape[0]):
        out[i] = fast_exp(x[i])


# ----------------------------------------------------------------------------
# Python-side helpers

def _is_float(*arrays):
    return all(isinstance(a, np.ndarray) and a.dtype in _FLOATS for a in arrays)


def _rows(x, dtype=None):
    """x as a C-contiguous 2-D (rows, last axis) array; copies only if it must."""
    x = np.ascontiguousarray(x, dtype=dtype)
    return x.reshape(-1, x.shape[-1])


def _flat(x, dtype=None):
    """x as a C-contiguous 1-D array; copies only if it must."""
    return np.ascontiguousarray(x, dtype=dtype).reshape(-1)


# ----------------------------------------------------------------------------
# matmul
# reference: reference.matmul, reference.matmul_backward
#
# BLAS (SciPy's OpenBLAS, the one Numba links against) does the arithmetic. What is
# tuned is how the work is handed to it: a product is cut into independent gemm calls
# -- one per batch item, or row/column blocks of a 2-D product, or the two products of
# a backward pass -- and a prange loop runs them on Numba's threads with BLAS on one
# thread each. Operands are passed with their own strides (a transposed view is just
# a 't' flag for BLAS), so nothing is copied.

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
    from . import apply_threading_policy
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


# ----------------------------------------------------------------------------
# softmax
# reference: reference.softmax, reference.softmax_backward
#
# One pass per row for the max, one for exp and the sum (stored into the output),
# one to scale; rows are spread over threads.

@njit(parallel=True, **_OPTS)
def _softmax_forward(x, out):
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        row = x[i]
        y = out[i]
        row_max = row[0]
        for j in range(1, n_cols):
            row_max = _max(row_max, row[j])
        for j in range(n_cols):
            y[j] = fast_exp(row[j] - row_max)
        inv_total = _as(row, 1.0) / _sum(y)
        for j in range(n_cols):
            y[j] *= inv_total


def softmax(x):
    """softmax over the last axis -- see reference.softmax."""
    if not _is_float(x) or x.ndim == 0 or x.size == 0:
        return reference.softmax(x)
    x2 = _rows(x)
    out = np.empty_like(x2)
    _softmax_forward(x2, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _softmax_backward(y, grad_y, out):
    n_rows, n_cols = y.shape
    for i in prange(n_rows):
        y_row = y[i]
        g_row = grad_y[i]
        o = out[i]
        dot = _dot(g_row, y_row)
        for j in range(n_cols):
            o[j] = y_row[j] * (g_row[j] - dot)


def softmax_backward(y, grad_y):
    """y * (grad_y - sum(grad_y * y)) -- see reference.softmax_backward."""
    if not _is_float(y, grad_y) or y.ndim == 0 or y.size == 0:
        return reference.softmax_backward(y, grad_y)
    y2 = _rows(y)
    out = np.empty_like(y2)
    _softmax_backward(y2, _rows(grad_y, y.dtype), out)
    return out.reshape(y.shape)


# ----------------------------------------------------------------------------
# log-softmax
# reference: reference.log_softmax, reference.log_softmax_backward

@njit(parallel=True, **_OPTS)
def _log_softmax_forward(x, out):
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        row = x[i]
        row_max = row[0]
        for j in range(1, n_cols):
            row_max = _max(row_max, row[j])
        o = out[i]
        for j in range(n_cols):
            o[j] = fast_exp(row[j] - row_max)  # the exponentials, summed next
        shift = row_max + np.log(_sum(o))  # logsumexp of the row
        for j in range(n_cols):
            o[j] = row[j] - shift


def log_softmax(x):
    """x - logsumexp(x) over the last axis -- see reference.log_softmax."""
    if not _is_float(x) or x.ndim == 0 or x.size == 0:
        return reference.log_softmax(x)
    x2 = _rows(x)
    out = np.empty_like(x2)
    _log_softmax_forward(x2, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _log_softmax_backward(y, grad_y, out):
    n_rows, n_cols = y.shape
    for i in prange(n_rows):
        y_row = y[i]
        g_row = grad_y[i]
        total = _sum(g_row)
        o = out[i]
        for j in range(n_cols):
            o[j] = _fma(-fast_exp(y_row[j]), total, g_row[j])


def log_softmax_backward(y, grad_y):
    """grad_y - exp(y) * sum(grad_y) -- see reference.log_softmax_backward."""
    if not _is_float(y, grad_y) or y.ndim == 0 or y.size == 0:
        return reference.log_softmax_backward(y, grad_y)
    y2 = _rows(y)
    out = np.empty_like(y2)
    _log_softmax_backward(y2, _rows(grad_y, y.dtype), out)
    return out.reshape(y.shape)


# ----------------------------------------------------------------------------
# attention
# reference: reference.attention, reference.attention_backward
#
# One (batch item, head) per prange iteration, from start to end, with the whole
# (Tq, Tk) attention matrix of that head in a small scratch array that stays in cache:
# forward is one BLAS product (q @ k^T), the scaled, masked softmax row by row in place,
# and a second product straight into the output. Backward
# rebuilds the probabilities from the saved logsumexp (q @ k^T again) and runs its other
# four products and the softmax backward the same way. The (batch, head) item owns its rows of every output,
# so no two threads write the same place, and nothing of size (B, nh, Tq, Tk) is ever
# allocated. BLAS reads q, k and v in place through their row strides, so the heads of
# a packed q/k/v projection need no copy. The products themselves are left to BLAS
# because at these sizes (64 x 64 x 32) a loop written here, without SIMD intrinsics,
# runs 2-4x slower than its kernels.
#
# The causal mask is never built: query row i sees keys j < visible = i + Tk - Tq + 1.
# The max, exponential and scaling loops stop at `visible` and the rest of the row is set
# to 0, so no exponential is computed for a masked key, and the row's sum and dot
# products, which run over the whole row, add zeros there.

@njit(**_OPTS)
def _product(kind, a, transpose_a, b, transpose_b, c, one_ptr, beta_ptr):
    """c = op(a) @ op(b) + beta * c by BLAS, op(x) = x.T when transpose_x, beta 0 or 1 (a
    pointer to it). All three are 2-D views with unit stride along their rows (the wrappers
    ensure it)."""
    itemsize = c.itemsize
    lda = max(a.strides[0] // itemsize, a.shape[1], 1)
    ldb = max(b.strides[0] // itemsize, b.shape[1], 1)
    ldc = max(c.strides[0] // itemsize, c.shape[1], 1)
    k = a.shape[0] if transpose_a else a.shape[1]
    # Row-major C = A @ B is column-major C^T = B^T @ A^T: pass B first, swap m and n.
    _xxgemm(kind, np.int8(_TRANS if transpose_b else _NO_TRANS),
            np.int8(_TRANS if transpose_a else _NO_TRANS), c.shape[1], c.shape[0], k,
            one_ptr, b.ctypes.data, ldb, a.ctypes.data, lda, beta_ptr, c.ctypes.data, ldc)


# Causal attention works in blocks of this many queries: a block's products stop at the last
# key its last query sees, which skips much of the masked upper triangle (at T = 256, 37% of
# the products' work: 10-20% of the kernels' time measured) for a few more BLAS calls.
ATTENTION_QUERY_BLOCK = 64


@njit(**_OPTS)
def _query_blocks(n_query, is_causal):
    """(block size, number of blocks) for the queries of one head."""
    size = min(ATTENTION_QUERY_BLOCK, n_query) if is_causal else n_query
    return size, (n_query + size - 1) // size


@njit(parallel=True, **_OPTS)
def _attention_forward(kind, q, k, v, scale, is_causal, out, logsumexp, one_ptr, zero_ptr):
    n_batch, n_head, n_query, _ = q.shape
    n_key = k.shape[2]
    offset = n_key - n_query
    minus_inf = _as(q, -np.inf)
    zero = _as(q, 0.0)
    block, _ = _query_blocks(n_query, is_causal)
    for item in prange(n_batch * n_head):
        b = item // n_head
        h = item - b * n_head
        scratch = np.empty((block, n_key), q.dtype)
        for first in range(0, n_query, block):
            last = min(first + block, n_query)  # queries [first, last)
            seen = last + offset if is_causal else n_key  # keys [0, seen)
            probabilities = scratch[:last - first, :seen]
            _product(kind, q[b, h, first:last], False, k[b, h, :seen], True, probabilities,
                     one_ptr, zero_ptr)
            for r in range(last - first):  # scores -> probabilities, in place
                row = scratch[r, :seen]  # (a row of a C array keeps _sum's SIMD layout)
                # Keys [visible, seen) are masked: their probability is 0, and no
                # exponential is computed for them.
                visible = first + r + offset + 1 if is_causal else n_key
                row_max = minus_inf
                for j in range(visible):
                    row_max = _max(row_max, row[j] * scale)
                for j in range(visible):
                    row[j] = fast_exp(row[j] * scale - row_max)
                row[visible:] = zero
                total = _sum(row)
                inv_total = _as(q, 1.0) / total
                for j in range(visible):
                    row[j] *= inv_total
                logsumexp[b, h, first + r] = row_max + np.log(total)
            _product(kind, probabilities, False, v[b, h, :seen], False, out[b, h, first:last],
                     one_ptr, zero_ptr)


def _heads(x):
    """x (..., T, D) as a 4-D (batch, head, T, D) array that BLAS can read: a view where
    NumPy can make one, copied if D is not its unit-stride axis."""
    x = x.reshape((-1,) + x.shape[-3:]) if x.ndim >= 4 else x.reshape((1,) * (4 - x.ndim) + x.shape)
    row_stride, column_stride = x.strides[-2:]
    if column_stride != x.itemsize or (x.shape[-2] > 1 and row_stride < x.shape[-1] * x.itemsize):
        x = np.ascontiguousarray(x)
    return x


def _empty_heads(batch_shape, n, dim, dtype):
    """An empty (..., n, dim) array and its 4-D (batch, head, n, dim) view for the kernel,
    stored as (batch, n, head, dim): after attention a GPT moves the head axis next to D
    to merge the heads, which is then a view, not a copy."""
    heads = batch_shape[-1] if batch_shape else 1
    storage = np.empty((math.prod(batch_shape[:-1]), n, heads, dim), dtype)
    view4 = storage.transpose(0, 2, 1, 3)
    return view4.reshape(batch_shape + (n, dim)), view4  # a view: only axis 0 is split


def _attention_supported(*arrays):
    return (_is_float(*arrays) and all(a.dtype == arrays[0].dtype for a in arrays)
            and all(a.size > 0 for a in arrays))


def attention(q, k, v, scale, is_causal):
    """softmax(q @ k^T * scale [causal mask]) @ v and its logsumexp -- see
    reference.attention."""
    reference._check_attention(q, k, v, is_causal)
    if not _attention_supported(q, k, v):
        return reference.attention(q, k, v, scale, is_causal)
    n_query, dim = q.shape[-2:]
    out, out4 = _empty_heads(q.shape[:-2], n_query, dim, q.dtype)
    logsumexp = np.empty(q.shape[:-1], q.dtype)
    kind, one, zero = _blas_constants(q.dtype)
    _attention_forward(kind, _heads(q), _heads(k), _heads(v), q.dtype.type(scale),
                       bool(is_causal), out4, logsumexp.reshape(out4.shape[:-1]), one, zero)
    return out, logsumexp


@njit(parallel=True, **_OPTS)
def _attention_backward(kind, grad, q, k, v, logsumexp, scale, is_causal, grad_q, grad_k,
                        grad_v, one_ptr, zero_ptr):
    n_batch, n_head, n_query, _ = q.shape
    n_key = k.shape[2]
    offset = n_key - n_query
    zero = _as(q, 0.0)
    block, n_blocks = _query_blocks(n_query, is_causal)
    for item in prange(n_batch * n_head):
        b = item // n_head
        h = item - b * n_head
        scratch = np.empty((block, n_key), q.dtype)
        grad_scratch = np.empty((block, n_key), q.dtype)
        # Last block first: it sees every key, so it writes grad_k and grad_v whole (beta 0)
        # and the earlier blocks add to the keys they see (beta 1).
        for index in range(n_blocks - 1, -1, -1):
            first = index * block
            last = min(first + block, n_query)
            seen = last + offset if is_causal else n_key
            accumulate = zero_ptr if index == n_blocks - 1 else one_ptr
            probabilities = scratch[:last - first, :seen]
            grad_scores = grad_scratch[:last - first, :seen]
            _product(kind, q[b, h, first:last], False, k[b, h, :seen], True, probabilities,
                     one_ptr, zero_ptr)
            _product(kind, grad[b, h, first:last], False, v[b, h, :seen], True, grad_scores,
                     one_ptr, zero_ptr)  # grad_p = grad @ v^T
            # Per row, in place: the probabilities rebuilt from the saved logsumexp, then the
            # softmax backward p * (grad_p - rowsum(p * grad_p)) * scale.
            for r in range(last - first):
                row = scratch[r, :seen]
                grad_row = grad_scratch[r, :seen]
                visible = first + r + offset + 1 if is_causal else n_key
                lse = logsumexp[b, h, first + r]
                for j in range(visible):
                    row[j] = fast_exp(row[j] * scale - lse)
                row[visible:] = zero
                delta = _dot(row, grad_row)
                for j in range(visible):
                    grad_row[j] = row[j] * (grad_row[j] - delta) * scale
                grad_row[visible:] = zero
            _product(kind, probabilities, True, grad[b, h, first:last], False,
                     grad_v[b, h, :seen], one_ptr, accumulate)
            _product(kind, grad_scores, False, k[b, h, :seen], False, grad_q[b, h, first:last],
                     one_ptr, zero_ptr)
            _product(kind, grad_scores, True, q[b, h, first:last], False, grad_k[b, h, :seen],
                     one_ptr, accumulate)


def attention_backward(grad, q, k, v, logsumexp, scale, is_causal):
    """(grad_q, grad_k, grad_v) of attention -- see reference.attention_backward."""
    reference._check_attention(q, k, v, is_causal)
    if not (_attention_supported(grad, q, k, v, logsumexp) and grad.shape == q.shape
            and logsumexp.shape == q.shape[:-1]):
        return reference.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)
    n_query, n_key, dim = q.shape[-2], k.shape[-2], q.shape[-1]
    (grad_q, grad_q4), (grad_k, grad_k4), (grad_v, grad_v4) = (
        _empty_heads(q.shape[:-2], n, dim, q.dtype) for n in (n_query, n_key, n_key))
    kind, one, zero = _blas_constants(q.dtype)
    _attention_backward(kind, _heads(grad), _heads(q), _heads(k), _heads(v),
                        np.ascontiguousarray(logsumexp).reshape(grad_q4.shape[:-1]),
                        q.dtype.type(scale), bool(is_causal), grad_q4, grad_k4, grad_v4,
                        one, zero)
    return grad_q, grad_k, grad_v


# ----------------------------------------------------------------------------
# layer norm
# reference: reference.layer_norm, reference.layer_norm_backward
#
# Forward: per row, mean and variance (two passes over a row that sits in L1) and the
# normalised, scaled, shifted output. Backward: rows are cut into one chunk per thread;
# each chunk writes its rows of grad_x and sums its own partial grad_weight/grad_bias,
# and the few partial sums are added at the end (no two threads write the same place).
# A row's grad_y * weight (in a scratch row per chunk) and xhat (in its row of grad_x,
# until the last pass overwrites it) are computed once, for both row sums and the end.

@njit(parallel=True, **_OPTS)
def _layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    n_rows, n_cols = x.shape
    inv_n = _as(x, 1.0) / _as(x, n_cols)
    for i in prange(n_rows):
        row = x[i]
        mu = _sum(row) * inv_n
        y = out[i]
        rs = _as(row, 1.0) / np.sqrt(_sum_squared_deviations(row, mu) * inv_n + eps)
        for j in range(n_cols):
            y[j] = _fma((row[j] - mu) * rs, weight[j], bias[j])
        mean[i] = mu
        rstd[i] = rs


def layer_norm(x, weight, bias, eps):
    """(y, mean, rstd) of layer normalisation over the last axis -- see
    reference.layer_norm."""
    if not _is_float(x) or x.ndim != 2 or x.size == 0:
        return reference.layer_norm(x, weight, bias, eps)
    x = np.ascontiguousarray(x)
    n_rows, n_cols = x.shape
    weight = np.ones(n_cols, x.dtype) if weight is None else _flat(weight, x.dtype)
    bias = np.zeros(n_cols, x.dtype) if bias is None else _flat(bias, x.dtype)
    out = np.empty_like(x)
    mean = np.empty(n_rows, x.dtype)
    rstd = np.empty(n_rows, x.dtype)
    _layer_norm_forward(x, weight, bias, x.dtype.type(eps), out, mean, rstd)
    return out, mean, rstd


@njit(parallel=True, **_OPTS)
def _layer_norm_backward(grad_y, x, weight, mean, rstd, grad_x, partial_w, partial_b, scratch):
    n_rows, n_cols = x.shape
    n_chunks = partial_w.shape[0]
    rows_per_chunk = (n_rows + n_chunks - 1) // n_chunks
    inv_n = _as(x, 1.0) / _as(x, n_cols)
    for chunk in prange(n_chunks):
        dw = partial_w[chunk]
        db = partial_b[chunk]
        g = scratch[chunk]  # the row's grad_y * weight
        for i in range(chunk * rows_per_chunk, min(n_rows, (chunk + 1) * rows_per_chunk)):
            mu = mean[i]
            rs = rstd[i]
            gy = grad_y[i]
            xr = x[i]
            gxr = grad_x[i]  # first the row's xhat, then its gradient
            for j in range(n_cols):
                g[j] = gy[j] * weight[j]
                gxr[j] = (xr[j] - mu) * rs
            g_mean = _sum(g) * inv_n
            gx_mean = _dot(g, gxr) * inv_n
            for j in range(n_cols):
                xhat = gxr[j]
                gxr[j] = rs * _fma(-xhat, gx_mean, g[j] - g_mean)
                dw[j] = _fma(gy[j], xhat, dw[j])
                db[j] += gy[j]


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """(grad_x, grad_weight, grad_bias) -- see reference.layer_norm_backward."""
    if not _is_float(x, grad_y) or x.ndim != 2 or x.size == 0:
        return reference.layer_norm_backward(grad_y, x, weight, mean, rstd)
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    n_rows, n_cols = x.shape
    weight = np.ones(n_cols, dtype) if weight is None else _flat(weight, dtype)
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    partial_w = np.zeros((n_chunks, n_cols), dtype)
    partial_b = np.zeros((n_chunks, n_cols), dtype)
    grad_x = np.empty_like(x)
    _layer_norm_backward(np.ascontiguousarray(grad_y, dtype=dtype), x, weight,
                         _flat(mean, dtype), _flat(rstd, dtype), grad_x, partial_w, partial_b,
                         np.empty((n_chunks, n_cols), dtype))
    return grad_x, partial_w.sum(axis=0), partial_b.sum(axis=0)


# ----------------------------------------------------------------------------
# GELU
# reference: reference.gelu, reference.gelu_backward
#
# One flat parallel loop. With u = sqrt(2/pi)(x + 0.044715 x^3), the identity
# 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)) = s turns the reference's formula into
#   y      = x * s
#   dy/dx  = s + 2 x s (1 - s) * sqrt(2/pi)(1 + 3 * 0.044715 x^2)
# (since 1 - tanh^2 u = 4 s (1 - s)): one exponential and one division per element,
# no tanh call, so the float32 loop vectorises through fast_exp.

@njit(inline="always", **_OPTS)
def _gelu_denominator(v):
    """1 + exp(-2u) = 1 / s, where s = 0.5 (1 + tanh u) and u = sqrt(2/pi)(v + 0.044715 v^3)."""
    inner = _fma(_as(v, reference.GELU_CUBIC) * v * v, v, v)  # v + 0.044715 v^3
    return _as(v, 1.0) + fast_exp(_as(v, -2.0 * reference.GELU_SCALE) * inner)


@njit(parallel=True, **_OPTS)
def _gelu_forward(x, out):
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = v / _gelu_denominator(v)  # v * s


def gelu(x):
    """Tanh-approximation GELU -- see reference.gelu."""
    if not _is_float(x) or x.size == 0:
        return reference.gelu(x)
    flat = _flat(x)
    out = np.empty_like(flat)
    _gelu_forward(flat, out)
    return out.reshape(x.shape)


@njit(parallel=True, **_OPTS)
def _gelu_backward(x, grad_y, out):
    c = _as(x, 2.0 * reference.GELU_SCALE)
    cubic3 = _as(x, 3.0 * reference.GELU_CUBIC)
    one = _as(x, 1.0)
    for i in prange(x.shape[0]):
        v = x[i]
        s = _as(v, 1.0) / _gelu_denominator(v)
        slope = c * _fma(cubic3, v * v, one)  # du/dx times 2
        out[i] = grad_y[i] * _fma(v * s * (one - s), slope, s)


def gelu_backward(x, grad_y):
    """dL/dx of the tanh GELU -- see reference.gelu_backward."""
    if not _is_float(x, grad_y) or x.size == 0:
        return reference.gelu_backward(x, grad_y)
    flat = _flat(x)
    out = np.empty_like(flat)
    _gelu_backward(flat, _flat(grad_y, x.dtype), out)
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------
# cross-entropy
# reference: reference.cross_entropy, reference.cross_entropy_backward
#
# Forward: per row, logsumexp and the row's loss; the exponentials go to a scratch
# row (one per thread's chunk of rows) so that _sum adds them in its fixed order.
# Backward: softmax rebuilt from the saved logsumexp, minus the one-hot, times the
# scale, written once.

@njit(parallel=True, **_OPTS)
def _cross_entropy_forward(logits, targets, ignore_index, logsumexp, row_loss, exps):
    n_rows, n_cols = logits.shape
    n_chunks = exps.shape[0]
    rows_per_chunk = (n_rows + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        e = exps[chunk]  # scratch row: a row's exponentials, summed next
        for i in range(chunk * rows_per_chunk, min(n_rows, (chunk + 1) * rows_per_chunk)):
            row = logits[i]
            row_max = row[0]
            for j in range(1, n_cols):
                row_max = _max(row_max, row[j])
            # A row of all -inf (or with +inf) has no finite max to shift by.
            shift = row_max if np.isfinite(row_max) else _as(row, 0.0)
            for j in range(n_cols):
                e[j] = fast_exp(row[j] - shift)
            lse = shift + np.log(_sum(e))
            logsumexp[i] = lse
            target = targets[i]
            row_loss[i] = lse - row[target] if target != ignore_index else 0.0


def _check_targets(targets, n_classes, ignore_index):
    counted = targets != ignore_index
    bad = counted & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        raise IndexError(f"target {targets[bad][0]} is out of range for {n_classes} classes")
    return counted


def cross_entropy(logits, targets, ignore_index):
    """(mean loss as a float, logsumexp per row) -- see reference.cross_entropy."""
    if not _is_float(logits) or logits.ndim != 2 or logits.size == 0:
        return reference.cross_entropy(logits, targets, ignore_index)
    logits = np.ascontiguousarray(logits)
    targets = _flat(targets, np.int64)
    counted = _check_targets(targets, logits.shape[1], ignore_index)
    n_rows = logits.shape[0]
    logsumexp = np.empty(n_rows, logits.dtype)
    row_loss = np.empty(n_rows, np.float64)
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    _cross_entropy_forward(logits, targets, ignore_index, logsumexp, row_loss,
                           np.empty((n_chunks, logits.shape[1]), logits.dtype))
    count = int(np.count_nonzero(counted))
    loss = float(row_loss.sum() / count) if count > 0 else float("nan")
    return loss, logsumexp


@njit(parallel=True, **_OPTS)
def _cross_entropy_backward(logits, targets, logsumexp, ignore_index, scale, out):
    n_rows, n_cols = logits.shape
    for i in prange(n_rows):
        row = logits[i]
        o = out[i]
        target = targets[i]
        if target == ignore_index:
            for j in range(n_cols):
                o[j] = _as(row, 0.0)
        else:
            lse = logsumexp[i]
            for j in range(n_cols):
                o[j] = fast_exp(row[j] - lse) * scale
            o[target] -= scale


def cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss):
    """(softmax - onehot) * grad_loss / count, ignored rows 0 -- see
    reference.cross_entropy_backward."""
    if not _is_float(logits) or logits.ndim != 2 or logits.size == 0:
        return reference.cross_entropy_backward(logits, targets, logsumexp, ignore_index,
                                                grad_loss)
    dtype = logits.dtype
    logits = np.ascontiguousarray(logits)
    targets = _flat(targets, np.int64)
    counted = _check_targets(targets, logits.shape[1], ignore_index)
    count = int(np.count_nonzero(counted))
    scale = dtype.type(float(grad_loss) / count if count > 0 else 0.0)
    out = np.empty_like(logits)
    _cross_entropy_backward(logits, targets, _flat(logsumexp, dtype), ignore_index, scale, out)
    return out


# ----------------------------------------------------------------------------
# embedding backward
# reference: reference.embedding_backward
#
# np.add.at is a slow generic scatter; here it is a plain loop adding each grad row to
# its table row (vectorised along D). It stays serial: rows with the same index would
# race, and the whole job is a few microseconds.

@njit(**_OPTS)
def _embedding_backward(indices, grad, out):
    n_rows, dim = grad.shape
    n_embeddings = out.shape[0]
    for i in range(n_rows):
        index = indices[i]
        if index < 0:
            index += n_embeddings  # negative indices count from the end, as in NumPy
        target = out[index]
        source = grad[i]
        for j in range(dim):
            target[j] += source[j]


def embedding_backward(indices, grad, num_embeddings):
    """Scatter-add of grad rows into a (num_embeddings, D) table -- see
    reference.embedding_backward."""
    if not _is_float(grad) or grad.size == 0:
        return reference.embedding_backward(indices, grad, num_embeddings)
    flat_indices = _flat(indices)
    if flat_indices.dtype.kind not in "iu":
        raise IndexError("embedding indices must be integers")
    if flat_indices.size and (flat_indices.max() >= num_embeddings
                              or flat_indices.min() < -num_embeddings):
        raise IndexError(f"embedding index out of range for {num_embeddings} rows")
    dim = grad.shape[-1]
    out = np.zeros((num_embeddings, dim), dtype=grad.dtype)
    _embedding_backward(flat_indices, np.ascontiguousarray(grad).reshape(-1, dim), out)
    return out


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
