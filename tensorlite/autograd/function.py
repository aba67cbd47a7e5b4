"""`Function`: one differentiable operation, its forward and its backward (a vector-Jacobian
product) side by side, and the record it leaves on its output for the engine to walk.

How an op is recorded. `Function.apply` runs `forward` on the inputs' arrays and, when gradients
are wanted, keeps the function object on the output tensor as `_ctx`, with its `parents`: for each
input, the op that produced it, or the input itself if it is a leaf (None if it needs no
gradient). The graph therefore holds ops and leaves, never intermediate tensors.

Higher order. A backward is written with operations that NumPy arrays and Tensors share (`*`, `/`,
`.sum(axis=, keepdims=)`, `.reshape`, and `SomeOp.run(...)`, which is the plain forward on arrays
and a recorded op on Tensors). A normal backward is handed arrays; a `create_graph` backward is
handed Tensors (the gradient, and what forward saved, reconnected to the graph), so the same lines
record the graph of the gradient.

In-place safety. `save_for_backward` notes the version counters of what it saves; the engine
checks them before calling backward, so a saved value modified in place raises, naming the op.
"""

from __future__ import annotations

import time

import numpy as np

from tensorlite.autograd.grad_mode import _State, _thread_state
from tensorlite.tensor import Tensor

__all__ = ["Function", "IndexedGrad"]


class Function:
    """Base class of every differentiable operation.

    Subclasses define
        forward(self, *arrays, **params) -> np.ndarray
        backward(self, grad) -> one gradient (or None) per tensor input, as a tuple
    and are used through `apply`, which accepts Tensors, arrays and Python numbers. Inputs or the
    output that backward needs are kept with `self.save_for_backward(...)` and read back as
    `self.saved`; anything else (masks, indices, axes) is a plain attribute and counts as a
    constant for differentiation. Inside `backward`, `self.needs_input_grad[i]` says whether
    input i wants a gradient, so an op can skip work nobody will use.

    Example (this is how `tanh` is defined in `tensorlite/ops/elementwise.py`):

        class Tanh(Function):
            def forward(self, x):
                y = np.tanh(x)
                self.save_for_backward(y)
                return y

            def backward(self, grad):
                y, = self.saved
                return (grad * (1 - y * y),)

    Written this way, the backward works on Tensors as well as arrays, which is all that
    `create_graph=True` needs (see the module docstring). Inside a backward, `OtherOp.run(...)`
    calls another op in the same two-faced way.
    """

    # Ops whose forward legitimately produces inf from finite inputs (masked_fill with -inf)
    # set this, so detect_anomaly does not flag them.
    may_produce_infinite = False
    # Ops whose output is a view of their first input (reshape, transpose, slicing) set this:
    # the output then shares the input's version counter, as it shares its memory.
    is_view = False

    saved_arrays = ()
    saved_versions = ()
    _saved_for_graph = None  # the saved values as Tensors, during a create_graph backward
    output_hooks = None  # hooks registered on the output tensor (Tensor.register_hook)
    released = False
    parents = ()  # set by apply when the output requires grad; emptied again by _release
    input_shapes = ()

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def save_for_backward(self, *arrays):
        """Keep inputs and/or the output of forward for backward, read back as `self.saved`.
        Only those: the engine knows where each came from, so a create_graph backward gets them
        back connected to the graph, and an in-place change to one before backward is caught."""
        self.saved_arrays = arrays

    @property
    def needs_input_grad(self):
        """One bool per input: whether it wants a gradient (read in backward, where it is
        derived from `parents` rather than stored for every op)."""
        return tuple([parent is not None for parent in self.parents])

    @property
    def saved(self):
        """What forward saved: arrays, or Tensors during a create_graph backward."""
        return self.saved_arrays if self._saved_for_graph is None else self._saved_for_graph

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        op = cls()
        tensors = _as_tensors(inputs)
        # Plain loops rather than comprehensions here and below: this runs for every op, and in
        # CPython 3.11 each comprehension is a function call of its own.
        arrays = []
        any_input_requires_grad = False
        for t in tensors:
            arrays.append(t._data)
            if t._requires_grad:
                any_input_requires_grad = True
        if _State.profiler is None and not _State.anomaly_enabled:
            data = op.forward(*arrays, **params)
        else:
            data = _observed_forward(op, tensors, params)
        if type(data) is not np.ndarray:  # NumPy gives a scalar for 0-d inputs: -x, x + x
            data = _as_output_array(op, data)
        requires_grad = any_input_requires_grad and _thread_state.grad_enabled
        out = Tensor._make(data, requires_grad)
        if cls.is_view:
            out._version_counter = tensors[0]._version_counter
        if requires_grad:
            # Where each input's gradient goes: the op that made it, the leaf itself, or nowhere.
            parents, shapes = [], []
            for t in tensors:
                parents.append((t._ctx or t) if t._requires_grad else None)
                shapes.append(t._data.shape)
            op.parents, op.input_shapes = tuple(parents), tuple(shapes)
            if op.saved_arrays:
                _record_saved_sources(op, tensors, out)
            out._ctx = op
        return out

    @classmethod
    def run(cls, *inputs, **params):
        """For use inside a backward: on arrays (a plain backward) just the forward computation,
        nothing recorded; on Tensors (a create_graph backward) `apply`, so the op is recorded."""
        if any(isinstance(x, Tensor) for x in inputs):
            return cls.apply(*inputs, **params)
        return cls().forward(*inputs, **params)

    @property
    def name(self) -> str:
        return type(self).__name__

    def _release(self):
        """Drop everything saved for backward; a second backward through here is an error.
        (Its parents and input shapes become the class's empty ones.)"""
        hooks = self.output_hooks
        state = self.__dict__
        state.clear()
        state["released"] = True
        if hooks is not None:
            state["output_hooks"] = hooks


_OUTPUT = -1  # in saved_sources: "this saved array is the op's output"


def _record_saved_sources(op, tensors, out):
    """For each array forward saved: which input it is (or the output), and that tensor's
    version counter with its current value. By identity, each saved array taking the first
    input not yet taken, so that `x * x.detach()` keeps its two inputs apart."""
    sources, versions = [], []
    for array in op.saved_arrays:
        source = None
        for i, t in enumerate(tensors):
            if t._data is array:
                if i not in sources:
                    source = i
                    break
                if source is None:  # every input holding this array is taken: share the first
                    source = i
        if source is not None:
            counter = tensors[source]._version_counter
        elif array is out._data:
            source, counter = _OUTPUT, out._version_counter
        else:
            raise TypeError(f"{op.name}.forward saved an array that is neither one of its inputs "
                            f"nor its output; keep derived values as plain attributes")
        sources.append(source)
        versions.append((counter, counter[0]))
    op.saved_sources, op.saved_versions = tuple(sources), tuple(versions)


def _check_saved_versions(op):
    for position, (counter, version) in enumerate(op.saved_versions):
        if counter[0] != version:
            source = op.saved_sources[position]
            which = "its output" if source == _OUTPUT else f"its input {source}"
            raise RuntimeError(
                f"backward: {which} (shape {op.saved_arrays[position].shape}), saved by op "
                f"'{op.name}' for backward, was modified in place afterwards (version {version} "
                f"-> {counter[0]}), so its gradient would be wrong. Do that operation out of "
                f"place, or on a copy.")


def _saved_as_tensors(op):
    """The saved arrays as Tensors wired into the graph, for a create_graph backward: an input
    is its leaf, or a Tensor whose history is the op that produced it; the output is a Tensor
    whose history is `op` itself."""
    tensors = []
    for array, source in zip(op.saved_arrays, op.saved_sources):
        producer = op if source == _OUTPUT else op.parents[source]
        if producer is None:  # an input that needs no gradient: a constant
            tensors.append(Tensor._make(array, False))
        elif isinstance(producer, Tensor):  # a leaf
            tensors.append(producer)
        else:
            tensor = Tensor._make(array, True)
            tensor._ctx = producer
            tensors.append(tensor)
    return tuple(tensors)


def _as_output_array(op, scalar):
    """A forward's NumPy scalar as a 0-d array, also where forward saved it as its output."""
    data = np.asarray(scalar)
    if op.saved_arrays:
        op.saved_arrays = tuple([data if saved is scalar else saved for saved in op.saved_arrays])
    return data


def _as_tensors(inputs):
    """Tensors pass through; numbers and arrays become constants. A Python number takes the
    dtype of the first floating tensor input, so `x * 2.0` stays float32."""
    for x in inputs:
        if not isinstance(x, Tensor):
            break
    else:
        return inputs  # the usual case
    reference_dtype = next((x.dtype for x in inputs if isinstance(x, Tensor) and x.dtype.kind == "f"),
                           np.float32)
    converted = []
    for x in inputs:
        if isinstance(x, Tensor):
            converted.append(x)
        elif isinstance(x, (int, float, bool)):
            converted.append(Tensor._make(np.asarray(x, dtype=reference_dtype), False))
        else:
            converted.append(Tensor(x))
    return tuple(converted)


def _observed_forward(op, tensors, params):
    """`op.forward` under the profiler (timed) and/or detect_anomaly (checked): kept out of
    `apply`, whose usual path is then a single test."""
    started = time.perf_counter()
    data = op.forward(*[t._data for t in tensors], **params)
    if _State.profiler is not None:
        _State.profiler.record(op.name, "forward", time.perf_counter() - started)
    if _State.anomaly_enabled:
        _check_forward_finite(op, data, tensors)
    return data


# --------------------------------------------------------------------------------------------
# detect_anomaly's checks
# --------------------------------------------------------------------------------------------

def _non_finite(value):
    """'nan' or 'inf' if the floating array (or Tensor) holds such values, else None."""
    array = value._data if isinstance(value, Tensor) else value
    if isinstance(array, IndexedGrad):
        array = array.values
    if array is None or np.asarray(array).dtype.kind != "f" or np.all(np.isfinite(array)):
        return None
    return "nan" if np.isnan(array).any() else "inf"


def _check_forward_finite(op, result, tensors):
    """Blame a leaf that already holds nan/inf, or else the op that produced them."""
    for position, t in enumerate(tensors):
        if t._ctx is None and t._requires_grad:
            what = _non_finite(t)
            if what is not None:
                name = f" '{t.name}'" if t.name else ""
                raise RuntimeError(f"detect_anomaly: input {position} of op '{op.name}' is a leaf "
                                   f"tensor{name} of shape {t.shape} that already holds {what} "
                                   f"values (they were not produced by any op)")
    if op.may_produce_infinite or any(_non_finite(t) for t in tensors):
        return
    what = _non_finite(result)
    if what is not None:
        raise RuntimeError(f"detect_anomaly: op '{op.name}' produced {what} values in its "
                           f"forward (output shape {np.shape(result)}) from finite inputs")


def _check_backward_finite(op, input_grads, grad):
    """Blame the op whose gradients turned non-finite although the gradient reaching it and the
    values it saved were finite."""
    if _non_finite(grad) or any(_non_finite(a) for a in op.saved_arrays):
        return
    for position, input_grad in enumerate(input_grads):
        what = _non_finite(input_grad)
        if what is not None:
            raise RuntimeError(f"detect_anomaly: op '{op.name}' produced {what} values in its "
                               f"backward (gradient of input {position}, shape "
                               f"{np.shape(input_grad)}) from finite inputs")



# --------------------------------------------------------------------------------------------
# IndexedGrad: the gradient of x[index], placed by the engine.
# --------------------------------------------------------------------------------------------

class IndexedGrad:
    """The gradient of `x[index]` with respect to x, not yet placed: `values` belong at
    `index` of an array of x's shape that is zero everywhere else.

    A plain backward of `x[index]` (ops.GetItem) returns this instead of zero-filling a whole
    array of x's shape, and the engine adds every piece that reaches x into one buffer. So
    `q, k, v = qkv.split(C, axis=2)` costs one (B, T, 3C) gradient, not three zero-filled ones
    and two sums of them. (A create_graph backward records the op IndexBackward instead.)"""

    def __init__(self, values, index, advanced, shape):
        self.values = values  # the gradient of x[index], shape of x[index]
        self.index = index
        self.advanced = advanced  # integer arrays in the index: an element may be picked twice
        self.shape = shape  # x's shape

    def add_to(self, buffer):
        """buffer[index] += values (scatter-added for integer arrays, so repeats add up)."""
        if self.advanced:
            np.add.at(buffer, self.index, self.values)
        else:
            buffer[self.index] += self.values

    def placed(self):
        """The gradient as an array of x's shape: `values` at `index`, zeros elsewhere."""
        buffer = np.zeros(self.shape, dtype=self.values.dtype)
        self.add_to(buffer)
        return buffer


