"""`tl.autograd.Function`: PyTorch's way for users to define an op with its own backward.

    class Cube(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):          # Tensors in, a Tensor (or a tuple) out
            ctx.save_for_backward(x)
            ctx.scale = scale                # anything else: a plain attribute
            return x ** 3 * scale

        @staticmethod
        def backward(ctx, grad):             # one gradient per forward input (None: none)
            x, = ctx.saved_tensors
            return grad * 3 * x ** 2 * ctx.scale, None

    y = Cube.apply(x, 2.0)

`forward` runs on the caller's Tensors with recording off; the result is joined to the graph by
one engine node per differentiable output (`tensorlite.autograd.function.Function`, the
array-level base of the library's own ops, `tl.Function`). `backward` receives Tensors. In a plain
backward it runs with recording off; in a `create_graph=True` backward it runs with recording
on and the saved tensors are those of the graph, so a backward written with Tensor operations is
itself differentiable.
"""

from __future__ import annotations

import numpy as np

from tensorlite.autograd.function import Function as _EngineFunction
from tensorlite.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from tensorlite.tensor import Tensor

__all__ = ["Function", "FunctionCtx"]


class FunctionCtx:
    """The `ctx` handed to a custom Function's `forward` and `backward` (torch's names)."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad  # one bool per forward argument
        self._saved = ()
        self._outputs = {}  # id of a Tensor forward returned -> its index among the outputs
        self._graph_outputs = None  # the Tensors apply returned
        self.non_differentiable = set()
        self.materialize_grads = True

    def save_for_backward(self, *tensors):
        """Keep Tensors (inputs or outputs of forward, or None) for backward."""
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save Tensors or None, got "
                                f"{type(t).__name__}; keep other values as ctx attributes")
        self._saved = tensors

    @property
    def saved_tensors(self):
        """What forward saved, in order. An output of forward comes back as the Tensor that
        `apply` returned, so its history is part of the graph."""
        saved = []
        for t in self._saved:
            index = self._outputs.get(id(t)) if t is not None else None
            if index is not None and self._graph_outputs is not None:
                t = self._graph_outputs[index]
            saved.append(t)
        return tuple(saved)

    def mark_non_differentiable(self, *tensors):
        """Outputs of forward that get no gradient (indices, masks): apply returns them not
        requiring grad, and backward receives zeros for them."""
        self.non_differentiable.update(id(t) for t in tensors)

    def set_materialize_grads(self, value):
        """With True (the default) backward gets zeros for outputs that got no gradient; with
        False it gets None."""
        self.materialize_grads = bool(value)


class _CustomFunctionBackward(_EngineFunction):
    """The engine node joining output `index` of a custom Function to the inputs that are
    Tensors. Its forward hands back the output forward already computed."""

    def forward(self, *arrays, fn, ctx, positions, outputs, index):
        self.fn, self.ctx, self.positions = fn, ctx, positions
        self.outputs, self.index = outputs, index
        return outputs[index]._data

    @property
    def name(self):
        return f"{self.fn.__name__}Backward"

    def backward(self, grad):
        create_graph = isinstance(grad, Tensor)
        grads = []
        for i, out in enumerate(self.outputs):
            if i == self.index:
                grads.append(grad if create_graph else Tensor._make(grad, False))
            elif self.ctx.materialize_grads:
                grads.append(Tensor._make(np.zeros_like(out._data), False))
            else:
                grads.append(None)
        mode = enable_grad if create_graph else no_grad
        with mode():
            results = self.fn.backward(self.ctx, *grads)
        if not isinstance(results, tuple):
            results = (results,)
        n_args = len(self.ctx.needs_input_grad)
        if len(results) < n_args or any(r is not None for r in results[n_args:]):
            raise RuntimeError(f"function {self.fn.__name__}.backward returned {len(results)} "
                               f"gradients, expected one per forward input ({n_args})")
        input_grads = []
        for position in self.positions:
            g = results[position]
            if g is not None and not isinstance(g, Tensor):
                g = Tensor(np.asarray(g, dtype=self.outputs[self.index]._data.dtype))
            if g is not None and not create_graph:
                g = g._data
            input_grads.append(g)
        return tuple(input_grads)


class Function:
    """Base class for custom differentiable operations, as `torch.autograd.Function`.

    Subclasses define `@staticmethod forward(ctx, *args, **kwargs)` (Tensors and any other
    values in, a Tensor or a tuple of Tensors out) and `@staticmethod backward(ctx, *grads)`
    (one gradient per output in, one gradient or None per forward argument out), and are
    called through `apply`. See the module docstring for an example."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a custom Function must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("a custom Function must define backward(ctx, ...) to be "
                                  "differentiated")

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: call {type(self).__name__}.apply(...), "
                           f"not the class itself (forward and backward are static methods)")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run forward and record it, so that backward is called for the gradient."""
        needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        ctx = FunctionCtx(needs_input_grad)
        with no_grad():
            result = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(result, tuple)
        outputs = (result,) if single else result
        for out in outputs:
            if not isinstance(out, Tensor):
                raise TypeError(f"{cls.__name__}.forward must return a Tensor or a tuple of "
                                f"Tensors, got {type(out).__name__}")
        if not (is_grad_enabled() and any(needs_input_grad)):
            return result
        ctx._outputs = {id(out): i for i, out in enumerate(outputs)}
        positions = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
        tensors = [args[i] for i in positions]
        returned = []
        for index, out in enumerate(outputs):
            if id(out) in ctx.non_differentiable or out._data.dtype.kind != "f":
                returned.append(out.detach())
                continue
            returned.append(_CustomFunctionBackward.apply(
                *tensors, fn=cls, ctx=ctx, positions=positions, outputs=outputs, index=index))
        ctx._graph_outputs = tuple(returned)
        return returned[0] if single else tuple(returned)
