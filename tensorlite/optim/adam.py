"""Adam and AdamW, as `torch.optim.Adam` / `AdamW`, stepping flat buffers of parameters."""

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.engine import GradHome
from tensorlite.optim.optimizer import Optimizer, _check_step, _checked_array, torch_options

__all__ = ["Adam", "AdamW"]


class _FlatBuffer:
    """Parameters of one dtype stored back to back in one contiguous 1-D array.

    Why: an Adam step is a handful of elementwise operations per number. Doing
    it once over one long array (a single kernel call) is far faster than a
    Python loop over dozens of small arrays.

    At construction every parameter's values are copied into `self.data` and
    `p.data` is REBOUND to a reshaped view of its slice, so the model keeps
    using the parameter as before and the in-place updates of the flat array
    are what the model sees. The moments `exp_avg`, `exp_avg_sq` and the
    gradients `grad` are flat arrays with the same layout.

    Each parameter also gets its slice of `grad` as its `GradHome`
    (`tensorlite/autograd/engine.py`): backward writes the parameter's
    gradient there, so at `step()` the gradients are usually in place already.
    """

    def __init__(self, params):
        self.params = params
        self.dtype = params[0].data.dtype
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # slice i = [offsets[i], offsets[i+1])
        total = int(self.offsets[-1])
        self.data = np.empty(total, dtype=self.dtype)
        self.grad = np.zeros(total, dtype=self.dtype)
        self.exp_avg = np.zeros(total, dtype=self.dtype)
        self.exp_avg_sq = np.zeros(total, dtype=self.dtype)
        self.steps = np.zeros(len(params), dtype=np.int64)  # per parameter, as in PyTorch
        self.views = [None] * len(params)
        self.homes = [None] * len(params)
        for i in range(len(params)):
            self.adopt(i)
            s = self.slice(i)
            self.homes[i] = GradHome(self.grad, s.start, s.stop, params[i].data.shape)
            try:
                params[i]._grad_home = self.homes[i]
            except AttributeError:  # a Tensor subclass with its own __slots__: no home
                pass

    def slice(self, i):
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def adopt(self, i):
        """Copy parameter i's current values into the buffer and rebind p.data to the view."""
        p, s = self.params[i], self.slice(i)
        if p.data.size != s.stop - s.start:
            raise ValueError(f"parameter {i} of a flat buffer changed size from {s.stop - s.start} "
                             f"to {p.data.size}; build a new optimizer after resizing parameters")
        self.data[s] = p.data.reshape(-1)
        view = self.data[s].reshape(p.data.shape)
        p.data = view
        if p.data.size and not np.shares_memory(p.data, self.data):  # (an empty one shares none)
            raise RuntimeError("assigning p.data copied the array; Adam needs p.data to be a view "
                               "of its flat buffer")
        self.views[i] = p.data

    def sync_views(self):
        """Re-adopt any parameter whose p.data was replaced by a new array.

        Loading weights should copy in place (p.data[...] = value) and then
        nothing happens here; if someone instead assigned p.data = new_array,
        its values are copied into the buffer so the update reaches the model.
        """
        for i, p in enumerate(self.params):
            if p.data is not self.views[i]:
                self.adopt(i)

    def gather_grads(self):
        """(the flat gradient, a bool mask of who has one). The flat gradient is `grad` itself
        when every gradient is the one its home holds (no copy); otherwise a new array the
        gradients are copied into, zeros where a parameter has none, so that a gradient the
        user holds in a home is not overwritten."""
        has_grad = np.empty(len(self.params), dtype=bool)
        in_place = True
        for i, p in enumerate(self.params):
            grad = p.grad
            has_grad[i] = grad is not None
            home = self.homes[i]  # None in a deep-copied optimizer
            if grad is None or home is None or not home.holds(grad):
                in_place = False
        if in_place:
            return self.grad, has_grad
        pieces = []
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                pieces.append(np.zeros(self.offsets[i + 1] - self.offsets[i], dtype=self.dtype))
            else:
                grad = grad.data
                if grad.size != p.data.size:
                    raise ValueError(f"gradient of shape {grad.shape} does not match "
                                     f"parameter of shape {p.data.shape}")
                pieces.append(grad.reshape(-1))
        return np.concatenate(pieces).astype(self.dtype, copy=False), has_grad


class Adam(Optimizer):
    """Adam, as torch.optim.Adam; with `decoupled_weight_decay=True` it is AdamW.

    For each parameter p with gradient g, at step t = 1, 2, ...:

        g = -g                                     (if maximize)
        g = g + weight_decay * p                   (Adam: an L2 penalty through the gradient)
        p = p * (1 - lr * weight_decay)            (AdamW instead: decay, not through the gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    Parameters whose grad is None are skipped and their step count does not
    advance (PyTorch behaviour). `amsgrad=True` is not available. `maximize`,
    `foreach`, `capturable`, `differentiable` and `fused`: PyTorch's keywords, see
    `tensorlite.optim.optimizer`.

    Flat buffers: each param group's parameters are copied into one contiguous
    array per dtype (float32 and float64 parameters in one group get one buffer
    each) and every `p.data` becomes a view of it; `step()` is then one call of
    `kernels.adamw_step` per buffer. Consequences for users:
      * load weights by copying into place, `p.data[...] = value` (that is what
        `Module.load_state_dict` does); a rebound `p.data = array` is noticed
        and copied in at the next `step()`, but until then the buffer is stale;
      * a parameter may belong to one optimizer only;
      * two parameters must not share memory (tie weights by using the same
        Parameter object, which is then optimized once).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        name = type(self).__name__
        if amsgrad:
            raise NotImplementedError(f"{name}: amsgrad=True is not supported by tensorlite")
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}, each must be in [0, 1)")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self._buffers = []   # parallel to param_groups: list of _FlatBuffer per group
        self._location = {}  # id(param) -> (buffer, index inside the buffer)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        **torch_options(name, maximize=maximize, foreach=foreach, fused=fused,
                                        capturable=capturable, differentiable=differentiable))
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        params = self.param_groups[-1]["params"]
        self._check_no_shared_memory(params)

        # One buffer per dtype, in order of first appearance.
        by_dtype = {}
        for p in params:
            by_dtype.setdefault(p.data.dtype, []).append(p)
        buffers = [_FlatBuffer(group_params) for group_params in by_dtype.values()]
        for buf in buffers:
            for i, p in enumerate(buf.params):
                self._location[id(p)] = (buf, i)
        self._buffers.append(buffers)

    def _check_no_shared_memory(self, new_params):
        """Two distinct parameters viewing the same memory would be untied by the flat copy."""
        known = [buf.data for buffers in self._buffers for buf in buffers]
        arrays = known + [p.data for p in new_params]
        for j, p in enumerate(new_params):
            for other in arrays[: len(known) + j]:
                if np.may_share_memory(p.data, other) and np.shares_memory(p.data, other):
                    raise ValueError("two parameters share memory; tie weights by reusing one "
                                     "Parameter object instead of two views of one array")

    def _step(self):
        adamw_step = kernels.adamw_step
        for group, buffers in zip(self.param_groups, self._buffers):
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            eps, weight_decay = float(group["eps"]), float(group["weight_decay"])
            if not self.decoupled_weight_decay and weight_decay != 0:
                l2_penalty, weight_decay = weight_decay, 0.0  # through the gradient instead
            else:
                l2_penalty = 0.0
            maximize = group.get("maximize", False)
            for buf in buffers:
                buf.sync_views()
                grad, has_grad = buf.gather_grads()
                if not has_grad.any():
                    continue
                buf.steps[has_grad] += 1
                if maximize or l2_penalty:
                    # Out of place, as PyTorch: p.grad (perhaps a view of `grad`) keeps its values.
                    grad = -grad if maximize else grad.copy()
                if l2_penalty:
                    # Parameters without a gradient get a penalty too, but are not updated below.
                    grad += np.asarray(l2_penalty, dtype=buf.dtype) * buf.data

                if has_grad.all() and (buf.steps == buf.steps[0]).all():
                    # The usual case: the whole buffer in one kernel call.
                    adamw_step(buf.data, grad, buf.exp_avg, buf.exp_avg_sq,
                               lr, beta1, beta2, eps, weight_decay, int(buf.steps[0]))
                    continue

                # Otherwise update runs of neighbouring parameters that have a
                # gradient and the same step count; slices of 1-D arrays are
                # still contiguous, so the same kernel applies.
                i, n = 0, len(buf.params)
                while i < n:
                    if not has_grad[i]:
                        i += 1
                        continue
                    j = i + 1
                    while j < n and has_grad[j] and buf.steps[j] == buf.steps[i]:
                        j += 1
                    s = slice(int(buf.offsets[i]), int(buf.offsets[j]))
                    adamw_step(buf.data[s], grad[s], buf.exp_avg[s], buf.exp_avg_sq[s],
                               lr, beta1, beta2, eps, weight_decay, int(buf.steps[i]))
                    i = j

    def _get_param_state(self, p):
        buf, i = self._location[id(p)]
        s, shape = buf.slice(i), buf.views[i].shape
        return {"step": int(buf.steps[i]),
                "exp_avg": buf.exp_avg[s].reshape(shape).copy(),
                "exp_avg_sq": buf.exp_avg_sq[s].reshape(shape).copy()}

    def _check_param_state(self, p, index, state):
        if set(state) != {"step", "exp_avg", "exp_avg_sq"}:
            raise ValueError(f"state of parameter {index} has keys {sorted(state)}, expected "
                             f"['exp_avg', 'exp_avg_sq', 'step'] (is this an {type(self).__name__} "
                             f"state_dict?)")
        _check_step(index, state["step"])
        buf, i = self._location[id(p)]
        for name in ("exp_avg", "exp_avg_sq"):
            _checked_array(p, index, state, name, buf.views[i].shape)

    def _set_param_state(self, p, state):
        buf, i = self._location[id(p)]
        s = buf.slice(i)
        buf.steps[i] = int(state.get("step", 0))
        buf.exp_avg[s] = np.asarray(state["exp_avg"]).reshape(-1) if state else 0
        buf.exp_avg_sq[s] = np.asarray(state["exp_avg_sq"]).reshape(-1) if state else 0


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW: each step first shrinks the
    parameters, p = p * (1 - lr * weight_decay), then takes the Adam step with the raw gradient
    (see `Adam` for the update and the flat buffers it runs on)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
