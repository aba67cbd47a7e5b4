"""The user-facing entry points of the engine: `backward` (also `Tensor.backward`) and
`grad` (PyTorch's `torch.autograd.grad`), plus `functional_grad`, which is `tl.grad(f)`."""

from __future__ import annotations

import functools

import numpy as np

from tensorlite.autograd.engine import output_grad, run_backward
from tensorlite.autograd.grad_mode import enable_grad
from tensorlite.tensor import Tensor

__all__ = ["backward", "grad", "functional_grad"]


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph: bool = False) -> None:
    """PyTorch's `torch.autograd.backward`: accumulate d(tensors)/d(leaf) into `leaf.grad` for
    every leaf that requires grad. `grad_tensors` holds one cotangent per tensor (None for a
    one-element tensor means 1). `retain_graph` defaults to `create_graph`."""
    tensors = _tensor_sequence(tensors)
    if grad_tensors is None or isinstance(grad_tensors, (Tensor, np.ndarray)):
        grad_tensors = [grad_tensors] * len(tensors) if grad_tensors is None else [grad_tensors]
    if len(grad_tensors) != len(tensors):
        raise ValueError(f"backward: {len(grad_tensors)} grad_tensors for {len(tensors)} tensors")
    for t in tensors:
        if not t._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(was it computed under no_grad, or from constants only?)")
    grads = [output_grad(t, g, "backward", create_graph) for t, g in zip(tensors, grad_tensors)]
    run_backward(tensors, grads, create_graph if retain_graph is None else retain_graph,
                 create_graph)


def tensor_backward(self, grad=None, retain_graph=None, create_graph: bool = False) -> None:
    """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

    `grad` is the gradient flowing into this tensor (the "cotangent"); it may be omitted
    only for a one-element tensor, where it defaults to 1. Unless `retain_graph=True`,
    the graph's saved arrays are freed as it is walked; backward through it again is an
    error. With `create_graph=True` the backward pass is itself recorded: each leaf's
    `.grad` then carries the graph that computed it and can be differentiated again.
    `retain_graph` defaults to `create_graph`, as in PyTorch."""
    if not self._requires_grad:
        raise RuntimeError("backward: this tensor does not require grad and has no graph "
                           "(was it computed under no_grad, or from constants only?)")
    grad = output_grad(self, grad, "backward", create_graph)
    run_backward([self], [grad], create_graph if retain_graph is None else retain_graph,
                 create_graph)


def _tensor_sequence(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
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
    grads = [output_grad(out, g, "autograd.grad", create_graph)
             for out, g in zip(outputs, grad_outputs)]
    captured = run_backward(outputs, grads, create_graph if retain_graph is None else retain_graph,
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


def functional_grad(f, argnums=0, allow_unused=False):
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
            results = grad(out, wanted, allow_unused=allow_unused)
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

