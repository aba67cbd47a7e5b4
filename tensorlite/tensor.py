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
"""

from __future__ import annotations

import contextlib
import functools
import time

import numpy as np

__all__ = [
    "Tensor", "Function", "unbroadcast", "no_grad", "enable_grad", "is_grad_enabled",
    "detect_anomaly", "is_anomaly_enabled", "grad", "to_dot", "manual_seed", "rng",
]


# --------------------------------------------------------------------------------------------
# Global switches: grad mode, anomaly mode, and the random generator used by init and dropout.
# --------------------------------------------------------------------------------------------

class _State:
    grad_enabled = True
    anomaly_enabled = False
    generator = np.random.default_rng()
    profiler = None  # a tensorlite.profiler.Profiler while one is active


def is_grad_enabled() -> bool:
    """True unless inside `no_grad()`."""
    return _State.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.previous = _State.grad_enabled
        _State.grad_enabled = self.enabled

    def __exit__(self, *exc_info):
        _State.grad_enabled = self.previous
        return False


def no_grad():
    """Context manager (or decorator) in which operations record no graph."""
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
        backward(self, grad) -> one gradient array (or None) per tensor input, as a tuple
    and are used through `apply`, which accepts Tensors, arrays and Python numbers. Whatever
    `forward` needs later it stores on `self`. Inside `backward`, `self.needs_input_grad[i]`
    says whether input i wants a gradient, so an op can skip work nobody will use.

    Example (this is how `tanh` is defined in `tensorlite/ops.py`):

        class Tanh(Function):
            def forward(self, x):
                self.y = np.tanh(x)
                return self.y
            def backward(self, grad):
                return (grad * (1 - self.y * self.y),)
    """

    # Ops whose forward legitimately produces inf from finite inputs (masked_fill with -inf)
    # set this, so detect_anomaly does not flag them.
    may_produce_infinite = False

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        op = cls()
        tensors = _as_tensors(inputs)
        started = time.perf_counter() if _State.profiler is not None else None
        data = op.forward(*[t.data for t in tensors], **params)
        if started is not None:
            _State.profiler.record(op.name, "forward", time.perf_counter() - started)
        if _State.anomaly_enabled:
            _check_finite(op, "forward", data, [t.data for t in tensors])
        requires_grad = _State.grad_enabled and any(t.requires_grad for t in tensors)
        out = Tensor._make(data, requires_grad)
        if requires_grad:
            # Where each input's gradient goes: the op that made it, the leaf itself, or nowhere.
            op.parents = tuple((t._ctx if t._ctx is not None else t) if t.requires_grad else None
                               for t in tensors)
            op.input_shapes = tuple(t.data.shape for t in tensors)
            op.needs_input_grad = tuple(t.requires_grad for t in tensors)
            out._ctx = op
        return out

    @property
    def name(self) -> str:
        return type(self).__name__

    def _release(self):
        """Drop everything saved for backward; a second backward through here is an error."""
        self.__dict__.clear()
        self.released = True
        self.parents = self.input_shapes = ()

    released = False


def _as_tensors(inputs):
    """Tensors pass through; numbers and arrays become constants. A Python number takes the
    dtype of the first floating tensor input, so `x * 2.0` stays float32."""
    if all(isinstance(x, Tensor) for x in inputs):
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


def _check_finite(op, phase, result, inputs):
    results = result if isinstance(result, (tuple, list)) else (result,)
    if phase == "forward" and op.may_produce_infinite:
        return
    inputs_finite = all(np.all(np.isfinite(a)) for a in inputs
                        if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    for r in results:
        if r is not None and np.asarray(r).dtype.kind == "f" and not np.all(np.isfinite(r)):
            if inputs_finite:
                what = "nan" if np.isnan(r).any() else "inf"
                raise RuntimeError(
                    f"detect_anomaly: op '{op.name}' produced {what} values in its {phase} "
                    f"(output shape {np.shape(r)}) from finite inputs")


# --------------------------------------------------------------------------------------------
# unbroadcast: the one place where broadcast gradients are reduced.
# --------------------------------------------------------------------------------------------

def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1, so the
    gradient of the input is the sum over exactly those axes."""
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

def _to_array(data, dtype=None) -> np.ndarray:
    """Lists and Python numbers of floats become float32; an existing float64 array stays float64."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    from_numpy = isinstance(data, (np.ndarray, np.generic))
    array = np.asarray(data)
    if array.dtype.kind == "f" and not from_numpy and array.dtype != np.float32:
        array = array.astype(np.float32)
    elif array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)  # float16 and friends: compute in float32
    return array


class Tensor:
    """An `np.ndarray` plus what reverse-mode autodiff needs: `grad`, `requires_grad`, and the
    op that produced it (`_ctx`). Most methods and all operators are attached from the registry
    at the bottom of `tensorlite/ops.py`."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name", "__weakref__")
    # Make `ndarray + Tensor` call Tensor.__radd__ instead of NumPy broadcasting over a Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients "
                            f"(got dtype {self.data.dtype})")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self.name = None

    @classmethod
    def _make(cls, data: np.ndarray, requires_grad: bool) -> "Tensor":
        """Fast internal constructor: `data` is already a suitable array."""
        t = object.__new__(Tensor)
        t.data = data
        t.requires_grad = requires_grad
        t.grad = None
        t._ctx = None
        t.name = None
        return t

    # ---- plain properties -------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._ctx is None)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut off from the graph."""
        return Tensor._make(self.data, False)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients "
                            f"(got dtype {self.data.dtype})")
        self.requires_grad = requires_grad
        return self

    def astype(self, dtype) -> "Tensor":
        from tensorlite.ops import Cast
        return Cast.apply(self, dtype=np.dtype(dtype))

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and dtype != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    __hash__ = object.__hash__  # identity: `==` is elementwise, like NumPy

    def __repr__(self):
        grad_info = ""
        if self._ctx is not None:
            grad_info = f", grad_fn={self._ctx.name}"
        elif self.requires_grad:
            grad_info = ", requires_grad=True"
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.data.dtype}{grad_info})"

    # ---- the reverse pass -----------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

        `grad` is the gradient flowing into this tensor (the "cotangent"); it may be omitted
        only for a one-element tensor, where it defaults to 1. Unless `retain_graph=True`,
        the graph's saved arrays are freed as it is walked; backward through it again is an
        error."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(was it computed under no_grad, or from constants only?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element tensor, "
                                   f"this one has shape {self.shape}; pass backward(grad)")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has "
                                 f"shape {self.shape}")

        # Walk ops and leaves, output first; each node's gradient is complete when reached.
        root = self._ctx if self._ctx is not None else self
        grads = {id(root): grad}  # gradients summed so far, keyed by node identity
        for node in _topological_order(root):
            node_grad = grads.pop(id(node), None)
            if node_grad is None:
                continue
            if isinstance(node, Tensor):  # a leaf: accumulate into .grad
                _accumulate_leaf(node, node_grad)
                continue
            op = node
            if op.released:
                raise RuntimeError(
                    f"backward: trying to backward through the graph a second time (op "
                    f"'{op.name}'): its saved arrays were freed by the first backward. "
                    f"Pass retain_graph=True to the first backward if you need this.")
            started = time.perf_counter() if _State.profiler is not None else None
            input_grads = op.backward(node_grad)
            if started is not None:
                _State.profiler.record(op.name, "backward", time.perf_counter() - started)
            if _State.anomaly_enabled:
                _check_finite(op, "backward", input_grads, [node_grad])
            for parent, shape, input_grad in zip(op.parents, op.input_shapes, input_grads):
                if parent is None or input_grad is None:
                    continue
                input_grad = unbroadcast(input_grad, shape)
                if input_grad.shape != shape:
                    raise RuntimeError(f"{op.name}.backward returned a gradient of shape "
                                       f"{input_grad.shape} for an input of shape {shape}")
                key = id(parent)
                # `+` (not `+=`): an op may hand the same array to several inputs.
                grads[key] = grads[key] + input_grad if key in grads else input_grad
            if not retain_graph:
                op._release()

    def to_dot(self) -> str:
        return to_dot(self)


def _topological_order(root) -> list:
    """The ops and leaf tensors of the graph behind `root`, each after every op that uses it (so
    `root` is first). Iterative depth-first search: a 100,000-op chain does not hit the
    recursion limit."""
    post_order = []
    visited = set()
    stack = [(root, False)]
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


def _accumulate_leaf(leaf: Tensor, grad: np.ndarray) -> None:
    if leaf.grad is None:
        # Copy: the array may be shared with other tensors' gradients.
        leaf.grad = np.array(grad, dtype=leaf.data.dtype, copy=True)
    else:
        leaf.grad += grad


# --------------------------------------------------------------------------------------------
# Functional gradient and graph export.
# --------------------------------------------------------------------------------------------

def grad(f, argnums=0):
    """`grad(f)(*args)` returns d f(*args) / d args[argnums] as NumPy arrays (a tuple when
    `argnums` is a tuple). `f` must return a one-element Tensor."""
    @functools.wraps(f)
    def gradient_of_f(*args):
        positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        tensors = list(args)
        for i in positions:
            data = args[i].data if isinstance(args[i], Tensor) else args[i]
            tensors[i] = Tensor(data, requires_grad=True)
        with enable_grad():
            out = f(*tensors)
        if not isinstance(out, Tensor) or out.data.size != 1:
            raise ValueError("grad: f must return a one-element Tensor")
        if out.requires_grad:  # else f does not depend on the arguments: zero gradients
            out.backward()
        grads = tuple(tensors[i].grad if tensors[i].grad is not None
                      else np.zeros_like(tensors[i].data) for i in positions)
        return grads[0] if isinstance(argnums, int) else grads
    return gradient_of_f


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
            label = f"{node.name + ' ' if node.name else ''}{tuple(node.shape)} {node.dtype}"
            lines.append(f'  n{id(node)} [shape=box, style=filled, fillcolor="lightblue", '
                         f'label="{label}"];')
            continue
        lines.append(f'  n{id(node)} [shape=ellipse, label="{node.name}"];')
        for parent, shape in zip(node.parents, node.input_shapes):
            if parent is not None:
                lines.append(f'  n{id(parent)} -> n{id(node)} [label="{shape}"];')
                stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"
