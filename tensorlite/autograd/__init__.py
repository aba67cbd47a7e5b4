"""`tl.autograd`: the reverse-mode engine, in the order a reader meets it.

    grad_mode.py   the switches: no_grad / enable_grad (per thread), detect_anomaly, the generator
    function.py    Function: one op's forward and backward, and the record it leaves on its output
    engine.py      the backward walk: topological order, hooks, accumulation into leaves
    api.py         backward() and grad() (PyTorch's torch.autograd.backward / .grad)
    graphviz.py    the recorded graph as DOT text
    custom_function.py  tl.autograd.Function: PyTorch's user-defined op (forward/backward on
                   Tensors with a ctx), recorded through one engine node per output

`Tensor` itself is in `tensorlite/tensor.py`; the ops are in `tensorlite/ops/`.
"""

from tensorlite.autograd.grad_mode import (
    detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled, manual_seed, no_grad, rng,
)
# The engine's array-level op base, `tl.Function` (and `tensorlite.autograd.function.Function`).
from tensorlite.autograd.function import Function as EngineFunction, IndexedGrad
from tensorlite.autograd.engine import retain_grad, run_backward, unbroadcast
from tensorlite.autograd.api import backward, functional_grad, grad, tensor_backward
from tensorlite.autograd.graphviz import to_dot
# `tl.autograd.Function` is PyTorch's user-facing form, built on EngineFunction.
from tensorlite.autograd.custom_function import Function, FunctionCtx

__all__ = ["grad", "backward", "Function", "FunctionCtx", "no_grad", "enable_grad",
           "is_grad_enabled", "detect_anomaly", "is_anomaly_enabled"]
