"""How ``Module.register_full_backward_hook`` and ``register_full_backward_pre_hook`` see the
gradients of one module call.

PyTorch's full backward hook is ``hook(module, grad_input, grad_output)``: the gradients with
respect to the module's positional inputs and its outputs, from this call only (not what other
uses of an input add to its gradient), and it may return replacements for ``grad_input``. A
backward pre-hook, ``hook(module, grad_output)``, runs first and may replace ``grad_output``.

The engine's ops have one output each, so a call with backward hooks is wrapped in graph nodes
of three kinds, gates and views, on both sides of the module (``x`` an input that requires
grad, ``y`` an output)::

    x ──> InputGate ──> HookView ──> x'  ...forward(x')...  y ──> OutputGate ──> HookView ──> y'
     └──────────────────┘                                   └─────────────────────┘

``x'`` and ``y'`` carry the same values (and memory) as ``x`` and ``y``; the forward sees
``x'`` and the caller gets ``y'``. A gate takes every input (or output) of the call and yields
a placeholder scalar; each view reads that placeholder, so the engine, which runs a node only
after everything that uses it, reaches a gate after all its views. In backward:

1. each output's view leaves its gradient with the call's ``BackwardHook``;
2. ``OutputGate`` then has all of ``grad_output``: it runs the pre-hooks and sends the
   gradients into the module (when no input requires grad, it also runs the full hooks, with
   ``grad_input`` all None, as PyTorch does);
3. each input's view leaves its gradient with the ``BackwardHook``;
4. ``InputGate`` then has all of ``grad_input``: it runs the full hooks and sends their
   (possibly replaced) gradients on to the inputs.

The views pass nothing to the tensor they view (their gradient goes through the gate), and
share its version counter, as views do.
"""

import warnings

import numpy as np

from tensorlite.tensor import Function, Tensor

__all__ = ["BackwardHook"]


class BackwardHook:
    """The backward hooks of one module call: wraps the inputs before ``forward`` and the
    outputs after it (``setup_input`` / ``setup_output``), then runs the hooks in backward."""

    def __init__(self, module, full_hooks, pre_hooks):
        self.module = module
        self.full_hooks = full_hooks  # as registered at the time of the call, as in PyTorch
        self.pre_hooks = pre_hooks
        self.num_inputs = 0
        self.input_positions = ()  # positions of the inputs that require grad
        self.input_zeros = {}  # position of each Tensor input -> its (shape, dtype)
        self.input_grads = {}  # position -> gradient, left by the input views
        self.num_outputs = 0
        self.output_grads = {}  # position -> gradient, left by the output views
        self.grad_output = None

    # ---- forward ----------------------------------------------------------------------------

    def setup_input(self, args):
        """``args`` with every Tensor that requires grad replaced by its view behind the gate."""
        self.num_inputs = len(args)
        self.input_positions = tuple(i for i, a in enumerate(args)
                                     if isinstance(a, Tensor) and a.requires_grad)
        if not self.input_positions:
            return args
        self.input_zeros = {i: (a.shape, a.dtype) for i, a in enumerate(args) if isinstance(a, Tensor)}
        gate = InputGate.apply(*[args[i] for i in self.input_positions], record=self)
        args = list(args)
        for i in self.input_positions:
            args[i] = HookView.apply(args[i], gate, grads=self.input_grads, position=i)
        return tuple(args)

    def setup_output(self, output):
        """``output`` (a Tensor, or a tuple or list of values) with every Tensor that requires
        grad replaced by its view behind the gate."""
        single = isinstance(output, Tensor)
        outputs = (output,) if single else output
        if not isinstance(outputs, (tuple, list)):
            return output
        self.num_outputs = len(outputs)
        positions = [j for j, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
        if not positions:
            return output
        gate = OutputGate.apply(*[outputs[j] for j in positions], record=self, positions=positions)
        wrapped = list(outputs)
        for j in positions:
            wrapped[j] = HookView.apply(outputs[j], gate, grads=self.output_grads, position=j)
        if single:
            return wrapped[0]
        if hasattr(output, "_fields"):  # a namedtuple
            return type(output)(*wrapped)
        return type(output)(wrapped)

    # ---- backward ---------------------------------------------------------------------------

    def run_pre_hooks(self, graph):
        """Take the output gradients left by the views; run the pre-hooks on them. ``graph``:
        whether the backward pass is recorded (create_graph), i.e. works on Tensors."""
        grad_output = tuple(self.output_grads.pop(j, None) for j in range(self.num_outputs))
        for hook in self.pre_hooks:
            result = hook(self.module, _as_tensors(grad_output))
            if result is not None:
                grad_output = _replacement(result, grad_output, "grad_output", graph)
        self.grad_output = grad_output
        if not self.input_positions:
            # Nothing upstream wants a gradient: PyTorch runs the full hooks here, with None
            # for every input gradient.
            warnings.warn("Full backward hook is firing when gradients are computed with respect "
                          "to module outputs since no inputs require gradients.", stacklevel=2)
            self.run_full_hooks(graph)
        return grad_output

    def run_full_hooks(self, graph):
        """Take the input gradients left by the views; run the full hooks on them. As in
        PyTorch, a hook is shown zeros for a Tensor input that received no gradient (one that
        does not require grad, or that forward did not use), None for any other argument."""
        grad_input = tuple(self.input_grads.pop(i, None) for i in range(self.num_inputs))
        shown = tuple(np.zeros(*self.input_zeros[i]) if g is None and i in self.input_zeros else g
                      for i, g in enumerate(grad_input))
        if self.grad_output is None:  # no output gradient went through the output gate
            self.grad_output = (None,) * self.num_outputs
        grad_output = _as_tensors(self.grad_output)
        for hook in self.full_hooks:
            result = hook(self.module, _as_tensors(shown), grad_output)
            if result is not None:
                grad_input = shown = _replacement(result, shown, "grad_input", graph)
        self.grad_output = None
        return grad_input


def _as_tensors(grads):
    """What a hook is shown: Tensors (gradients are arrays in a plain backward)."""
    return tuple(g if g is None or isinstance(g, Tensor) else Tensor(g) for g in grads)


def _replacement(result, current, what, graph):
    """A hook's returned gradients, checked, in the form the engine is working in (arrays in a
    plain backward, Tensors in a create_graph one, ``graph``)."""
    if isinstance(result, Tensor) or not isinstance(result, (tuple, list)) \
            or len(result) != len(current):
        count = len(result) if isinstance(result, (tuple, list)) else 1
        raise RuntimeError(f"Backward hook returned an invalid number of {what}, got {count}, "
                           f"but expected {len(current)}")
    replaced = []
    for new in result:
        if new is None:
            replaced.append(None)
        elif graph:
            replaced.append(new if isinstance(new, Tensor) else Tensor(np.asarray(new)))
        else:
            replaced.append(np.asarray(new.data if isinstance(new, Tensor) else new))
    return tuple(replaced)


def _placeholder_grad(grad):
    """The gradient a view sends to its gate's placeholder: a zero of the engine's kind."""
    zero = np.zeros((), dtype=np.float32)
    return Tensor(zero) if isinstance(grad, Tensor) else zero


class InputGate(Function):
    """Placeholder scalar after all of a call's inputs; its backward runs the full hooks."""

    def forward(self, *inputs, record):
        self.record = record
        return np.zeros((), dtype=np.float32)

    def backward(self, grad):
        grad_input = self.record.run_full_hooks(graph=isinstance(grad, Tensor))
        return tuple(grad_input[i] for i in self.record.input_positions)


class OutputGate(Function):
    """Placeholder scalar after all of a call's outputs; its backward runs the pre-hooks and
    sends the output gradients into the module."""

    def forward(self, *outputs, record, positions):
        self.record, self.positions = record, positions
        return np.zeros((), dtype=np.float32)

    def backward(self, grad):
        grad_output = self.record.run_pre_hooks(graph=isinstance(grad, Tensor))
        return tuple(grad_output[j] for j in self.positions)


class HookView(Function):
    """An input as the module's forward sees it, or an output as the caller sees it: the same
    values; its gradient goes to ``grads`` (the record's input_grads or output_grads)."""

    is_view = True

    def forward(self, x, gate, grads, position):
        self.grads, self.position = grads, position
        return x

    def backward(self, grad):
        self.grads[self.position] = grad
        return None, _placeholder_grad(grad)
