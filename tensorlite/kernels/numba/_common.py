"""What every Numba kernel shares: compile options, the threading layer's defaults,
scalar and SIMD helpers used inside kernels, and the Python-side array helpers.

Importing this module applies the threading-layer defaults of tensorlite.runtime; it compiles
nothing.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from tensorlite import runtime


# The threading layer's defaults (OpenMP first, a short spin) must be set before Numba starts
# its pool; tensorlite.runtime holds them with their measurements. Applied here as well as by
# tensorlite.kernels.use, so importing this package directly gets them too (the call is idempotent).
runtime.apply_numba_defaults()
GOMP_SPINCOUNT = runtime.GOMP_SPINCOUNT

# No fastmath (see "Reproducible floating point" in tensorlite.kernels.numba): reductions
# vectorise through _sum's explicit SIMD lanes instead of letting LLVM reassociate.
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
    (in the tail) of an array argument, or a scalar argument broadcast to match. The sum
    accumulates in the intrinsic's return type: an array of a narrower float type is widened
    to it as it is loaded (batch norm's float64 sums of float32 rows).
    """
    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(signature.return_type)
        vector = ir.VectorType(scalar, _LANES)
        bits = scalar.get_abi_size(context.target_data) * 8
        arrays = {position: (context.get_value_type(kind.dtype),
                             context.make_array(kind)(context, builder, value))
                  for position, (kind, value) in enumerate(zip(signature.args, args))
                  if isinstance(kind, types.Array)}
        n = arrays[0][1].nitems
        fma_of = {width: cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(kind, [kind] * 3), name)
            for width, kind, name in ((_LANES, vector, f"llvm.fma.v{_LANES}f{bits}"),
                                      (1, scalar, f"llvm.fma.f{bits}"))}

        def values_at(start, width):
            values = []
            for position, value in enumerate(args):
                if position in arrays:
                    element, array = arrays[position]
                    loaded = builder.load(builder.gep(array.data, [start]),
                                          typ=ir.VectorType(element, width) if width > 1
                                          else element,
                                          align=element.get_abi_size(context.target_data))
                    if element != scalar:
                        loaded = builder.fpext(loaded, vector if width > 1 else scalar)
                    values.append(loaded)
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
