"""The autograd engine: `Tensor`, `Function`, and the reverse-mode pass.

How it works, in three sentences. Every operation is a `Function` subclass with a `forward` on
NumPy arrays and a `backward` that maps the gradient of the output to gradients of the inputs
(a vector-Jacobian product, VJP). `Function.apply` runs `forward` and, when gradients are wanted,
records the function object on the output tensor as `_ctx`, and on the function its `parents`:
for each input, the op that produced it, or the input itself if it is a leaf. `Tensor.backward`
sorts that graph of ops and leaves topologically and walks it from the output to the leaves,
calling each `backward` once and summing the gradients that reach a node along different paths.

The graph holds ops and leaves, never intermediate tensors: an intermediate array stays in memory
only while the user holds its tensor or an op saved it for its backward (as in PyTorch).

Broadcasting is handled in exactly one place, `unbroadcast`: an op's backward may return a gradient
in the broadcast shape of its output, and the engine sums it back to the input's shape (and checks
that it got there), so no op reduces broadcast gradients by hand.

Higher order. A backward is written with operations that NumPy arrays and Tensors share (`*`, `/`,
`.sum(axis=, keepdims=)`, `.reshape`, and `SomeOp.run(...)`, which is the plain forward on arrays
and a recorded op on Tensors). A normal backward hands it arrays: fast, nothing recorded. With
`create_graph=True` the engine hands it Tensors instead: the incoming gradient, and what forward
saved with `save_for_backward` (inputs and output only), reconnected to the graph they came from.
The very same lines then record a graph of the gradient, which can be differentiated again. An
op whose backward cannot do that (it converts a Tensor to an array, or returns an array) raises
an error naming itself instead of returning a silently wrong zero.

In-place safety. Every tensor carries a version counter (shared with its views) that in-place
operations increment. `save_for_backward` notes the versions of what it saves; a backward that
finds one changed raises, naming the op, instead of computing a wrong gradient.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import operator
import threading
import time
import weakref

import numpy as np

__all__ = [
    "Tensor", "Function", "unbroadcast", "no_grad", "enable_grad", "is_grad_enabled",
    "detect_anomaly", "is_anomaly_enabled", "grad", "autograd_grad", "to_dot", "manual_seed",
    "rng",
]


# --------------------------------------------------------------------------------------------
# Switches: grad mode (per thread), anomaly mode, and the generator used by init and dropout.
# --------------------------------------------------------------------------------------------

class _State:
    anomaly_enabled = False
    generator = np.random.default_rng()
    profiler = None  # a tensorlite.profiler.Profiler while one is active


class _ThreadState(threading.local):
    """The switches each thread has its own copy of, as in PyTorch: `no_grad` in one thread
    does not stop another thread recording its graph, and a backward pass (which turns
    recording off unless create_graph) does not hide the graph another thread is building."""
    grad_enabled = True
    # The op whose backward is being recorded by a create_graph pass (None otherwise): while it is
    # set, turning a graph-carrying Tensor into an array would silently drop second derivatives.
    recording_backward_of = None


_thread_state = _ThreadState()


def is_grad_enabled() -> bool:
    """True unless this thread is inside `no_grad()`."""
    return _thread_state.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def _recreate_cm(self):
        # Used as a decorator: a fresh object per call, so that calls running at once (in
        # threads, or nested) each restore their own previous mode.
        return type(self)(self.enabled)

    def __enter__(self):
        self.previous = _thread_state.grad_enabled
        _thread_state.grad_enabled = self.enabled

    def __exit__(self, *exc_info):
        _thread_state.grad_enabled = self.previous
        return False


def no_grad():
    """Context manager (or decorator) in which operations record no graph. Like PyTorch's, it
    holds for the thread that enters it; other threads keep their own mode."""
    return _GradMode(False)


def enable_grad():
    """Context manager (or decorator) that turns graph recording back on inside `no_grad`."""
    return _GradMode(True)


def is_anomaly_enabled() -> bool:
    return _State.anomaly_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Inside this block every op checks its results: the first op whose forward output or
    backward gradient contains NaN or inf, although its own inputs were finite, raises a
    RuntimeError naming that op. Slow; meant for hunting down where a NaN was born."""
    previous = _State.anomaly_enabled
    _State.anomaly_enabled = True
    try:
        yield
    finally:
        _State.anomaly_enabled = previous


def manual_seed(seed: int) -> None:
    """Seed the generator behind `randn`, parameter initialisation and dropout."""
    _State.generator = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    """The generator behind `randn`, parameter initialisation and dropout."""
    return _State.generator


# --------------------------------------------------------------------------------------------
# Function: one differentiable operation, forward and backward side by side.
# --------------------------------------------------------------------------------------------

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

    Example (this is how `tanh` is defined in `tensorlite/ops.py`):

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
    def saved(self):
        """What forward saved: arrays, or Tensors during a create_graph backward."""
        return self.saved_arrays if self._saved_for_graph is None else self._saved_for_graph

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        op = cls()
        tensors = _as_tensors(inputs)
        if _State.profiler is None and not _State.anomaly_enabled:
            data = op.forward(*[t._data for t in tensors], **params)
        else:
            data = _observed_forward(op, tensors, params)
        needs_input_grad = tuple([t._requires_grad for t in tensors])
        requires_grad = _thread_state.grad_enabled and any(needs_input_grad)
        out = Tensor._make(data, requires_grad)
        if cls.is_view:
            out._version_counter = tensors[0]._version_counter
        if requires_grad:
            # Where each input's gradient goes: the op that made it, the leaf itself, or nowhere.
            op.parents = tuple([(t._ctx if t._ctx is not None else t) if t._requires_grad else None
                                for t in tensors])
            op.input_shapes = tuple([t._data.shape for t in tensors])
            op.needs_input_grad = needs_input_grad
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
        """Drop everything saved for backward; a second backward through here is an error."""
        hooks = self.output_hooks
        self.__dict__.clear()
        self.released = True
        self.parents = self.input_shapes = ()
        self.output_hooks = hooks


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


def _as_tensors(inputs):
    """Tensors pass through; numbers and arrays become constants. A Python number takes the
    dtype of the first floating tensor input, so `x * 2.0` stays float32."""
    if all([isinstance(x, Tensor) for x in inputs]):
        return inputs
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
# unbroadcast: the one place where broadcast gradients are reduced.
# --------------------------------------------------------------------------------------------

def unbroadcast(grad, shape: tuple):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1, so the
    gradient of the input is the sum over exactly those axes. (`grad` may be an array or, in
    a create_graph backward, a Tensor: both have `.sum(axis=, keepdims=)`.)"""
    if grad.shape == shape:
        return grad
    extra_leading = grad.ndim - len(shape)
    if extra_leading > 0:
        grad = grad.sum(axis=tuple(range(extra_leading)))
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


# --------------------------------------------------------------------------------------------
# Tensor
# --------------------------------------------------------------------------------------------

def _check_can_require_grad(array):
    """Raise unless `array` is floating point: a gradient is defined for floats only (an
    integer or boolean tensor holds indices and masks), as in PyTorch."""
    if array.dtype.kind != "f":
        raise TypeError(f"only floating point tensors can require gradients "
                        f"(got dtype {array.dtype})")


def _to_array(data, dtype=None) -> np.ndarray:
    """Lists and Python numbers of floats become float32; an existing float64 array stays
    float64. Half precision is refused rather than silently widened (see `Tensor`)."""
    if isinstance(data, Tensor):
        data = data._data
    array = np.asarray(data, dtype=dtype)
    if array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        raise TypeError(f"tensorlite computes in float32 or float64, not {array.dtype}: convert "
                        f"first, e.g. tl.Tensor(x.astype(np.float32))")
    if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        array = array.astype(np.float32)  # Python floats and lists: float32, as in PyTorch
    return array


class Tensor:
    """An `np.ndarray` plus what reverse-mode autodiff needs: `grad`, `requires_grad`, and the
    op that produced it (`_ctx`). Most methods and all operators are attached from the registry
    at the bottom of `tensorlite/ops.py`.

    dtypes: float32 (the default for Python floats) and float64 compute; integer and boolean
    tensors hold indices and masks. float16 is refused with an error saying how to convert,
    because NumPy's float16 arithmetic loses accuracy and is slow on a CPU."""

    # `data` and `requires_grad` are properties over the slots `_data` and `_requires_grad`, so
    # that assigning them is checked; the engine reads and writes the slots directly.
    __slots__ = ("_data", "grad", "_requires_grad", "_ctx", "name", "_version_counter", "_hooks",
                 "_grad_tensor", "__weakref__")
    # Make `ndarray + Tensor` call Tensor.__radd__ instead of NumPy broadcasting over a Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self._data = _to_array(data, dtype)
        if requires_grad:
            _check_can_require_grad(self._data)
        self._requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self.name = None
        self._version_counter = [0]
        self._hooks = None
        self._grad_tensor = None

    @classmethod
    def _make(cls, data: np.ndarray, requires_grad: bool) -> "Tensor":
        """Fast internal constructor: `data` is already a suitable array."""
        t = object.__new__(Tensor)
        t._data = data
        t._requires_grad = requires_grad
        t.grad = None
        t._ctx = None
        t.name = None
        t._version_counter = [0]
        t._hooks = None
        t._grad_tensor = None
        return t

    # ---- plain properties -------------------------------------------------------------------
    def _set_data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        elif not isinstance(value, np.ndarray):
            value = np.asarray(value)
        try:
            old_shape = self._data.shape
        except AttributeError:  # an instance being restored by copy or pickle
            old_shape = value.shape
        if value.shape != old_shape:
            # The graph and every gradient are shaped like the old data: a gradient computed
            # later would not fit the tensor. (A dtype change is fine: Module.to relies on it.)
            raise ValueError(f"Tensor.data: cannot assign data of shape {value.shape} to a "
                             f"tensor of shape {old_shape}; only the dtype may change. Make a "
                             f"new Tensor (or Parameter) of the new shape instead.")
        self._data = value

    def _set_requires_grad(self, requires_grad):
        if requires_grad:
            _check_can_require_grad(self._data)
        self._requires_grad = bool(requires_grad)

    # attrgetter: reading the property costs one C call, not a Python frame
    data = property(operator.attrgetter("_data"), _set_data,
                    doc="The tensor's values, an np.ndarray. Assigning it may change the dtype, "
                        "not the shape.")
    requires_grad = property(operator.attrgetter("_requires_grad"), _set_requires_grad,
                             doc="Whether backward computes a gradient for this tensor (floating "
                                 "point tensors only).")
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    is_leaf = property(lambda self: self._ctx is None)
    _version = property(lambda self: self._version_counter[0],
                        doc="How many in-place operations changed this tensor (or a view of it).")

    @property
    def grad_tensor(self):
        """After `backward(create_graph=True)`: the gradient accumulated in `.grad`, as a Tensor
        carrying the graph that computed it, so it can be differentiated again. None when `.grad`
        was since reset or changed by a plain backward."""
        if self._grad_tensor is None or self._grad_tensor[1] is not self.grad:
            return None
        return self._grad_tensor[0]

    def numpy(self) -> np.ndarray:
        return self._data

    def item(self):
        return self._data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data (and version counter), cut off from the graph."""
        t = Tensor._make(self._data, False)
        t._version_counter = self._version_counter
        return t

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self._set_requires_grad(requires_grad)
        return self

    def astype(self, dtype) -> "Tensor":
        from tensorlite.ops import Cast
        return Cast.apply(self, dtype=np.dtype(dtype))

    def __array__(self, dtype=None, copy=None):
        recording = _thread_state.recording_backward_of
        if recording is not None and self._requires_grad:
            raise RuntimeError(
                f"op '{recording.name}' cannot be differentiated twice: its "
                f"backward turns a Tensor into a NumPy array, which would drop the second "
                f"derivative (write it with Tensor operations or Op.run)")
        if dtype is not None and dtype != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __len__(self):
        return len(self._data)

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    __hash__ = object.__hash__  # identity: `==` is elementwise, like NumPy

    def __repr__(self):
        grad_info = ""
        if self._ctx is not None:
            grad_info = f", grad_fn={self._ctx.name}"
        elif self._requires_grad:
            grad_info = ", requires_grad=True"
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self._data.dtype}{grad_info})"

    # ---- hooks ------------------------------------------------------------------------------
    def register_hook(self, hook) -> "RemovableHandle":
        """Call `hook(grad)` with this tensor's gradient (a Tensor) whenever one is computed;
        a hook that returns a value replaces the gradient. Returns a handle with `remove()`."""
        if not self._requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not "
                               "require grad")
        if self._ctx is None:
            if self._hooks is None:
                self._hooks = collections.OrderedDict()
            hooks = self._hooks
        else:
            if self._ctx.output_hooks is None:
                self._ctx.output_hooks = collections.OrderedDict()
            hooks = self._ctx.output_hooks
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def retain_grad(self) -> None:
        """Keep the gradient of this non-leaf tensor in `.grad` during backward (leaves always
        keep theirs)."""
        if self._ctx is None:
            return
        target = weakref.ref(self)

        def keep_gradient(grad):
            tensor = target()
            if tensor is not None:
                value = np.array(grad._data, dtype=tensor._data.dtype)
                with _grad_accumulation_lock:
                    tensor.grad = value if tensor.grad is None else tensor.grad + value

        self.register_hook(keep_gradient)

    # ---- the reverse pass -----------------------------------------------------------------
    def backward(self, grad=None, retain_graph=None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

        `grad` is the gradient flowing into this tensor (the "cotangent"); it may be omitted
        only for a one-element tensor, where it defaults to 1. Unless `retain_graph=True`,
        the graph's saved arrays are freed as it is walked; backward through it again is an
        error. With `create_graph=True` the backward pass is itself recorded: each leaf's
        gradient is then also `leaf.grad_tensor`, a Tensor that can be differentiated again.
        `retain_graph` defaults to `create_graph`, as in PyTorch."""
        if not self._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(was it computed under no_grad, or from constants only?)")
        grad = _output_grad(self, grad, "backward", create_graph)
        _run_backward([self], [grad], create_graph if retain_graph is None else retain_graph,
                      create_graph)

    def to_dot(self) -> str:
        return to_dot(self)


class RemovableHandle:
    """Returned by `register_hook` and the module hook methods: `handle.remove()` unregisters
    the hook. Also a context manager, so a hook can live for the duration of a `with` block."""

    _ids = itertools.count()

    def __init__(self, hooks):
        # A weak reference: a handle kept around must not keep a freed graph's hooks alive.
        self._hooks = weakref.ref(hooks)
        self.id = next(RemovableHandle._ids)

    def remove(self):
        hooks = self._hooks()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()
        return False


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


def _assemble(pieces, dense):
    """A node's gradient: `dense` (the sum of its ordinary gradients, or None) plus every
    IndexedGrad piece added at its index, in one fresh buffer."""
    dtypes = [piece.values.dtype for piece in pieces] + ([] if dense is None else [dense.dtype])
    dtype = np.result_type(*dtypes)
    if dense is None:
        buffer = np.zeros(pieces[0].shape, dtype=dtype)
    else:
        buffer = np.array(dense, dtype=dtype, copy=True)
    for piece in pieces:
        piece.add_to(buffer)
    return buffer


# --------------------------------------------------------------------------------------------
# The reverse pass, shared by Tensor.backward and autograd.grad.
# --------------------------------------------------------------------------------------------

def _output_grad(output, grad, who, create_graph):
    """The cotangent to start from: 1 for a one-element output, else the one given, checked.
    In a create_graph pass it is a Tensor (one that requires grad keeps its graph)."""
    if grad is None:
        if output._data.size != 1:
            raise RuntimeError(f"{who}: a gradient can be implied only for a one-element output, "
                               f"this one has shape {output.shape}; pass the gradient of the "
                               f"output explicitly (grad_outputs / backward(grad))")
        grad = np.ones_like(output._data)
    elif isinstance(grad, Tensor):
        if create_graph:
            if grad.shape != output.shape:
                raise ValueError(f"{who}: grad has shape {grad.shape} but the output has shape "
                                 f"{output.shape}")
            return grad
        grad = grad._data
    grad = np.asarray(grad, dtype=output.dtype)
    if grad.shape != output.shape:
        raise ValueError(f"{who}: grad has shape {grad.shape} but the output has shape "
                         f"{output.shape}")
    return Tensor._make(grad, False) if create_graph else grad


def _run_backward(outputs, output_grads, retain_graph, create_graph, inputs=None):
    """Walk the graph behind `outputs` from the outputs to the leaves. Each node's gradient is
    complete when it is reached (topological order), is passed through its hooks, and then
    either goes into a leaf's `.grad`, or through the op's backward to its parents.

    With `inputs` (autograd.grad), nothing is accumulated: only nodes that lead to an input are
    visited, and the gradients reaching the inputs are returned, None for an unused one."""
    roots = [t._ctx if t._ctx is not None else t for t in outputs]
    grads = {}  # gradients summed so far, keyed by node identity
    pieces = {}  # IndexedGrad pieces still to be placed into a node's gradient, keyed likewise
    for root, grad in zip(roots, output_grads):
        grads[id(root)] = grads[id(root)] + grad if id(root) in grads else grad
    order = _topological_order(roots)
    targets = wanted = captured = None
    if inputs is not None:
        targets = {}
        for position, t in enumerate(inputs):
            targets.setdefault(id(t._ctx if t._ctx is not None else t), []).append(position)
        wanted = _nodes_leading_to(order, targets)
        captured = [None] * len(inputs)
    with _GradMode(create_graph):  # a create_graph pass records everything, sums included
        for node in order:
            key = id(node)
            node_grad = grads.pop(key, None)
            if key in pieces:
                node_grad = _assemble(pieces.pop(key), node_grad)
            if node_grad is None or (wanted is not None and key not in wanted):
                continue
            is_leaf = isinstance(node, Tensor)
            hooks = node._hooks if is_leaf else node.output_hooks
            if hooks:
                node_grad = _run_hooks(hooks, node_grad, create_graph)
            if targets is not None and key in targets:
                for position in targets[key]:
                    captured[position] = node_grad
            if is_leaf:
                if targets is None:
                    _accumulate_leaf(node, node_grad, create_graph)
                continue
            op = node
            if op.released:
                raise RuntimeError(
                    f"backward: trying to backward through the graph a second time (op "
                    f"'{op.name}'): its saved arrays were freed by the first backward. "
                    f"Pass retain_graph=True to the first backward if you need this.")
            if op.saved_versions:
                _check_saved_versions(op)
            input_grads = _op_backward(op, node_grad, create_graph)
            for parent, shape, input_grad in zip(op.parents, op.input_shapes, input_grads):
                if parent is None or input_grad is None:
                    continue
                key = id(parent)
                if wanted is not None and key not in wanted:
                    continue
                if input_grad.shape != shape:
                    input_grad = unbroadcast(input_grad, shape)
                    if input_grad.shape != shape:
                        raise RuntimeError(f"{op.name}.backward returned a gradient of shape "
                                           f"{input_grad.shape} for an input of shape {shape}")
                if isinstance(input_grad, IndexedGrad):
                    pieces.setdefault(key, []).append(input_grad)
                else:
                    # `+` (not `+=`): an op may hand the same array to several inputs.
                    grads[key] = grads[key] + input_grad if key in grads else input_grad
            if not retain_graph:
                op._release()
    return captured


def _op_backward(op, grad, create_graph):
    """Call `op.backward`: on arrays, or, for create_graph, on Tensors so it is recorded."""
    if not create_graph and _State.profiler is None and not _State.anomaly_enabled:
        return op.backward(grad)  # the usual case
    started = time.perf_counter()
    if not create_graph:
        input_grads = op.backward(grad)
    else:
        op._saved_for_graph = _saved_as_tensors(op) if op.saved_arrays else ()
        previous, _thread_state.recording_backward_of = _thread_state.recording_backward_of, op
        try:
            input_grads = op.backward(grad)
        finally:
            op._saved_for_graph = None
            _thread_state.recording_backward_of = previous
        for position, input_grad in enumerate(input_grads):
            if isinstance(input_grad, np.ndarray):
                raise RuntimeError(f"op '{op.name}' cannot be differentiated twice: its backward "
                                   f"returned an array, not a Tensor, for input {position}")
    if _State.profiler is not None:
        _State.profiler.record(op.name, "backward", time.perf_counter() - started)
    if _State.anomaly_enabled:
        _check_backward_finite(op, input_grads, grad)
    return input_grads


def _run_hooks(hooks, grad, create_graph):
    for hook in list(hooks.values()):
        result = hook(grad if isinstance(grad, Tensor) else Tensor._make(grad, False))
        if result is not None:
            if create_graph:
                grad = result if isinstance(result, Tensor) else Tensor._make(np.asarray(result), False)
            else:
                grad = np.asarray(result._data if isinstance(result, Tensor) else result)
    return grad


def _topological_order(roots) -> list:
    """The ops and leaf tensors of the graph behind `roots`, each after every op that uses it
    (so the roots come first). Iterative depth-first search: a 100,000-op chain does not hit
    the recursion limit."""
    post_order = []
    visited = set()
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            post_order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if isinstance(node, Function):
            for parent in node.parents:
                if parent is not None and id(parent) not in visited:
                    stack.append((parent, False))
    post_order.reverse()
    return post_order


def _nodes_leading_to(order, targets) -> set:
    """Identities of the nodes in `order` from which some target can be reached (targets
    included): the only part of the graph that autograd.grad needs to walk."""
    leading = set()
    for node in reversed(order):  # parents before the ops that use them
        # (A released op has lost its parents: keep it, so the walk reaches it and says so.)
        if id(node) in targets or (isinstance(node, Function) and (node.released or any(
                parent is not None and id(parent) in leading for parent in node.parents))):
            leading.add(id(node))
    return leading


# Held while a gradient is added into a tensor's `.grad`: backward passes running in several
# threads into one shared leaf (each thread with its own graph) must not lose a contribution,
# as PyTorch guarantees. Reading `.grad`, testing for None and adding into it is not atomic, and
# NumPy releases the GIL inside a large `+=`. One lock for all tensors rather than one each: a
# lock stored on a tensor would stop it from being copied (copy.deepcopy) or pickled, and
# accumulation is a short step of a backward pass.
_grad_accumulation_lock = threading.Lock()


def _accumulate_leaf(leaf: Tensor, grad, create_graph) -> None:
    with _grad_accumulation_lock:
        if create_graph:
            previous = leaf.grad_tensor
            if previous is None and leaf.grad is not None:
                previous = Tensor._make(leaf.grad, False)  # from earlier plain backward passes
            total = grad if previous is None else previous + grad
            leaf.grad = np.array(total._data, dtype=leaf._data.dtype, copy=True)
            leaf._grad_tensor = (total, leaf.grad)
        elif leaf.grad is None:
            # Copy: the array may be shared with other tensors' gradients.
            leaf.grad = np.array(grad, dtype=leaf._data.dtype, copy=True)
        else:
            leaf.grad += grad
            leaf._grad_tensor = None


# --------------------------------------------------------------------------------------------
# autograd.grad, the functional gradient, and graph export.
# --------------------------------------------------------------------------------------------

def _tensor_sequence(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def autograd_grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
                  allow_unused=False):
    """PyTorch's `torch.autograd.grad`: the gradients of `outputs` with respect to `inputs`, as
    a tuple of Tensors (one per input), without touching any `.grad`.

    `grad_outputs` are the cotangents, one per output (None for a one-element output means 1).
    With `create_graph=True` the returned Tensors carry the graph of their computation and can
    be differentiated again, to any order. An input that the outputs do not depend on raises,
    naming it, unless `allow_unused=True` (its entry is then None). `retain_graph` defaults to
    `create_graph`."""
    outputs = _tensor_sequence(outputs)
    inputs = _tensor_sequence(inputs)
    for kind, tensors in (("outputs", outputs), ("inputs", inputs)):
        for position, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"autograd.grad: {kind}[{position}] is a {type(t).__name__}, not "
                                f"a Tensor; differentiate Tensors made with requires_grad=True")
            if not t._requires_grad:
                hint = ("create it with requires_grad=True" if kind == "inputs" else
                        "it does not depend on any input that requires grad (is the graph cut "
                        "by .data, .detach(), np.asarray or no_grad?)")
                raise RuntimeError(f"autograd.grad: {kind}[{position}] (shape {t.shape}) does "
                                   f"not require grad: {hint}")
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"autograd.grad: {len(grad_outputs)} grad_outputs for {len(outputs)} "
                         f"outputs")
    grads = [_output_grad(out, g, "autograd.grad", create_graph)
             for out, g in zip(outputs, grad_outputs)]
    captured = _run_backward(outputs, grads, create_graph if retain_graph is None else retain_graph,
                             create_graph, inputs=inputs)
    results = []
    for position, (t, g) in enumerate(zip(inputs, captured)):
        if g is None:
            if not allow_unused:
                name = f" '{t.name}'" if t.name else ""
                raise RuntimeError(f"autograd.grad: inputs[{position}]{name} (shape {t.shape}) is "
                                   f"not used to compute the outputs; pass allow_unused=True to "
                                   f"get None for it")
            results.append(None)
        else:
            results.append(g if create_graph else
                           Tensor._make(np.array(g, dtype=t._data.dtype, copy=True), False))
    return tuple(results)


def grad(f, argnums=0, allow_unused=False):
    """`grad(f)(*args)` returns d f(*args) / d args[argnums] as NumPy arrays (a tuple when
    `argnums` is a tuple). `f` must return a one-element Tensor that depends on those
    arguments; an argument it does not depend on (for example because the graph is cut by
    `.data` or `detach()`) is an error unless `allow_unused=True`, which gives zeros.

    It returns arrays, so it does not nest: `tl.func.grad` returns Tensors and does."""
    @functools.wraps(f)
    def gradient_of_f(*args):
        positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        tensors = list(args)
        for i in positions:
            data = args[i]._data if isinstance(args[i], Tensor) else args[i]
            tensors[i] = Tensor(data, requires_grad=True)
        with enable_grad():
            out = f(*tensors)
        if not isinstance(out, Tensor) or out._data.size != 1:
            nested = (" (tl.grad returns arrays and does not nest: use tl.func.grad for higher "
                      "derivatives)" if isinstance(out, np.ndarray) else "")
            raise ValueError(f"grad: f must return a one-element Tensor, got "
                             f"{type(out).__name__}{nested}")
        wanted = [tensors[i] for i in positions]
        if out._requires_grad:
            results = autograd_grad(out, wanted, allow_unused=allow_unused)
        elif allow_unused:
            results = (None,) * len(wanted)
        else:
            raise RuntimeError("grad: f's output does not depend on its arguments (is the graph "
                               "cut by .data, .detach(), np.asarray or a new Tensor?); pass "
                               "allow_unused=True for a zero gradient")
        grads = tuple(np.zeros_like(t._data) if r is None else r._data
                      for t, r in zip(wanted, results))
        return grads[0] if isinstance(argnums, int) else grads
    return gradient_of_f


def _dot_label(text: str) -> str:
    """Text made safe inside a double-quoted DOT string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(root: Tensor) -> str:
    """The graph behind `root` as Graphviz DOT text: ops as ellipses, leaf tensors as boxes
    (blue: requires grad), each edge labelled with the shape that flows along it. Render with
    `dot -Tsvg graph.dot > graph.svg`. (After a backward without retain_graph the graph is freed.)"""
    lines = ["digraph tensorlite {", "  rankdir=BT;", '  node [fontname="Helvetica"];',
             f'  out [shape=box, label="output {tuple(root.shape)} {root.dtype}"];']
    if root._ctx is None:
        lines.append("}")
        return "\n".join(lines) + "\n"
    lines.append(f'  n{id(root._ctx)} -> out [label="{tuple(root.shape)}"];')
    seen = set()
    stack = [root._ctx]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Tensor):
            label = _dot_label(f"{node.name + ' ' if node.name else ''}{tuple(node.shape)} "
                               f"{node.dtype}")
            lines.append(f'  n{id(node)} [shape=box, style=filled, fillcolor="lightblue", '
                         f'label="{label}"];')
            continue
        lines.append(f'  n{id(node)} [shape=ellipse, label="{_dot_label(node.name)}"];')
        for parent, shape in zip(node.parents, node.input_shapes):
            if parent is not None:
                lines.append(f'  n{id(parent)} -> n{id(node)} [label="{shape}"];')
                stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"
