"""Tools for testing the gradients of tensorlite ops, including your own.

Four pieces live here:

* :func:`gradcheck` compares the gradient that autograd computes (the
  "analytic" gradient, produced by each op's backward) with a gradient
  estimated by central finite differences (the "numeric" gradient). If an
  op's backward is wrong, the two disagree and ``gradcheck`` raises a
  :class:`GradcheckError` that says which input, which element, and by how
  much.

* :func:`gradgradcheck` does the same one order up: it checks the second
  derivatives (a backward pass through a recorded backward pass) against
  finite differences of the first derivatives.

* :mod:`tensorlite.testing.strategies` holds Hypothesis strategies that draw
  arrays, mutually broadcastable shapes, reduction axes and extreme logits,
  so that a property test can try many shapes and values::

      from hypothesis import given
      import tensorlite as tl
      from tensorlite.testing import gradcheck, strategies as tst

      @given(x=tst.tensors(min_value=-3, max_value=3))
      def test_tanh_gradient(x):
          assert gradcheck(lambda t: t.tanh(), [x])

Why a *random* cotangent? For an output ``y = f(x)`` autograd computes the
vector-Jacobian product ``v^T J`` for the cotangent ``v`` passed to
``backward``. With ``v`` all ones, a backward that forgets to multiply by the
incoming gradient (returning ``J^T 1`` no matter what ``v`` is) would look
correct. A random ``v`` makes such mistakes visible. The numeric side then
differentiates the scalar ``L(x) = sum(v * f(x))``, whose gradient is exactly
``v^T J``.

* :func:`rounding_bound` and :func:`assert_within_rounding` compare a float32 (or
  float64) result with an exact reference computed in float64, within a bound derived
  from the computation instead of a fixed tolerance. A fixed ``rtol``/``atol`` fails on
  some inputs and not others: the rounding error of a sum grows with the number of its
  terms and their magnitudes, and is large relative to the result where terms cancel.
  The classic bound (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
  section 3.1) holds for every input::

      from tensorlite.testing import assert_within_rounding, rounding_bound

      a64, b64 = a.astype(np.float64), b.astype(np.float64)
      exact = a64 @ b64                                   # the same inputs, exactly enough
      bound = rounding_bound(np.abs(a64) @ np.abs(b64),   # the sum of |terms|
                             n=a.shape[-1] + 1, dtype=np.float32)
      assert_within_rounding(my_matmul(a, b), exact, bound)

  For a longer computation the bound is propagated through it to first order, each
  step adding its own rounding to the error it inherits (tests/test_kernels.py does so
  for softmax, attention and layer norm).

Hypothesis is needed only for the strategies; ``gradcheck`` works without it.
"""

import functools
import inspect
import sys
import types

import numpy as np

import tensorlite as tl

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # gradcheck still works; only the strategies need hypothesis
    st = None
    hnp = None


__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "strategies", "rounding_bound",
           "assert_within_rounding"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when analytic and numeric gradients disagree.

    It is an ``AssertionError`` so that a failing check reads as a test failure
    under pytest, and so that ``assert gradcheck(...)`` style code behaves as
    expected.
    """


# ----------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------

def _is_differentiable(value):
    """True for float arrays and float Tensors: the inputs gradcheck perturbs."""
    if isinstance(value, tl.Tensor):
        dtype = value.data.dtype
    elif isinstance(value, (np.ndarray, np.generic)):
        dtype = value.dtype
    else:
        return False  # Python scalars, None, lists...: passed through as constants
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError("gradcheck does not support complex inputs")
    return np.issubdtype(dtype, np.floating)


def _as_float64_array(value):
    data = value.data if isinstance(value, tl.Tensor) else value
    # A private copy: the numeric pass perturbs it in place, and the caller's
    # array must not change.
    return np.array(data, dtype=np.float64, copy=True)


def _outputs_as_tuple(out, check="gradcheck"):
    """fn may return one Tensor or a tuple/list of Tensors; always give a tuple."""
    outputs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    for position, output in enumerate(outputs):
        if not isinstance(output, tl.Tensor):
            raise TypeError(
                f"{check}: fn must return a Tensor or a tuple of Tensors, "
                f"but output {position} is {type(output).__name__}")
    return outputs


def _differentiable_positions(inputs, check):
    """(inputs as a tuple, the positions of the float inputs that are checked)."""
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    checked = [i for i, value in enumerate(inputs) if _is_differentiable(value)]
    if not checked:
        raise ValueError(f"{check}: no floating-point input to check")
    return tuple(inputs), checked


def _make_cotangents(outputs, cotangent, rng, check="gradcheck"):
    """One cotangent array per output, float64, of the output's shape."""
    if cotangent is None:
        return tuple(rng.standard_normal(output.shape) for output in outputs)
    given = tuple(cotangent) if isinstance(cotangent, (tuple, list)) else (cotangent,)
    if len(given) != len(outputs):
        raise ValueError(f"{check}: {len(given)} cotangents for {len(outputs)} outputs")
    cotangents = []
    for position, (output, cot) in enumerate(zip(outputs, given)):
        cot = np.asarray(cot.data if isinstance(cot, tl.Tensor) else cot, dtype=np.float64)
        cot = np.broadcast_to(cot, output.shape).copy() if cot.ndim == 0 else cot
        if cot.shape != output.shape:
            raise ValueError(f"{check}: cotangent {position} has shape {cot.shape}, "
                             f"output {position} has shape {output.shape}")
        cotangents.append(cot)
    return tuple(cotangents)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, cotangent=None, seed=0,
              mode="full", n_projections=3):
    """Check the gradients of ``fn`` against central finite differences.

    Args:
        fn: a function of Tensors returning a Tensor or a tuple of Tensors.
        inputs: a sequence of inputs (a single array is also accepted). Float
            NumPy arrays and float Tensors are copied into fresh float64 Tensors
            with ``requires_grad=True`` and are checked. Anything else (integer
            arrays such as class targets or embedding indices, integer Tensors,
            Python scalars, None) is passed to ``fn`` unchanged.
        eps: step of the central difference ``(L(x + eps) - L(x - eps)) / (2 eps)``.
        atol, rtol: element ``i`` passes when
            ``|analytic_i - numeric_i| <= atol + rtol * |numeric_i|``.
        cotangent: the ``grad`` passed to ``output.backward``; an array (or
            one per output). By default a standard normal array drawn with
            ``seed``, deliberately not all ones (see the module docstring).
        seed: seeds the cotangent and the projection directions.
        mode: ``"full"`` perturbs every element of every input (2 calls of
            ``fn`` per element). ``"projection"`` compares directional
            derivatives along ``n_projections`` random directions per input
            (2 calls per direction), which is cheap for large inputs but can
            only name the input and the direction that failed, not the element.
        n_projections: number of random directions per input in projection mode.

    Returns:
        True, so that ``assert gradcheck(...)`` reads naturally.

    Raises:
        GradcheckError: when an analytic gradient has the wrong shape or
            disagrees with the numeric one. The message names the input index,
            the worst element's index, both values and the tolerance.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this module's
    weights = ("the cotangent given" if cotangent is not None
               else f"a random normal cotangent v (seed={seed})")
    note = (f"the numbers are cotangent-weighted: derivatives of sum(v * fn(inputs)), the "
            f"vector-Jacobian product v^T J, with {weights}, not single Jacobian entries")
    return _check_gradients(fn, inputs, eps, atol, rtol, cotangent, seed, mode, n_projections,
                            check="gradcheck", describe=lambda i: f"input {i}",
                            context=lambda: f"{_where(fn)}; {note}")


def _where(fn):
    """`fn` as a reader finds it: its qualified name and the file and line defining it. A
    Function's `apply` is named by its class; a functools.partial by what it wraps."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    owner = getattr(target, "__self__", None)
    if isinstance(owner, type):  # a classmethod such as MyOp.apply: the class is the op
        name, source = f"{owner.__qualname__}.{target.__name__}", owner
    else:
        name = getattr(target, "__qualname__", None) or type(target).__qualname__
        source = inspect.unwrap(target) if callable(target) else type(target)
    try:
        path = inspect.getsourcefile(source) or inspect.getfile(source)
        line = inspect.getsourcelines(source)[1]
        place = f" defined at {path}:{line}"
    except (TypeError, OSError):
        place = ""
    return f"checking {name}{place}"


def _check_gradients(fn, inputs, eps, atol, rtol, cotangent, seed, mode, n_projections,
                     check, describe, context):
    """gradcheck's body; `check` names the check, `describe(i)` input i in messages, and
    `context()` the function checked and what the compared numbers are."""
    __tracebackhide__ = True
    if mode not in ("full", "projection"):
        raise ValueError(f"{check}: mode must be 'full' or 'projection', got {mode!r}")
    inputs, checked = _differentiable_positions(inputs, check)
    rng = np.random.default_rng(seed)
    base_values = {i: _as_float64_array(inputs[i]) for i in checked}

    def call_fn(values, requires_grad):
        """Run fn with the checked inputs replaced by Tensors built from `values`."""
        args = list(inputs)
        for i in checked:
            args[i] = tl.Tensor(values[i], requires_grad=requires_grad, dtype=np.float64)
        return args, _outputs_as_tuple(fn(*args), check)

    # ---- analytic gradient: one backward per output, accumulating into the leaves
    leaves, outputs = call_fn(base_values, requires_grad=True)
    for position, output in enumerate(outputs):
        if output.dtype != np.float64:
            raise GradcheckError(
                f"{check}: output {position} has dtype {output.dtype} for float64 inputs; "
                f"finite differences need float64 outputs (an op is losing precision)")
    cotangents = _make_cotangents(outputs, cotangent, rng, check)
    with_graph = [k for k, output in enumerate(outputs) if output.requires_grad]
    for n, k in enumerate(with_graph):
        last = n == len(with_graph) - 1
        # Several outputs may share one graph (e.g. split), so keep it until the last.
        outputs[k].backward(cotangents[k], retain_graph=not last)

    analytic = {}
    for i in checked:
        grad = leaves[i].grad
        if grad is None:  # the output does not depend on this input
            grad = np.zeros_like(base_values[i])
        grad = np.asarray(grad.data if isinstance(grad, tl.Tensor) else grad)
        if grad.shape != base_values[i].shape:
            raise GradcheckError(
                f"{check}: analytic gradient of {describe(i)} has shape {grad.shape}, "
                f"but the input has shape {base_values[i].shape}")
        analytic[i] = grad.astype(np.float64)

    # ---- numeric gradient of L(x) = sum_k sum(cotangent_k * output_k(x))
    def evaluate(values):
        """The outputs of fn as float64 arrays; no graph is needed for this."""
        with tl.no_grad():
            _, outs = call_fn(values, requires_grad=False)
        return [out.data.astype(np.float64) for out in outs]

    def central_difference(outputs_plus, outputs_minus):
        """(L(x + h) - L(x - h)) / (2 eps), with the outputs subtracted BEFORE summing.

        Subtracting first means that outputs which do not move (a masked -1e9 or -inf,
        a constant) contribute exactly zero instead of swamping the sum with
        rounding error (or making it inf - inf = NaN)."""
        total = 0.0
        for cot, plus, minus in zip(cotangents, outputs_plus, outputs_minus):
            change = np.where(plus == minus, 0.0, plus - minus)
            total += float(np.sum(cot * change))
        return total / (2 * eps)

    first, second = evaluate(base_values), evaluate(base_values)
    if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second)):
        raise GradcheckError(
            f"{check}: fn gives different results for the same inputs; seed any "
            "randomness inside fn (e.g. dropout) so that finite differences make sense")

    if mode == "full":
        for i in checked:
            numeric = _numeric_gradient(evaluate, central_difference, base_values, i, eps)
            _compare_elementwise(f"{check} failed for {describe(i)}", analytic[i], numeric,
                                 atol, rtol, context)
    else:
        for i in checked:
            for direction_index in range(n_projections):
                direction = rng.standard_normal(base_values[i].shape)
                numeric = _directional_derivative(evaluate, central_difference, base_values,
                                                  i, direction, eps)
                projected = float(np.sum(analytic[i] * direction))
                error = abs(projected - numeric)
                allowed = atol + rtol * abs(numeric)
                if not error <= allowed:  # also catches NaN
                    raise GradcheckError(
                        f"{check} failed for {describe(i)} (shape {base_values[i].shape}) "
                        f"along random direction {direction_index}: "
                        f"numeric directional derivative={numeric!r}, analytic={projected!r}, "
                        f"|difference|={error:.3e} > tolerance atol + rtol*|numeric| = "
                        f"{atol:g} + {rtol:g}*{abs(numeric):.3e} = {allowed:.3e} ({context()})")
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0,
                  mode="full", n_projections=3):
    """Check the second derivatives of ``fn`` against finite differences of its first ones.

    Like ``torch.autograd.gradgradcheck``: the first-order vector-Jacobian product

        vjp(x, v) = v^T J_fn(x)    (``tl.autograd.grad(fn(x), x, v, create_graph=True)``)

    is itself a differentiable function of the inputs ``x`` and of the cotangent ``v``, and
    :func:`gradcheck` checks *it*: its gradient, computed by a backward pass through the
    recorded first backward pass (double backward), against central finite differences of
    ``vjp``, with a second random cotangent. The derivative with respect to ``x`` checks the
    second derivatives of ``fn``; the one with respect to ``v`` checks that the recorded first
    backward pass is the right linear function of its incoming gradient.

    Args:
        fn, inputs, eps, atol, rtol, mode, n_projections: as for :func:`gradcheck`.
        grad_outputs: the cotangent ``v`` of the first-order product (an array, or one per
            output of ``fn``). By default a standard normal array drawn with ``seed``.
        seed: seeds ``v`` and the second cotangent.

    Returns:
        True.

    Raises:
        GradcheckError: when a second derivative disagrees with the finite differences of
            the first; the message names the input (``input i``, or ``grad_outputs[k]`` for
            the cotangent), the worst element and both values.
    """
    __tracebackhide__ = True
    inputs, checked = _differentiable_positions(inputs, "gradgradcheck")
    n_inputs = len(inputs)
    probe = [tl.Tensor(_as_float64_array(v), dtype=np.float64) if i in checked else v
             for i, v in enumerate(inputs)]
    with tl.no_grad():
        outputs = _outputs_as_tuple(fn(*probe), "gradgradcheck")
    first_cotangents = _make_cotangents(outputs, grad_outputs, np.random.default_rng(seed),
                                        "gradgradcheck")

    def first_order_vjp(*args):
        """v^T J_fn(x) with the backward pass recorded, one Tensor per checked input."""
        xs, vs = list(args[:n_inputs]), args[n_inputs:]
        with tl.enable_grad():
            for i in checked:
                if not xs[i].requires_grad:  # the finite-difference side passes constants
                    xs[i] = tl.Tensor(xs[i].data, requires_grad=True)
            outs = _outputs_as_tuple(fn(*xs), "gradgradcheck")
            pairs = [(o, v) for o, v in zip(outs, vs) if o.requires_grad]
            grads = [None] * len(checked)
            if pairs:
                grads = tl.autograd.grad([o for o, _ in pairs], [xs[i] for i in checked],
                                         [v for _, v in pairs], create_graph=True,
                                         allow_unused=True)
        return tuple(tl.Tensor(np.zeros(xs[i].shape), dtype=np.float64) if g is None else g
                     for i, g in zip(checked, grads))

    def describe(i):
        return f"input {i}" if i < n_inputs else f"grad_outputs[{i - n_inputs}]"

    weights = "grad_outputs given" if grad_outputs is not None else f"random v (seed={seed})"
    note = (f"the numbers are cotangent-weighted second derivatives: the gradient of "
            f"sum(u * vjp(inputs, v)), where vjp(inputs, v) = v^T J_fn is the first-order "
            f"vector-Jacobian product, with v the {weights} and u a random normal cotangent "
            f"(seed={seed + 1}), not single Hessian entries")
    return _check_gradients(first_order_vjp, list(inputs) + list(first_cotangents), eps, atol,
                            rtol, None, seed + 1, mode, n_projections,
                            check="gradgradcheck", describe=describe,
                            context=lambda: f"{_where(fn)}; {note}")


def _numeric_gradient(evaluate, central_difference, values, i, eps):
    """dL / d values[i], one element at a time, by central differences."""
    x = values[i]
    gradient = np.zeros_like(x)
    flat_x = x.reshape(-1)            # a view: writing into it perturbs x
    flat_gradient = gradient.reshape(-1)
    for j in range(flat_x.size):
        original = flat_x[j]
        flat_x[j] = original + eps
        plus = evaluate(values)
        flat_x[j] = original - eps
        minus = evaluate(values)
        flat_x[j] = original          # restore before moving on
        flat_gradient[j] = central_difference(plus, minus)
    return gradient


def _directional_derivative(evaluate, central_difference, values, i, direction, eps):
    """d/dt L(values[i] + t * direction) at t = 0, by central differences."""
    original = values[i]
    try:
        values[i] = original + eps * direction
        plus = evaluate(values)
        values[i] = original - eps * direction
        minus = evaluate(values)
    finally:
        values[i] = original
    return central_difference(plus, minus)


def _compare_elementwise(failure, analytic, numeric, atol, rtol, context):
    __tracebackhide__ = True
    error = np.abs(analytic - numeric)
    allowed = atol + rtol * np.abs(numeric)
    # NaN in either gradient must fail, so test "not <=" rather than ">".
    failing = ~(error <= allowed)
    if not failing.any():
        return
    # The worst element: NaNs first, then the largest excess over the tolerance.
    excess = np.where(np.isnan(error), np.inf, error - allowed)
    worst = np.unravel_index(int(np.argmax(excess)), analytic.shape)
    raise GradcheckError(
        f"{failure} (shape {analytic.shape}): "
        f"{int(failing.sum())} of {analytic.size} gradient elements disagree; "
        f"worst at index {tuple(int(k) for k in worst)}: "
        f"numeric={float(numeric[worst])!r}, analytic={float(analytic[worst])!r}, "
        f"|difference|={error[worst]:.3e} > tolerance atol + rtol*|numeric| = "
        f"{atol:g} + {rtol:g}*{abs(numeric[worst]):.3e} = {allowed[worst]:.3e} ({context()})")


# ----------------------------------------------------------------------------
# Comparing floating point results with an exact reference
# ----------------------------------------------------------------------------

def rounding_bound(magnitude, n=1, dtype=np.float32):
    """The most rounding error a result computed in `dtype` can carry: ``n`` roundings of
    terms whose absolute values add up to `magnitude`.

    A sum of n terms x_i (a dot product, a reduction), however it is ordered or blocked,
    with fused multiply-adds or not, is within ``gamma_n * sum |x_i|`` of its exact value,
    ``gamma_n = n u / (1 - n u)``, u = eps / 2 the unit roundoff (Higham, section 3.1).
    This returns ``n * eps * magnitude``, which is twice gamma_n while n u is small, so that
    it also covers an "exact" reference computed in the same precision (a float64 result
    checked against a float64 reference), plus ``n`` times the smallest normal number of
    `dtype` for results that underflow. Elementwise over `magnitude` (a float64 array).

    Examples: a matmul ``a @ b`` with k terms per element, ``rounding_bound(|a| @ |b|, k + 1,
    dtype)``; a sum over an axis of length n, ``rounding_bound(|x|.sum(axis), n + 1, dtype)``;
    one elementwise operation, ``rounding_bound(|result|, 1, dtype)``.
    """
    info = np.finfo(dtype)
    return n * (float(info.eps) * np.asarray(magnitude, dtype=np.float64) + float(info.tiny))


def assert_within_rounding(actual, exact, bound, err_msg=""):
    """Assert ``|actual - exact| <= bound`` elementwise, shapes equal.

    `exact` is the exact result (in practice: the computation in float64, or in a wider
    type than `actual`), `bound` the rounding error allowed, e.g. from
    :func:`rounding_bound`, broadcast to `exact`'s shape. Where `exact` is NaN or infinite,
    `actual` must be the same. Raises AssertionError naming how many elements fail and the
    worst one (its index, both values, the error and the bound); returns the largest ratio
    of error to bound, which says how close the check came to failing.
    """
    actual = np.asarray(actual)
    exact = np.asarray(exact, dtype=np.float64)
    prefix = f"{err_msg}: " if err_msg else ""
    if actual.shape != exact.shape:
        raise AssertionError(f"{prefix}shape {actual.shape} differs from the exact result's "
                             f"{exact.shape}")
    actual = actual.astype(np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), exact.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(actual - exact)
        same = (actual == exact) | (np.isnan(actual) & np.isnan(exact))
        # NaN in either fails, and so does any difference from an infinite exact result
        within = same | (np.isfinite(exact) & (error <= bound))
        ratio = np.where(same, 0.0, error / bound)
    # failing elements rank above every passing one (a NaN error: infinitely far)
    ratio = np.where(within, ratio, np.maximum(np.nan_to_num(ratio, nan=np.inf), 1.0))
    if within.all():
        return float(ratio.max()) if ratio.size else 0.0
    worst = np.unravel_index(int(np.argmax(ratio)), exact.shape)
    raise AssertionError(
        f"{prefix}{int((~within).sum())} of {exact.size} elements differ from the exact result "
        f"by more than their rounding-error bound; worst at index "
        f"{tuple(int(i) for i in worst)}: actual={float(actual[worst])!r}, "
        f"exact={float(exact[worst])!r}, "
        f"|difference|={error[worst]:.3e} > bound {bound[worst]:.3e} "
        f"({ratio[worst]:.3g} times the bound)")


# ----------------------------------------------------------------------------
# Hypothesis strategies
# ----------------------------------------------------------------------------

_NO_HYPOTHESIS = ("tensorlite.testing.strategies needs Hypothesis, which is not installed: "
                  "pip install hypothesis (or, from a tensorlite checkout, pip install '.[test]')")


def _require_hypothesis():
    if st is None:
        raise ImportError(_NO_HYPOTHESIS)


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes such as ``()``, ``(3,)``, ``(2, 1, 4)``."""
    _require_hypothesis()
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims,
                            min_side=min_side, max_side=max_side)


def _inside(bound, dtype, toward):
    """`bound` rounded to `dtype`, moved toward `toward` if rounding pushed it out.

    Hypothesis insists that float32 bounds be exactly representable; 0.1 is not.
    """
    rounded = np.asarray(bound, dtype=dtype)
    if (rounded < bound) if toward > bound else (rounded > bound):
        rounded = np.nextafter(rounded, np.asarray(toward, dtype=dtype))
    return float(rounded)


def _float_elements(dtype, min_value, max_value, min_magnitude):
    width = np.dtype(dtype).itemsize * 8
    min_value = _inside(min_value, dtype, toward=np.inf)
    max_value = _inside(max_value, dtype, toward=-np.inf)
    if not min_magnitude:
        return st.floats(min_value=min_value, max_value=max_value, width=width,
                         allow_nan=False, allow_infinity=False, allow_subnormal=False)
    # |x| >= min_magnitude keeps values away from a kink at 0 (relu, abs, 1/x).
    min_magnitude = _inside(min_magnitude, dtype, toward=np.inf)
    choices = []
    if max_value >= min_magnitude:
        choices.append(st.floats(min_value=max(min_magnitude, min_value),
                                 max_value=max_value, width=width))
    if min_value <= -min_magnitude:
        choices.append(st.floats(min_value=min_value,
                                 max_value=min(-min_magnitude, max_value), width=width))
    if not choices:
        raise ValueError("tensors: no value satisfies min_value, max_value and min_magnitude")
    return st.one_of(*choices)


def tensors(shape=None, dtype=np.float64, elements=None, min_value=-10.0, max_value=10.0,
            min_magnitude=None, min_dims=0, max_dims=3, max_side=4, as_tensor=False):
    """NumPy arrays (or Tensors with ``as_tensor=True``) of finite values.

    Args:
        shape: a fixed shape, a strategy of shapes, or None for :func:`shapes`
            with ``min_dims``, ``max_dims`` and ``max_side``.
        dtype: a NumPy dtype; float64 by default because gradcheck works in float64.
        elements: a strategy for the elements; overrides the bounds below.
        min_value, max_value: bounds of float elements (e.g. ``min_value=0.1``
            for inputs of log or sqrt).
        min_magnitude: if given, every element satisfies ``|x| >= min_magnitude``,
            which keeps inputs away from a kink at zero.
        as_tensor: return a ``tl.Tensor`` instead of an array.
    """
    _require_hypothesis()
    if shape is None:
        shape = shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side)
    if elements is None:
        if np.issubdtype(dtype, np.floating):
            elements = _float_elements(dtype, min_value, max_value, min_magnitude)
        else:
            elements = st.integers(int(np.ceil(min_value)), int(np.floor(max_value)))
    arrays = hnp.arrays(dtype, shape, elements=elements)
    return arrays.map(tl.Tensor) if as_tensor else arrays


def well_separated(shape, gap=0.25, offset=None):
    """Float64 arrays whose elements all differ by more than ``7/8 * gap``.

    Useful for ops with ties or near-ties (max, sort, layer norm of a constant
    row): a finite-difference step smaller than ``gap / 2`` can never change
    which element is the largest. Values are a random permutation of
    ``offset + gap * k`` plus a jitter below ``gap / 8``.
    """
    _require_hypothesis()
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))

    @st.composite
    def draw_array(draw):
        drawn_shape = draw(shape_strategy)
        size = int(np.prod(drawn_shape, dtype=np.int64))
        order = draw(st.permutations(range(size)))
        jitter = draw(hnp.arrays(np.float64, (size,),
                                 elements=st.floats(0, gap / 8, exclude_max=True)))
        start = draw(st.floats(-5, 5)) if offset is None else offset
        values = start + gap * np.asarray(order, dtype=np.float64) + jitter
        return values.reshape(drawn_shape)

    return draw_array()


def broadcastable_shapes(n, min_dims=0, max_dims=3, max_side=4):
    """Tuples of ``n`` shapes that broadcast together under NumPy rules.

    e.g. ``((3, 1), (4,), ())`` for ``n=3``: sides of 1 and missing leading
    dimensions both occur, which is where gradient reduction bugs hide.
    """
    _require_hypothesis()
    return hnp.mutually_broadcastable_shapes(
        num_shapes=n, min_dims=min_dims, max_dims=max_dims, max_side=max_side,
    ).map(lambda shapes_and_result: tuple(shapes_and_result.input_shapes))


def valid_axes(ndim, allow_none=True, allow_empty_tuple=False):
    """Axis arguments for a reduction over an ``ndim``-dimensional array.

    Draws None (reduce everything), a single int (possibly negative), or a
    tuple of distinct axes (possibly negative). The empty tuple is excluded by
    default because libraries disagree on what it means.
    """
    _require_hypothesis()
    options = [st.none()] if allow_none else []
    if ndim > 0:
        options.append(st.integers(-ndim, ndim - 1))
        options.append(hnp.valid_tuple_axes(ndim, min_size=0 if allow_empty_tuple else 1))
    elif allow_empty_tuple:
        options.append(st.just(()))
    if not options:
        raise ValueError("valid_axes: a 0-d array has no axes; allow_none must be True")
    return st.one_of(*options)


def logits(shape=None, max_magnitude=1e4, allow_neg_inf=False, dtype=np.float64,
           max_rows=5, max_classes=6):
    """2-D (rows, classes) logits with values up to ``max_magnitude`` in size.

    Large magnitudes (1e4 overflows ``exp`` even in float64) catch softmax and
    cross-entropy code that forgets to subtract the row maximum. With
    ``allow_neg_inf=True`` some entries are ``-inf`` (masked-out classes), but
    every row keeps at least one finite entry.
    """
    _require_hypothesis()
    if shape is None:
        shape = st.tuples(st.integers(1, max_rows), st.integers(2, max_classes))
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    values = st.floats(-max_magnitude, max_magnitude, allow_nan=False, allow_infinity=False,
                       width=np.dtype(dtype).itemsize * 8)

    @st.composite
    def draw_logits(draw):
        drawn_shape = draw(shape_strategy)
        array = draw(hnp.arrays(dtype, drawn_shape, elements=values))
        if allow_neg_inf and array.size:
            masked = draw(hnp.arrays(np.bool_, drawn_shape))
            # keep one finite entry per row so that softmax is defined
            keep = draw(hnp.arrays(np.int64, drawn_shape[:-1],
                                   elements=st.integers(0, drawn_shape[-1] - 1)))
            np.put_along_axis(masked, keep[..., None], False, axis=-1)
            array = np.where(masked, -np.inf, array).astype(dtype)
        return array

    return draw_logits()


# `tensorlite.testing.strategies` is a namespace (a module object) so that both
# `from tensorlite.testing import strategies as tst` and
# `import tensorlite.testing.strategies` work.
strategies = types.ModuleType(
    __name__ + ".strategies",
    "Hypothesis strategies for property-testing tensorlite ops (see tensorlite.testing).")
for _name, _function in [("tensors", tensors), ("shapes", shapes),
                         ("broadcastable_shapes", broadcastable_shapes),
                         ("valid_axes", valid_axes), ("logits", logits),
                         ("well_separated", well_separated)]:
    setattr(strategies, _name, _function)
strategies.__all__ = ["tensors", "shapes", "broadcastable_shapes", "valid_axes", "logits",
                      "well_separated"]
sys.modules[strategies.__name__] = strategies
del _name, _function

if st is None:
    # Without Hypothesis every way of reaching the strategies fails with one ImportError that
    # says what to install: `from tensorlite.testing import strategies` and `import
    # tensorlite.testing.strategies as tst` through this module's __getattr__, a plain `import
    # tensorlite.testing.strategies` at its first attribute. gradcheck and the rest still work.
    def _unavailable(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(_NO_HYPOTHESIS)

    strategies = types.ModuleType(strategies.__name__, strategies.__doc__)
    strategies.__getattr__ = _unavailable
    sys.modules[strategies.__name__] = strategies
    __all__ = [name for name in __all__ if name != "strategies"]

    def __getattr__(name):
        if name == "strategies":
            raise ImportError(_NO_HYPOTHESIS)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    del strategies
