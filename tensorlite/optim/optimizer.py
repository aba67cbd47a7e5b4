"""The base class of every optimizer: parameter groups and the state_dict machinery.

Everything here works on `tl.Tensor` parameters through two attributes only:

    p.data  the parameter values (np.ndarray), updated IN PLACE by `step()`
    p.grad  the gradient (a Tensor; its array is `p.grad.data`) written by `backward()`, or None

Parameter groups
----------------
`params` is either an iterable of parameters, or an iterable of dicts

    [{"params": [...decayed weights...], "weight_decay": 0.1},
     {"params": [...biases, norms...],   "weight_decay": 0.0, "lr": 1e-4}]

Keys missing from a group are filled from the optimizer's defaults. After
construction `opt.param_groups` is a list of such dicts; changing
`group["lr"]` between steps is how learning-rate schedules are applied.
As in PyTorch, parameters may also come with their names, as
`model.named_parameters()` yields them; each group then also holds
`"param_names"`.

PyTorch's optimizer keywords
----------------------------
Every optimizer takes the keywords its PyTorch counterpart takes besides the
hyperparameters (see `torch_options`): `maximize=True` ascends the gradient
(in the groups' dicts only when set, so default state_dicts keep their
layout); `foreach=`, `fused=` and `capturable=` choose among PyTorch's
implementations (per-tensor loops, multi-tensor or fused kernels, CUDA graphs)
and are accepted and ignored, tensorlite having one implementation of each
optimizer; `differentiable=True` (a step that autograd can differentiate) is
not available.

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

import numbers

import numpy as np

from tensorlite.autograd.engine import zero_grad_of
from tensorlite.tensor import Tensor, enable_grad

__all__ = ["Optimizer", "torch_options"]


def torch_options(name, maximize=False, foreach=None, fused=None, capturable=False,
                  differentiable=False):
    """Check PyTorch's optimizer keywords (see the module docstring); return what goes into
    the optimizer's defaults: {"maximize": True}, or nothing."""
    if foreach and fused:
        raise RuntimeError(f"{name}: `fused` and `foreach` cannot be `True` together.")
    if differentiable:
        raise NotImplementedError(f"{name}: differentiable=True (differentiating through the "
                                  f"optimizer step) is not supported by tensorlite")
    return {"maximize": True} if maximize else {}


class Optimizer:
    """Base class: holds the parameter groups and the state_dict machinery.

    Subclasses implement `_step()` (one update; `step()` wraps it) plus three
    small hooks that read, check and write the per-parameter state
    (`_get_param_state`, `_check_param_state`, `_set_param_state`).
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
        """Add a dict {"params": [...], **hyperparameters} to `param_groups`; the params may
        be Tensors or (name, Tensor) pairs."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("a param group dict needs a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        names = None
        if params and isinstance(params[0], tuple):  # named_parameters()
            if not all(isinstance(item, tuple) and len(item) == 2 for item in params):
                raise ValueError("a param group must hold all named parameters, (name, Tensor) "
                                 "pairs, or none")
            names, params = [name for name, _ in params], [p for _, p in params]

        # A parameter listed twice (e.g. a tied weight collected twice) would be
        # updated twice per step; keep its first occurrence only.
        unique, unique_names, seen = [], [], set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not np.issubdtype(p.data.dtype, np.floating):
                raise TypeError(f"optimizer can only optimize floating point Tensors, got dtype {p.data.dtype}")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
                if names is not None:
                    unique_names.append(names[i])
        if not unique:
            raise ValueError("a param group has an empty 'params' list")

        for other in self.param_groups:
            if any(id(p) in seen for p in other["params"]):
                raise ValueError("some parameters appear in more than one parameter group")

        for name, default in self.defaults.items():
            group.setdefault(name, default)
        group["params"] = unique
        if names is not None:
            group["param_names"] = unique_names
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: p.grad = None (or fill with zeros in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                zero_grad_of(p, set_to_none)

    def step(self, closure=None):
        """Update every parameter from its gradient; returns ``closure()`` if given (a
        function that recomputes the loss, called with gradients enabled first, as in
        PyTorch), else None. Subclasses implement ``_step()``."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._step()
        return loss

    def _step(self):
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


def _check_step(index, step):
    if np.ndim(step) != 0 or not isinstance(np.asarray(step).item(), numbers.Integral) or step < 0:
        raise ValueError(f"state of parameter {index}: 'step' must be a non-negative integer, got {step!r}")
