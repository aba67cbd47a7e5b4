"""Stochastic gradient descent, as `torch.optim.SGD`."""

import numpy as np

from tensorlite.optim.optimizer import Optimizer, _checked_array, torch_options

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as torch.optim.SGD.

    For each parameter p with gradient g:

        g = -g                                            (if maximize)
        g = g + weight_decay * p                          (L2 penalty, if any)
        buf = g                      on the first step     (if momentum != 0)
        buf = momentum * buf + (1 - dampening) * g   later
        g = g + momentum * buf  if nesterov  else  buf
        p = p - lr * g

    Parameters whose grad is None are skipped. `maximize`, `foreach`, `differentiable` and
    `fused`: PyTorch's keywords, see `tensorlite.optim.optimizer`.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False, fused=None):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov,
                        **torch_options("SGD", maximize=maximize, foreach=foreach,
                                        differentiable=differentiable, fused=fused))
        self.momentum_buffers = {}  # id(param) -> np.ndarray, created on first step
        super().__init__(params, defaults)

    def _step(self):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            nesterov, maximize = group["nesterov"], group.get("maximize", False)
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad.data if maximize else p.grad.data
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                if momentum != 0:
                    buf = self.momentum_buffers.get(id(p))
                    if buf is None:
                        buf = np.array(g, dtype=p.data.dtype, copy=True)
                        self.momentum_buffers[id(p)] = buf
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * g
                    g = g + momentum * buf if nesterov else buf
                # In place, so anything holding p.data (views, the model) sees it.
                p.data -= lr * g

    def _get_param_state(self, p):
        buf = self.momentum_buffers.get(id(p))
        return {} if buf is None else {"momentum_buffer": buf.copy()}

    def _check_param_state(self, p, index, state):
        unknown = set(state) - {"momentum_buffer"}
        if unknown:
            raise ValueError(f"state of parameter {index} has unexpected keys {sorted(unknown)} "
                             "(is this an SGD state_dict?)")
        if "momentum_buffer" in state and state["momentum_buffer"] is not None:
            _checked_array(p, index, state, "momentum_buffer", p.data.shape)

    def _set_param_state(self, p, state):
        buf = state.get("momentum_buffer")
        if buf is None:
            self.momentum_buffers.pop(id(p), None)
        else:
            self.momentum_buffers[id(p)] = np.array(buf, dtype=p.data.dtype, copy=True)
