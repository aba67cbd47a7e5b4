"""Activation checkpointing, as ``torch.utils.checkpoint.checkpoint`` in its non-reentrant form:
trade compute for memory by keeping only a block's inputs, and running the block's forward again
during backward to rebuild what its backward needs.

    y = checkpoint(block, x, use_reentrant=False)   # same value as block(x)
    y.sum().backward()                               # block's forward runs a second time here

How it works in this engine. `checkpoint` runs `function` once with the graph recorded, only to
learn which tensors that require gradients it reads besides its arguments (a module's
parameters, say), keeps the output's values, and drops that graph at once, so the block's
activations are freed before the next block runs. The block then enters the outer graph as one
op, `Checkpoint`, whose inputs are the block's tensor arguments and those captured tensors.
Its backward restores the random generator's state that the first run saw (so dropout draws the
same masks), runs `function` again with gradients on, and asks `autograd.grad` for the gradients
of that fresh graph with respect to the arguments and captured tensors. Under
``create_graph=True`` the second run is built on the outer graph's own tensors, so the gradients
can be differentiated again.

Peak memory: without checkpointing every block keeps its activations until backward reaches it;
with it, only the blocks' inputs are kept, plus one block's activations at a time in backward.
The price is one more forward of each checkpointed block.
"""

from __future__ import annotations

import weakref

import numpy as np

from tensorlite.autograd.api import grad as autograd_grad
from tensorlite.autograd.function import Function
from tensorlite.autograd.grad_mode import _State, enable_grad, is_grad_enabled
from tensorlite.ops.shape import Reshape
from tensorlite.tensor import Tensor

__all__ = ["checkpoint"]


class Checkpoint(Function):
    """One op for a whole checkpointed block (see the module docstring). Inputs: the block's
    tensor arguments, then the tensors it captured; output: the block's output (several outputs
    travel raveled and concatenated, and are cut apart by views afterwards)."""

    def forward(self, *arrays, run, values, rng_state, captured, reads_outer_graph):
        self.run, self.rng_state, self.captured = run, rng_state, captured
        self.reads_outer_graph = reads_outer_graph
        self.save_for_backward(*arrays)  # so an in-place change before backward is caught
        return values

    def backward(self, grad):
        create_graph = isinstance(grad, Tensor)
        n_args = len(self.needs_input_grad) - len(self.captured)
        saved_args = self.saved[:n_args]
        if create_graph:
            # Views of the outer graph's tensors, so autograd.grad stops at them.
            args = [Reshape.apply(t, shape=t.shape) for t in saved_args]
        else:
            args = [Tensor._make(array, needs) for array, needs in
                    zip(saved_args, self.needs_input_grad)]
        inputs = args + list(self.captured)  # the block reads the captured tensors themselves
        outer_generator = _State.generator
        if self.rng_state is not None:
            _State.generator = np.random.default_rng()
            _State.generator.bit_generator.state = self.rng_state
        try:
            with enable_grad():
                flat = self.run(args)
        finally:
            _State.generator = outer_generator
        wanted = [t for t, needs in zip(inputs, self.needs_input_grad) if needs]
        # The walk frees each recomputed op's saved arrays once its backward has run, so the
        # block's activations go as its backward proceeds (a third of the peak of a GPT block).
        # Not under create_graph (the gradients' graph runs through these ops), nor when the
        # block read a non-leaf of the outer graph it was not given as an argument: the walk
        # passes through that tensor's ops, which must not be freed here.
        keep = create_graph or self.reads_outer_graph
        grads = iter(autograd_grad(flat, wanted, grad_outputs=grad, create_graph=create_graph,
                                   retain_graph=keep, allow_unused=True))
        result = []
        for needs in self.needs_input_grad:
            g = next(grads) if needs else None
            result.append(g if g is None or create_graph else g._data)
        return tuple(result)


def _flatten(output, where):
    """The output as (one flat Tensor, how to cut it back): a Tensor, or a tuple/list of them."""
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, (tuple, list)) and output and all(isinstance(o, Tensor) for o in output):
        dtypes = {o.dtype for o in output}
        if len(dtypes) > 1:
            raise ValueError(f"{where}: the outputs of a checkpointed function must share one "
                             f"dtype, got {sorted(str(d) for d in dtypes)}")
        shapes = [o.shape for o in output]
        flat = Tensor._make(np.concatenate([o._data.ravel() for o in output]), False)
        return flat, (type(output), shapes)
    raise TypeError(f"{where}: the checkpointed function must return a Tensor or a tuple of "
                    f"Tensors, got {type(output).__name__}")


def _flat_output(output, layout):
    """The flat Tensor of a recomputed output with the same layout (for Checkpoint.backward)."""
    if layout is None:
        return output
    from tensorlite.ops.shape import concatenate
    return concatenate([o.reshape(-1) for o in output], 0)


def _leaves_behind(outputs, own):
    """(the leaf tensors that require grad in the graph behind `outputs`, other than `own`;
    weak references to the ops of that graph)."""
    seen, found, stack = set(), [], [o._ctx for o in outputs if o._ctx is not None]
    ops = []
    own_ids = {id(t) for t in own}
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        ops.append(weakref.ref(node))
        for parent in node.parents:
            if parent is None:
                continue
            if isinstance(parent, Tensor):
                if id(parent) not in own_ids and id(parent) not in seen:
                    seen.add(id(parent))
                    found.append(parent)
            else:
                stack.append(parent)
    return found, ops


def checkpoint(function, *args, use_reentrant=None, preserve_rng_state=True, **kwargs):
    """``function(*args, **kwargs)``, with its activations recomputed in backward instead of
    kept, as ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``.

    ``function`` returns a Tensor or a tuple of Tensors; it may read tensors other than its
    arguments (a module's parameters), and they receive their gradients. With
    ``preserve_rng_state`` (the default) the second run sees the random generator as the first
    did, so dropout masks agree. Only the non-reentrant form exists: ``use_reentrant=True``
    is an error. Outside grad mode it is a plain call.
    """
    if use_reentrant:
        raise ValueError("checkpoint: only the non-reentrant form is implemented; pass "
                         "use_reentrant=False (or leave it out)")
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {type(function).__name__}")
    if not is_grad_enabled():
        return function(*args, **kwargs)
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    rng_state = _State.generator.bit_generator.state if preserve_rng_state else None

    def run(tensors):
        call_args = list(args)
        for position, t in zip(positions, tensors):
            call_args[position] = t
        return function(*call_args, **kwargs)

    # First run: graph recorded on detached stand-ins, only to find the captured tensors.
    stand_ins = [Tensor._make(args[i]._data, args[i]._requires_grad) for i in positions]
    output = run(stand_ins)
    flat, layout = _flatten(output, "checkpoint")
    captured, ops = _leaves_behind(list(output) if layout is not None else [output], stand_ins)
    values = flat._data
    del output, flat, stand_ins  # the block's activations go with this graph
    # An op of that graph still alive now belongs to the outer graph: the block read a non-leaf
    # it was not given (say a tensor computed before the call).
    reads_outer_graph = any(op() is not None for op in ops)
    if not captured and not any(args[i]._requires_grad for i in positions):
        return _unflatten(Tensor._make(values, False), layout)
    n_args = len(positions)

    def recompute(arg_tensors):
        return _flat_output(run(arg_tensors[:n_args]), layout)

    result = Checkpoint.apply(*[args[i] for i in positions], *captured, run=recompute,
                              values=values, rng_state=rng_state, captured=tuple(captured),
                              reads_outer_graph=reads_outer_graph)
    return _unflatten(result, layout)


def _unflatten(flat, layout):
    if layout is None:
        return flat
    container, shapes = layout
    pieces, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        pieces.append(flat[start:start + size].reshape(shape))
        start += size
    return container(pieces)
