"""The backward walk: from the outputs to the leaves, each op's backward called once.

    order = topological order of the ops and leaves behind the outputs (outputs first)
    for node in order:
        grad = the sum of the gradients sent to node          (complete: all users came before)
        grad = node's hooks applied to grad
        if node is a leaf:  leaf.grad += grad                 (under the accumulation lock)
        else:               send node.backward(grad) to node's parents, unbroadcast to their shapes
                            and free what node saved, unless retain_graph

Each line is one named function below. `autograd.grad` walks the same loop but visits only the
nodes that lead to its `inputs` and returns their gradients instead of accumulating them. With
`create_graph=True` the loop runs with grad mode on and hands each backward Tensors, so the
gradients carry their own graph.

Broadcasting is undone in exactly one place, `unbroadcast`: an op's backward may return a gradient
in the broadcast shape of its output, and the walk sums it back to the input's shape.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import weakref

import numpy as np

from tensorlite.autograd.function import (
    Function, IndexedGrad, _check_backward_finite, _check_saved_versions, _saved_as_tensors,
)
from tensorlite.autograd.grad_mode import _GradMode, _State, _thread_state
from tensorlite.tensor import Tensor

__all__ = ["unbroadcast", "run_backward", "output_grad", "retain_grad", "zero_grad_of", "GradHome"]


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



def _assemble(pieces, dense):
    """A node's gradient: `dense` (the sum of its ordinary gradients, or None) plus every
    IndexedGrad piece added at its index, in one fresh buffer."""
    dtypes = [piece.values.dtype for piece in pieces] + ([] if dense is None else [dense.dtype])
    dtype = np.result_type(*dtypes)
    if dense is None and _cover_once(pieces):
        # The gradient of `q, k, v = qkv.split(C, axis=2)`: each element is written once, so
        # no zero-filling and no reading back (a third of the passes of zeros and +=). Where
        # the pieces already sit at their places in one array (the attention kernel writes
        # q's, k's and v's gradients that way), that array is the gradient: no pass at all.
        whole = _already_in_place(pieces, dtype)
        if whole is not None:
            return whole
        buffer = np.empty(pieces[0].shape, dtype=dtype)
        for piece in pieces:
            buffer[piece.index] = piece.values
        return buffer
    if dense is None:
        buffer = np.zeros(pieces[0].shape, dtype=dtype)
    else:
        buffer = np.array(dense, dtype=dtype, copy=True)
    for piece in pieces:
        piece.add_to(buffer)
    return buffer


def _already_in_place(pieces, dtype):
    """The array whose slices the pieces' values are, at exactly their indices, if there is
    one (a C-contiguous array of the gradient's shape and dtype); else None."""
    base = pieces[0].values.base
    if (base is None or base.dtype != dtype or base.size != math.prod(pieces[0].shape)
            or not base.flags.c_contiguous):
        return None
    whole = base.reshape(pieces[0].shape)
    for piece in pieces:
        values, expected = piece.values, whole[piece.index]
        if (values.base is not base or values.shape != expected.shape
                or values.strides != expected.strides
                or values.ctypes.data != expected.ctypes.data):
            return None
    return whole


def _cover_once(pieces) -> bool:
    """Whether the pieces' indices are slices along one axis (all other axes whole) that cover
    that axis exactly once, as the pieces of `split` and `chunk` do."""
    axis, spans = None, []
    for piece in pieces:
        index = piece.index
        if piece.advanced or not isinstance(index, tuple) or not index:
            return False
        last = index[-1]
        if axis is None:
            axis = len(index) - 1
        if (len(index) - 1 != axis or not isinstance(last, slice) or last.step not in (None, 1)
                or axis >= len(piece.shape)):
            return False
        for part in index[:-1]:
            if not (isinstance(part, slice) and part == slice(None)):
                return False
        start, stop, _ = last.indices(piece.shape[axis])
        spans.append((start, max(start, stop)))
    covered = 0
    for start, stop in sorted(spans):
        if start != covered:
            return False
        covered = stop
    return covered == pieces[0].shape[axis]


# --------------------------------------------------------------------------------------------
# The reverse pass, shared by Tensor.backward and autograd.grad.
# --------------------------------------------------------------------------------------------

def output_grad(output, grad, who, create_graph):
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




def _node(t):
    """The graph node standing for tensor `t`: the op that produced it, or `t` if it is a leaf."""
    return t._ctx if t._ctx is not None else t


def run_backward(outputs, output_grads, retain_graph, create_graph, inputs=None):
    """Walk the graph behind `outputs` from the outputs to the leaves (see the module docstring).

    With `inputs` (autograd.grad), nothing is accumulated: only nodes that lead to an input are
    visited, and the gradients reaching the inputs are returned, None for an unused one."""
    roots = [_node(t) for t in outputs]
    # Nodes are dict keys by identity: ops hash as objects do, and so do tensors (whose `==` is
    # elementwise, but a dict never calls it for keys hashed by identity).
    grads = {}  # gradients sent to each node so far, summed
    pieces = {}  # IndexedGrad pieces still to be placed into a node's gradient
    for root, grad in zip(roots, output_grads):
        _send(grads, root, grad)
    order = _topological_order(roots)
    targets = wanted = captured = None
    if inputs is not None:
        targets = {}
        for position, t in enumerate(inputs):
            targets.setdefault(_node(t), []).append(position)
        wanted = _nodes_leading_to(order, targets)
        captured = [None] * len(inputs)
    # The usual pass calls each op's backward straight; the others go through _op_backward.
    plain = not create_graph and _State.profiler is None and not _State.anomaly_enabled
    with _GradMode(create_graph):  # a create_graph pass records everything, sums included
        for node in order:
            grad = grads.pop(node, None)
            if node in pieces:
                grad = _assemble(pieces.pop(node), grad)
            if grad is None or (wanted is not None and node not in wanted):
                continue
            is_leaf = isinstance(node, Tensor)
            hooks = node._hooks if is_leaf else node.output_hooks
            if hooks:
                grad = _run_hooks(hooks, grad, create_graph)
            if targets is not None and node in targets:
                for position in targets[node]:
                    captured[position] = grad
            if is_leaf:
                if targets is None:
                    _accumulate_leaf(node, grad, create_graph)
                continue
            if node.released or node.saved_versions:
                _check_can_backward(node)
            input_grads = node.backward(grad) if plain else _op_backward(node, grad, create_graph)
            _send_to_parents(node, input_grads, grads, pieces, wanted)
            if not retain_graph:
                node._release()
    return captured


def _send(grads, node, grad):
    # `+` (not `+=`): an op may hand the same array to several inputs.
    grads[node] = grads[node] + grad if node in grads else grad


def _check_can_backward(op):
    """Raise if `op` was freed by an earlier backward, or if something it saved was modified in
    place since."""
    if op.released:
        raise RuntimeError(
            f"backward: trying to backward through the graph a second time (op "
            f"'{op.name}'): its saved arrays were freed by the first backward. "
            f"Pass retain_graph=True to the first backward if you need this.")
    _check_saved_versions(op)


def _send_to_parents(op, input_grads, grads, pieces, wanted):
    """Add each input's gradient into what its parent node has received, summed back to the
    input's shape (`unbroadcast`). IndexedGrad pieces are kept apart and placed all at once."""
    for parent, shape, input_grad in zip(op.parents, op.input_shapes, input_grads):
        if parent is None or input_grad is None:
            continue
        if wanted is not None and parent not in wanted:
            continue
        if input_grad.shape != shape:
            input_grad = unbroadcast(input_grad, shape)
            if input_grad.shape != shape:
                raise RuntimeError(f"{op.name}.backward returned a gradient of shape "
                                   f"{input_grad.shape} for an input of shape {shape}")
        if isinstance(input_grad, IndexedGrad):
            pieces.setdefault(parent, []).append(input_grad)
        elif parent in grads:  # _send, written out: this is the innermost loop of the walk
            grads[parent] = grads[parent] + input_grad
        else:
            grads[parent] = input_grad


def _op_backward(op, grad, create_graph):
    """Call `op.backward` where the walk is not the usual plain one: on Tensors for
    create_graph, so it is recorded, and timed or checked under the profiler and
    detect_anomaly."""
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
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        if isinstance(node, Function):
            for parent in node.parents:
                if parent is not None and parent not in visited:
                    stack.append((parent, False))
    post_order.reverse()
    return post_order


def _nodes_leading_to(order, targets) -> set:
    """The nodes in `order` from which some target can be reached (targets
    included): the only part of the graph that autograd.grad needs to walk."""
    leading = set()
    for node in reversed(order):  # parents before the ops that use them
        # (A released op has lost its parents: keep it, so the walk reaches it and says so.)
        if node in targets or (isinstance(node, Function) and (node.released or any(
                parent is not None and parent in leading for parent in node.parents))):
            leading.add(node)
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
        previous = leaf._grad
        if create_graph:
            # Out of place, so that the sum keeps the graph of every pass (PyTorch does the
            # same); `astype` copies, so the first gradient owns its data, which a later plain
            # pass adds into.
            total = grad.astype(leaf._data.dtype) if previous is None else previous + grad
            if total._data.dtype != leaf._data.dtype:
                total = total.astype(leaf._data.dtype)
            leaf._grad = total
        elif previous is None:
            # Copy: the array may be shared with other tensors' gradients. Into the leaf's
            # GradHome if it has a free one, else into new memory.
            home = getattr(leaf, "_grad_home", None)
            leaf._grad = home.claim(grad, leaf._data.dtype) if home is not None else None
            if leaf._grad is None:
                leaf._grad = Tensor._make(np.array(grad, dtype=leaf._data.dtype, copy=True), False)
        else:
            # In place: an optimizer, a DDP bucket or the user may hold the gradient's array.
            previous._data += grad
            previous._version_counter[0] += 1


class GradHome:
    """Memory set aside for a leaf's gradient: the leaf's slice of an optimizer's flat gradient
    buffer (`optim.Adam`). The first gradient a backward accumulates into the leaf is copied
    there instead of into new memory, so the optimizer finds every gradient already in its flat
    buffer and copies nothing, and the gradients take no memory of their own.

    `leaf.grad` then views the buffer. A later backward writes there again only once nothing
    refers to that memory any more: after `zero_grad()` (grads set to None) a gradient the user
    kept, as a Tensor, an array (`.numpy()`, `.data`) or any view of one, keeps its values, as
    in PyTorch, and the new gradient goes to new memory instead.

    How "nothing refers to it" is known: the home's memory is first taken as an array of its
    own (`_anchor`, made from a memoryview of the buffer), so NumPy makes that array, not the
    buffer, the base of `array` and of every view taken from it; CPython's reference counts of
    `array` (held by a gradient Tensor, or handed out by `.numpy()`) and of `_anchor` (held by
    every view) then tell whether anything can still see the gradient. A count too high only
    costs the copy this saves."""

    __slots__ = ("_anchor", "array")

    # References when nothing else has them: the home's own and getrefcount's argument, and
    # for `_anchor` also `array`'s base.
    _UNSHARED_ARRAY, _UNSHARED_ANCHOR = 2, 3

    def __init__(self, buffer, start, stop, shape):
        """The home of a gradient of `shape` at buffer[start:stop] (a 1-D C-contiguous array)."""
        self._anchor = np.asarray(memoryview(buffer)[start:stop])
        self.array = self._anchor.reshape(shape)

    def holds(self, grad_tensor) -> bool:
        """Whether `grad_tensor` keeps its values in this home."""
        return grad_tensor._data is self.array

    def claim(self, grad, dtype):
        """`grad` copied into the home, as a new gradient Tensor; None where the home is of
        another dtype or something still refers to the gradient it held."""
        if (dtype != self.array.dtype or sys.getrefcount(self.array) > self._UNSHARED_ARRAY
                or sys.getrefcount(self._anchor) > self._UNSHARED_ANCHOR):
            return None
        np.copyto(self.array, grad, casting="unsafe")
        return Tensor._make(self.array, False)

    # A copied or unpickled tensor does not share its optimizer's buffer: it has no home.
    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (_no_home, ())


def _no_home():
    return None


def zero_grad_of(p, set_to_none=True):
    """p.grad = None, or p.grad cut off from any graph (as PyTorch's detach_) and zeroed in
    place, so that the next backward accumulates into the same array."""
    grad = p._grad
    if set_to_none or grad is None:
        p._grad = None
    elif grad._data.flags.writeable:
        grad._ctx = None
        grad._requires_grad = False
        grad._data.fill(0)
        grad._version_counter[0] += 1
    else:  # a read-only array (say a broadcast view) cannot be zeroed in place
        p._grad = Tensor._make(np.zeros_like(p._data), False)


def retain_grad(tensor) -> None:
    """Keep the gradient of this non-leaf tensor in `.grad` during backward (leaves always
    keep theirs)."""
    if tensor._ctx is None:
        return
    target = weakref.ref(tensor)

    def keep_gradient(grad):
        kept = target()
        if kept is not None:
            value = np.array(grad._data, dtype=kept._data.dtype)
            with _grad_accumulation_lock:
                if kept._grad is not None:
                    value += kept._grad._data
                kept._grad = Tensor._make(value, False)

    tensor.register_hook(keep_gradient)
