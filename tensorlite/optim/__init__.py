"""Optimizers, gradient clipping and learning-rate schedules.

Everything here works on `tl.Tensor` parameters through two attributes only:

    p.data  the parameter values (np.ndarray), updated IN PLACE by `step()`
    p.grad  the gradient (np.ndarray) written by `backward()`, or None

The update rules follow PyTorch exactly (torch.optim.SGD, Adam, AdamW, RMSprop,
torch.nn.utils.clip_grad_norm_), so results can be compared number for number.
Learning-rate schedulers with PyTorch's names live in `tensorlite.optim.lr_scheduler`.

Parameter groups
----------------
`params` is either an iterable of parameters, or an iterable of dicts

    [{"params": [...decayed weights...], "weight_decay": 0.1},
     {"params": [...biases, norms...],   "weight_decay": 0.0, "lr": 1e-4}]

Keys missing from a group are filled from the optimizer's defaults. After
construction `opt.param_groups` is a list of such dicts; changing
`group["lr"]` between steps is how learning-rate schedules are applied.

state_dict layout (saveable as .npz + JSON, no pickle)
------------------------------------------------------
`opt.state_dict()` returns fresh copies in this shape (same as PyTorch's):

    {
      "state": {                         # keyed by parameter index (int)
         0: {"step": 3,                  # Adam(W): int, number of updates taken
             "exp_avg": np.ndarray,      # Adam(W): shape of parameter 0
             "exp_avg_sq": np.ndarray},  # Adam(W): shape of parameter 0
         1: {...},                       # SGD: {"momentum_buffer": np.ndarray}
                                         # RMSprop: step, square_avg (+ momentum_buffer,
                                         #   grad_avg when momentum / centered are on)
      },
      "param_groups": [                  # JSON-able: numbers, lists, strings
         {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08,
          "weight_decay": 0.01, "params": [0, 1]},
      ],
    }

Parameters are numbered 0, 1, 2, ... in the order they appear across the
groups. Only NumPy arrays and Python numbers/lists/strings occur, so
`tensorlite.serialization.split_arrays` splits it into a dict of arrays (for
np.savez) and a JSON-able tree, and `join_arrays` puts it back together.
`load_state_dict` accepts the parameter indices as ints or as strings
(JSON turns dict keys into strings).
"""

import math
import numbers

import numpy as np

from tensorlite import kernels
from tensorlite.tensor import Tensor


# ----------------------------------------------------------------------------
# Optimizer base class


class Optimizer:
    """Base class: holds the parameter groups and the state_dict machinery.

    Subclasses implement `step()` plus three small hooks that read, check and
    write the per-parameter state (`_get_param_state`, `_check_param_state`,
    `_set_param_state`).
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError(
                "params should be an iterable of Tensors or of dicts, got a single "
                "Tensor; wrap it in a list: [param]")
        self.defaults = dict(defaults)
        self.param_groups = []
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a dict {"params": [...], **hyperparameters} to `param_groups`."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("a param group dict needs a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)

        # A parameter listed twice (e.g. a tied weight collected twice) would be
        # updated twice per step; keep its first occurrence only.
        unique, seen = [], set()
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not np.issubdtype(p.data.dtype, np.floating):
                raise TypeError(f"optimizer can only optimize floating point Tensors, got dtype {p.data.dtype}")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        if not unique:
            raise ValueError("a param group has an empty 'params' list")

        for other in self.param_groups:
            if any(id(p) in seen for p in other["params"]):
                raise ValueError("some parameters appear in more than one parameter group")

        for name, default in self.defaults.items():
            group.setdefault(name, default)
        group["params"] = unique
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: p.grad = None (or fill with zeros in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                elif isinstance(p.grad, np.ndarray) and p.grad.flags.writeable:
                    p.grad.fill(0)
                else:  # a NumPy scalar or read-only array cannot be zeroed in place
                    p.grad = np.zeros_like(p.data)

    def step(self):
        """Update every parameter from its gradient (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    # -- per-parameter state hooks, overridden by subclasses --------------------

    def _get_param_state(self, p):
        """Return a dict of fresh copies (arrays / numbers) describing p's state."""
        return {}

    def _check_param_state(self, p, index, state):
        """Raise ValueError if `state` cannot be loaded into parameter p."""

    def _set_param_state(self, p, state):
        """Load a checked state dict into the optimizer for parameter p."""

    # -- saving and loading -----------------------------------------------------

    def state_dict(self):
        """Return {"state": {index: {...}}, "param_groups": [...]} (see module docs)."""
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                param_state = self._get_param_state(p)
                if param_state:
                    state[index] = param_state
                indices.append(index)
                index += 1
            saved = {k: _to_plain(v) for k, v in group.items() if k != "params"}
            saved["params"] = indices
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a dict produced by `state_dict()` (arrays are copied in).

        The optimizer must have been built over parameters of the same number,
        grouping and shapes. Everything is checked before anything is changed,
        so a failed load leaves the optimizer untouched.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("optimizer state_dict must be a dict with exactly the keys "
                             "'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state_dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")

        # Map saved parameter index -> our parameter, group by group.
        by_index = {}
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved_params = list(saved.get("params", []))
            if len(saved_params) != len(group["params"]):
                raise ValueError(f"parameter group {g}: loaded state_dict has {len(saved_params)} "
                                 f"parameters, this optimizer has {len(group['params'])}")
            for index, p in zip(saved_params, group["params"]):
                by_index[int(index)] = p

        checked = []
        for key, param_state in state_dict["state"].items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"state key {key!r} is not a parameter index") from None
            if index not in by_index:
                raise ValueError(f"state refers to parameter index {index}, which is not in any group")
            if not isinstance(param_state, dict):
                raise ValueError(f"state of parameter {index} must be a dict, got {type(param_state).__name__}")
            self._check_param_state(by_index[index], index, param_state)
            checked.append((by_index[index], param_state))

        # All checks passed: now change things. Parameters without saved state
        # go back to a fresh state, so the load is exact.
        loaded = {id(p) for p, _ in checked}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in loaded:
                    self._set_param_state(p, {})
        for p, param_state in checked:
            self._set_param_state(p, param_state)
        for saved, group in zip(saved_groups, self.param_groups):
            for name, value in saved.items():
                if name == "params":
                    continue
                # JSON has no tuples: restore e.g. betas as a tuple if it was one.
                if isinstance(group.get(name), tuple) and isinstance(value, list):
                    value = tuple(value)
                group[name] = value

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for name in sorted(group):
                if name != "params":
                    lines.append(f"    {name}: {group[name]}")
        lines.append(")")
        return "\n".join(lines)


def _to_plain(value):
    """Hyperparameters as JSON-friendly Python values (tuples -> lists, np scalars -> numbers)."""
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _checked_array(p, index, state, name, shape):
    """Fetch state[name] and make sure it is an array of the parameter's shape."""
    if name not in state:
        raise ValueError(f"state of parameter {index} is missing '{name}'")
    value = np.asarray(state[name])
    if value.shape != tuple(shape):
        raise ValueError(f"state of parameter {index}: '{name}' has shape {value.shape}, "
                         f"but the parameter has shape {tuple(shape)}")
    return value


# ----------------------------------------------------------------------------
# SGD


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as torch.optim.SGD.

    For each parameter p with gradient g:

        g = g + weight_decay * p                          (L2 penalty, if any)
        buf = g                      on the first step     (if momentum != 0)
        buf = momentum * buf + (1 - dampening) * g   later
        g = g + momentum * buf  if nesterov  else  buf
        p = p - lr * g

    Parameters whose grad is None are skipped.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        self.momentum_buffers = {}  # id(param) -> np.ndarray, created on first step
        super().__init__(params, defaults)

    def step(self):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            nesterov = group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
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


# ----------------------------------------------------------------------------
# Adam and AdamW on flat buffers


class _FlatBuffer:
    """Parameters of one dtype stored back to back in one contiguous 1-D array.

    Why: an Adam step is a handful of elementwise operations per number. Doing
    it once over one long array (a single kernel call) is far faster than a
    Python loop over dozens of small arrays.

    At construction every parameter's values are copied into `self.data` and
    `p.data` is REBOUND to a reshaped view of its slice, so the model keeps
    using the parameter as before and the in-place updates of the flat array
    are what the model sees. The moments `exp_avg`, `exp_avg_sq` and the
    gathered gradient `grad` are flat arrays with the same layout.
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
        for i in range(len(params)):
            self.adopt(i)

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
        if not np.shares_memory(p.data, self.data):
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
        """Copy every p.grad into the flat `grad` buffer; return a bool mask of who had one."""
        has_grad = np.array([p.grad is not None for p in self.params])
        pieces = []
        for i, p in enumerate(self.params):
            if p.grad is None:
                pieces.append(np.zeros(self.offsets[i + 1] - self.offsets[i], dtype=self.dtype))
            else:
                if p.grad.size != p.data.size:
                    raise ValueError(f"gradient of shape {np.shape(p.grad)} does not match "
                                     f"parameter of shape {p.data.shape}")
                pieces.append(p.grad.reshape(-1))
        np.concatenate(pieces, out=self.grad)
        return has_grad


class Adam(Optimizer):
    """Adam, as torch.optim.Adam; with `decoupled_weight_decay=True` it is AdamW.

    For each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + weight_decay * p                   (Adam: an L2 penalty through the gradient)
        p = p * (1 - lr * weight_decay)            (AdamW instead: decay, not through the gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    Parameters whose grad is None are skipped and their step count does not
    advance (PyTorch behaviour).

    Flat buffers: each param group's parameters are copied into one contiguous
    array per dtype (float32 and float64 parameters in one group get one buffer
    each) and every `p.data` becomes a view of it; `step()` is then one call of
    `kernels.current.adamw_step` per buffer. Consequences for users:
      * load weights by copying into place, `p.data[...] = value` (that is what
        `Module.load_state_dict` does); a rebound `p.data = array` is noticed
        and copied in at the next `step()`, but until then the buffer is stale;
      * a parameter may belong to one optimizer only;
      * two parameters must not share memory (tie weights by using the same
        Parameter object, which is then optimized once).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False):
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
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
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

    def step(self):
        adamw_step = kernels.current.adamw_step
        for group, buffers in zip(self.param_groups, self._buffers):
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            eps, weight_decay = float(group["eps"]), float(group["weight_decay"])
            if not self.decoupled_weight_decay and weight_decay != 0:
                l2_penalty, weight_decay = weight_decay, 0.0  # through the gradient instead
            else:
                l2_penalty = 0.0
            for buf in buffers:
                buf.sync_views()
                has_grad = buf.gather_grads()
                if not has_grad.any():
                    continue
                buf.steps[has_grad] += 1
                if l2_penalty:
                    # Parameters without a gradient get a penalty too, but are not updated below.
                    buf.grad += np.asarray(l2_penalty, dtype=buf.dtype) * buf.data

                if has_grad.all() and (buf.steps == buf.steps[0]).all():
                    # The usual case: the whole buffer in one kernel call.
                    adamw_step(buf.data, buf.grad, buf.exp_avg, buf.exp_avg_sq,
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
                    adamw_step(buf.data[s], buf.grad[s], buf.exp_avg[s], buf.exp_avg_sq[s],
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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True)


# ----------------------------------------------------------------------------
# RMSprop


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop.

    For each parameter p with gradient g:

        g = g + weight_decay * p                          (L2 penalty, if any)
        v = alpha * v + (1 - alpha) * g * g               (running mean of squares)
        if centered:  a = alpha * a + (1 - alpha) * g;  denom = sqrt(v - a * a) + eps
        else:         denom = sqrt(v) + eps
        if momentum:  buf = momentum * buf + g / denom;   p = p - lr * buf
        else:         p = p - lr * g / denom

    Every state starts at zero. Parameters whose grad is None are skipped.
    """

    _STATE_ARRAYS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
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
                        momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def step(self):
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = np.asarray(p.grad)
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


def _check_step(index, step):
    if np.ndim(step) != 0 or not isinstance(np.asarray(step).item(), numbers.Integral) or step < 0:
        raise ValueError(f"state of parameter {index}: 'step' must be a non-negative integer, got {step!r}")


# ----------------------------------------------------------------------------
# Gradient clipping


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most max_norm.

    The norm is taken over all gradients as if concatenated into one vector.
    If it exceeds max_norm every gradient is multiplied, in place, by
    max_norm / (norm + 1e-6). Returns the norm BEFORE clipping, as a float.
    Parameters whose grad is None are ignored.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    with_grad, seen = [], set()
    for p in parameters:
        if p.grad is not None and id(p) not in seen:  # a tied weight counts once
            seen.add(id(p))
            with_grad.append(p)
    if not with_grad:
        return 0.0
    grads = [np.asarray(p.grad) for p in with_grad]

    norm_type = float(norm_type)
    if norm_type == math.inf:
        total_norm = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:
        # dot(g, g) is the sum of squares, computed by BLAS.
        total_norm = math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads))
    else:
        total_norm = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1.0 / norm_type)

    if error_if_nonfinite and not math.isfinite(total_norm):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total_norm}")

    clip_coef = float(max_norm) / (total_norm + 1e-6)
    if clip_coef < 1.0:
        for p in with_grad:
            if isinstance(p.grad, np.ndarray) and p.grad.flags.writeable:
                p.grad *= np.asarray(clip_coef, dtype=p.grad.dtype)
            else:  # a NumPy scalar or read-only gradient cannot be scaled in place
                grad = np.asarray(p.grad)
                p.grad = grad * np.asarray(clip_coef, dtype=grad.dtype)
    return total_norm


# ----------------------------------------------------------------------------
# Learning-rate schedule


def get_lr(it, *, max_lr, min_lr, warmup_iters, lr_decay_iters):
    """Learning rate at iteration `it`: linear warmup, then cosine decay to min_lr.

    As in nanoGPT:
      it <  warmup_iters:   max_lr * (it + 1) / (warmup_iters + 1)
      it >  lr_decay_iters: min_lr
      otherwise:            cosine from max_lr (at warmup_iters) down to min_lr
                            (at lr_decay_iters)
    """
    if lr_decay_iters < warmup_iters:
        raise ValueError(f"lr_decay_iters ({lr_decay_iters}) must be >= warmup_iters ({warmup_iters})")
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_span = lr_decay_iters - warmup_iters
    decay_ratio = (it - warmup_iters) / decay_span if decay_span > 0 else 0.0
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)


class CosineWarmupSchedule:
    """`get_lr` with its settings bundled; `apply(optimizer, it)` sets every group's lr.

        schedule = CosineWarmupSchedule(max_lr=6e-4, min_lr=6e-5,
                                        warmup_iters=100, lr_decay_iters=5000)
        for it in range(max_iters):
            lr = schedule.apply(optimizer, it)
            ...
    """

    def __init__(self, *, max_lr, min_lr, warmup_iters, lr_decay_iters):
        if lr_decay_iters < warmup_iters:
            raise ValueError(f"lr_decay_iters ({lr_decay_iters}) must be >= warmup_iters ({warmup_iters})")
        self.max_lr, self.min_lr = max_lr, min_lr
        self.warmup_iters, self.lr_decay_iters = warmup_iters, lr_decay_iters

    def __call__(self, it):
        return get_lr(it, max_lr=self.max_lr, min_lr=self.min_lr,
                      warmup_iters=self.warmup_iters, lr_decay_iters=self.lr_decay_iters)

    def apply(self, optimizer, it):
        """Set lr of every parameter group of `optimizer` for iteration `it`; return it."""
        lr = self(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __repr__(self):
        return (f"CosineWarmupSchedule(max_lr={self.max_lr}, min_lr={self.min_lr}, "
                f"warmup_iters={self.warmup_iters}, lr_decay_iters={self.lr_decay_iters})")


# Imported last: the schedulers use the Optimizer class defined above.
from tensorlite.optim import lr_scheduler  # noqa: E402
