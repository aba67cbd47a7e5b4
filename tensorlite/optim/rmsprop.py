"""RMSprop, as `torch.optim.RMSprop`."""

import numpy as np

from tensorlite.optim.optimizer import Optimizer, _check_step, _checked_array, torch_options

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop.

    For each parameter p with gradient g:

        g = -g                                            (if maximize)
        g = g + weight_decay * p                          (L2 penalty, if any)
        v = alpha * v + (1 - alpha) * g * g               (running mean of squares)
        if centered:  a = alpha * a + (1 - alpha) * g;  denom = sqrt(v - a * a) + eps
        else:         denom = sqrt(v) + eps
        if momentum:  buf = momentum * buf + g / denom;   p = p - lr * buf
        else:         p = p - lr * g / denom

    Every state starts at zero. Parameters whose grad is None are skipped. `maximize`,
    `capturable`, `foreach` and `differentiable`: PyTorch's keywords, see
    `tensorlite.optim.optimizer`.
    """

    _STATE_ARRAYS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon value: {eps}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid alpha value: {alpha}, must be in [0, 1]")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        self.state = {}  # id(param) -> {"step": int, "square_avg": array, ...}
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered,
                        **torch_options("RMSprop", maximize=maximize, foreach=foreach,
                                        capturable=capturable, differentiable=differentiable))
        super().__init__(params, defaults)

    def _step(self):
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if group.get("maximize", False):
                    g = -g
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                state = self.state.get(id(p))
                if state is None:
                    state = self.state[id(p)] = self._fresh_state(p, group)
                state["step"] += 1
                square_avg = state["square_avg"]
                square_avg *= alpha
                square_avg += (1 - alpha) * g * g
                if group["centered"]:
                    grad_avg = state["grad_avg"]
                    grad_avg *= alpha
                    grad_avg += (1 - alpha) * g
                    denom = np.sqrt(square_avg - grad_avg * grad_avg) + eps
                else:
                    denom = np.sqrt(square_avg) + eps
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf *= momentum
                    buf += g / denom
                    p.data -= lr * buf
                else:
                    p.data -= lr * g / denom

    @staticmethod
    def _fresh_state(p, group):
        state = {"step": 0, "square_avg": np.zeros_like(p.data)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(p.data)
        if group["centered"]:
            state["grad_avg"] = np.zeros_like(p.data)
        return state

    def _get_param_state(self, p):
        state = self.state.get(id(p))
        if state is None:
            return {}
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}

    def _check_param_state(self, p, index, state):
        unknown = set(state) - {"step", *self._STATE_ARRAYS}
        if unknown or "square_avg" not in state:
            raise ValueError(f"state of parameter {index} has keys {sorted(state)}, expected "
                             "'step', 'square_avg' and optionally 'momentum_buffer', 'grad_avg' "
                             "(is this an RMSprop state_dict?)")
        _check_step(index, state.get("step"))
        for name in self._STATE_ARRAYS:
            if name in state:
                _checked_array(p, index, state, name, p.data.shape)

    def _set_param_state(self, p, state):
        if not state:
            self.state.pop(id(p), None)
            return
        self.state[id(p)] = {k: (int(v) if k == "step" else np.array(v, dtype=p.data.dtype))
                             for k, v in state.items()}
        # A state saved without momentum / centering gains zero buffers if this group uses them.
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        for name, value in self._fresh_state(p, group).items():
            self.state[id(p)].setdefault(name, value)
