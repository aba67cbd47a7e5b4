"""``Module``: the base class of every layer and model, as ``torch.nn.Module``.

A ``Module`` notices every ``Parameter`` and every sub-``Module`` assigned to one of its
attributes (``self.weight = Parameter(...)``, ``self.proj = Linear(...)``) and records it, in
assignment order.  That bookkeeping is all ``parameters()``, ``state_dict()``, ``train()`` and
friends need: they walk the recorded tree.

Non-learnable state (running statistics, masks, class weights) is a buffer
(``register_buffer``): saved in ``state_dict`` unless registered with ``persistent=False``, cast
by ``to``, but not a parameter.

``register_forward_pre_hook`` / ``register_forward_hook`` run code around a module's forward
(to inspect activations or replace inputs or outputs), ``register_full_backward_pre_hook`` /
``register_full_backward_hook`` around its part of the backward pass (to inspect or replace the
gradients of its outputs and inputs; see ``backward_hook.py`` for how); each returns a handle
with ``remove()``.

The methods that exist only for PyTorch programs (``cpu()``, ``cuda()``, ``register_module``)
come from ``compat.TorchModuleMethods``.
"""

import itertools
from collections import OrderedDict, namedtuple

import numpy as np

from tensorlite.autograd.engine import zero_grad_of
from tensorlite.nn import compat
from tensorlite.nn.backward_hook import BackwardHook
from tensorlite.nn.parameter import Parameter
from tensorlite.tensor import RemovableHandle, Tensor, is_grad_enabled

__all__ = ["Module", "IncompatibleKeys"]


# What load_state_dict returns when strict=False (same shape as PyTorch's result).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_buffer(name, value):
    """A buffer is a Tensor that is state but not a learnable weight (or None: no buffer)."""
    if value is None or (isinstance(value, Tensor) and not isinstance(value, Parameter)):
        return value
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float, bool)):
        return Tensor(np.asarray(value))
    raise TypeError(f"buffer '{name}' must be a Tensor, an array or None, got {type(value).__name__}")


class Module(compat.TorchModuleMethods):
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters and sub-modules as
    attributes, and define ``forward``.  Calling the module calls ``forward``.

    Three ordered dictionaries do the bookkeeping:

    * ``_parameters``: attribute name -> ``Parameter`` owned directly by this module
    * ``_buffers``:    attribute name -> ``Tensor`` of non-learnable state (``register_buffer``)
    * ``_modules``:    attribute name -> child ``Module``

    They keep assignment order, which makes parameter order (and so optimizer state and
    checkpoints) deterministic.
    """

    # Class-level "no hooks", so that __call__ stays cheap and works for every module.
    _forward_pre_hooks = _forward_hooks = _backward_pre_hooks = _backward_hooks = ()

    def __init__(self):
        # object.__setattr__ skips our own __setattr__, which needs these to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- attribute bookkeeping ----------------------------------------------------------------

    def __setattr__(self, name, value):
        parameters = self.__dict__.get("_parameters")
        if parameters is None and isinstance(value, (Parameter, Module)):
            raise AttributeError(
                f"cannot assign {type(value).__name__} '{name}' before Module.__init__() was "
                f"called; call super().__init__() first in {type(self).__name__}.__init__")
        if parameters is not None:
            modules, buffers = self._modules, self._buffers
            if isinstance(value, Parameter):
                modules.pop(name, None)
                self._forget_buffer(name)
                parameters[name] = value  # re-assigning an existing name keeps its position
            elif isinstance(value, Module):
                parameters.pop(name, None)
                self._forget_buffer(name)
                modules[name] = value
            elif name in buffers:
                value = buffers[name] = _as_buffer(name, value)  # a new value for the buffer
            else:
                # Anything else (None, a plain Tensor, a number) is an ordinary attribute.
                parameters.pop(name, None)
                modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._forget_buffer(name)
        object.__delattr__(self, name)

    def _forget_buffer(self, name):
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not a learnable weight, e.g. a running mean or a causal mask.

        The buffer (a Tensor; arrays are wrapped) becomes the attribute ``name``; it is cast by
        ``to(dtype)`` when floating point, is not among ``parameters()``, and appears in
        ``state_dict()`` unless ``persistent=False``. ``tensor`` may be None (no buffer yet);
        assigning to the attribute later replaces the buffer's value.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError(f"cannot register buffer '{name}' before Module.__init__() was "
                                 f"called; call super().__init__() first")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"buffer name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists on {type(self).__name__}")
        buffer = _as_buffer(name, tensor)
        self._buffers[name] = buffer
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, buffer)

    def register_parameter(self, name, param):
        """Same as ``setattr(self, name, param)``; ``param`` may be None (no parameter)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter expects a Parameter or None, got {type(param).__name__}")
        setattr(self, name, param)

    def add_module(self, name, module):
        """Same as ``setattr(self, name, module)``, for names that are not identifiers."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module expects a Module or None, got {type(module).__name__}")
        setattr(self, name, module)

    # --- running ------------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if (self._forward_pre_hooks or self._forward_hooks or self._backward_hooks
                or self._backward_pre_hooks):
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    def _call_with_hooks(self, args, kwargs):
        for hook, with_kwargs in list(self._forward_pre_hooks.values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError("a forward pre-hook registered with_kwargs=True must "
                                           f"return None or (args, kwargs), got {result!r}")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:  # replacement positional arguments
                    args = result if isinstance(result, tuple) else (result,)
        backward_hook = None
        if (self._backward_hooks or self._backward_pre_hooks) and is_grad_enabled():
            backward_hook = BackwardHook(self, [hook for hook, _ in self._backward_hooks.values()],
                                         [hook for hook, _ in self._backward_pre_hooks.values()])
            args = backward_hook.setup_input(args)
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(self._forward_hooks.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:  # replacement output
                output = result
        if backward_hook is not None:
            output = backward_hook.setup_output(output)
        return output

    def _add_hook(self, kind, hook, prepend, with_kwargs):
        hooks = self.__dict__.get(kind)
        if hooks is None:
            raise AttributeError(f"cannot register a hook before Module.__init__() was called; "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(hooks)
        hooks[handle.id] = (hook, with_kwargs)
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args)`` before every ``forward``; it may return replacement
        positional arguments (a tuple, or one value). With ``with_kwargs=True`` the hook is
        ``hook(module, args, kwargs)`` and may return ``(args, kwargs)``. Returns a handle whose
        ``remove()`` unregisters the hook. Hooks run in registration order (``prepend=True``
        puts this one first)."""
        return self._add_hook("_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args, output)`` after every ``forward``; a return value other
        than None replaces the output. With ``with_kwargs=True`` the hook is
        ``hook(module, args, kwargs, output)``. Returns a handle whose ``remove()`` unregisters
        the hook."""
        return self._add_hook("_forward_hooks", hook, prepend, with_kwargs)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """Call ``hook(module, grad_output)`` when the gradients with respect to this module's
        outputs have been computed, before they go into the module; it may return replacement
        ``grad_output`` (a tuple of the same length, None entries allowed). ``grad_output`` has
        one entry per output (None for an output without a gradient). Returns a handle whose
        ``remove()`` unregisters the hook."""
        return self._add_hook("_backward_pre_hooks", hook, prepend, False)

    def register_full_backward_hook(self, hook, prepend=False):
        """Call ``hook(module, grad_input, grad_output)`` when the gradients with respect to
        this module's inputs have been computed, as PyTorch does.

        ``grad_input`` has one entry per positional argument of the call: the gradient this
        call contributes to that input (not what other uses of it add; zeros for a Tensor that
        gets none), or None for an argument that is not a Tensor; ``grad_output`` has one per
        output (None for an output without a gradient). Gradients are Tensors. The hook may
        return a replacement for ``grad_input`` (a tuple of the same length), which is what then
        flows on to the inputs. When no input requires grad the hook runs as soon as
        ``grad_output`` is known, with ``grad_input`` all None (and a warning, as in PyTorch).
        Hooks in effect are those registered when the module was called. Returns a handle whose
        ``remove()`` unregisters the hook."""
        return self._add_hook("_backward_hooks", hook, prepend, False)

    # --- walking the tree ---------------------------------------------------------------------

    def children(self):
        """The direct sub-modules, in assignment order."""
        for _, module in self.named_children():
            yield module

    def named_children(self):
        """(name, module) for each direct sub-module, in assignment order."""
        yield from self._modules.items()

    def named_modules(self, prefix="", remove_duplicate=True, _seen=None):
        """(dotted name, module) for this module and every descendant, parents first.

        A module reachable along two paths is reported once (under the first name) unless
        ``remove_duplicate=False``.
        """
        if _seen is None:
            _seen = set()
        if remove_duplicate:
            if id(self) in _seen:
                return
            _seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            child_prefix = f"{prefix}.{name}" if prefix else name
            yield from child.named_modules(child_prefix, remove_duplicate, _seen)

    def modules(self):
        """This module and every descendant, parents first."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, parameter) pairs, e.g. ``('transformer.h.0.attn.c_attn.weight', p)``.

        Order: a module's own parameters in assignment order, then each child's, depth first
        (only the module's own with ``recurse=False``). A parameter shared by two modules (tied
        weights) is yielded once, under the first name met, unless ``remove_duplicate=False``.
        """
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        """Every learnable parameter once (tied weights are not repeated); only this module's
        own with ``recurse=False``."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, buffer) pairs, in the order of ``named_parameters`` (None skipped)."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def _named_members(self, store, prefix, recurse, remove_duplicate):
        """(dotted name, value) of every module's `store` dict (parameters or buffers), each
        value once unless remove_duplicate is False; None entries skipped."""
        seen = set()
        modules = self.named_modules(prefix, remove_duplicate) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def buffers(self, recurse=True):
        """Every buffer once; only this module's own with ``recurse=False``."""
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self):
        """Total number of scalar weights (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant (children first) and then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and gradients ------------------------------------------------------------------

    def train(self, mode=True):
        """Set ``.training`` on this module and every descendant.  Returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout off): same as ``train(False)``.  Returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Forget accumulated gradients: every parameter's ``.grad`` becomes None (or is filled
        with zeros in place when ``set_to_none=False``)."""
        for p in self.parameters():
            zero_grad_of(p, set_to_none)

    def requires_grad_(self, requires_grad=True):
        """Switch gradient recording on or off for every parameter (e.g. to freeze a layer).
        Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, *args, **kwargs):
        """Cast every parameter (and its gradient) and every floating-point buffer to a float
        dtype. Returns self.

        PyTorch's forms are accepted: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``,
        ``to(device=..., dtype=...)``, ``to(tensor)`` (that tensor's dtype). The device must be
        the CPU (see ``compat.py``); the dtype float32 or float64 (``tl.float64``,
        ``np.float64``, "float64", ...).

        A cast replaces each parameter's array (``p.data``), so do it before building an
        optimizer that holds views of those arrays (parameters already of the dtype are left
        alone). Tied parameters stay tied: the ``Parameter`` objects themselves are kept.
        """
        dtype = compat.to_arguments(args, kwargs)
        if dtype is None:
            return self
        dtype = compat.float_dtype("Module.to", dtype)
        for p in self.parameters():
            if p.dtype != dtype:
                p.data = p.data.astype(dtype)
                if p.grad is not None:
                    p.grad = p.grad.detach().astype(dtype)
        for buffer in self.buffers():
            if buffer.dtype.kind == "f" and buffer.dtype != dtype:
                buffer.data = buffer.data.astype(dtype)
        return self

    def double(self):
        """Cast every parameter and floating-point buffer to float64.  Returns self."""
        return self.to(np.float64)

    def float(self):
        """Cast every parameter and floating-point buffer to float32.  Returns self."""
        return self.to(np.float32)

    # --- checkpoints --------------------------------------------------------------------------

    def _state_tensors(self):
        """(dotted name, Tensor) for every parameter and persistent buffer, under every name it
        is reachable by: each module's parameters, then its buffers, then its children's."""
        for module_name, module in self.named_modules(remove_duplicate=False):
            persistent = ((name, b) for name, b in module._buffers.items()
                          if b is not None and name not in module._non_persistent_buffers)
            for name, tensor in itertools.chain(module._parameters.items(), persistent):
                yield (f"{module_name}.{name}" if module_name else name), tensor

    def state_dict(self):
        """An ordered dict: dotted name -> a copy of the array of every parameter and every
        persistent buffer.

        Like PyTorch, a tied parameter appears under every name it is reachable by (e.g. both
        ``transformer.wte.weight`` and ``lm_head.weight``), so a checkpoint loads into a freshly
        built model regardless of which name it looks for.
        """
        return OrderedDict((name, tensor.data.copy()) for name, tensor in self._state_tensors())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters and persistent buffers, in place.

        Values are written with ``p.data[...] = value`` so any array that views a parameter
        (an optimizer's flat buffer, for instance) sees the new values.  Values are cast to the
        parameter's dtype.

        Errors (nothing is copied when one is raised):
          * a shape mismatch, always: names the key and both shapes;
          * with ``strict=True`` (default), a parameter or buffer with no entry ("missing") or an
            entry with nothing to go to ("unexpected"): names the keys.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        own = OrderedDict(self._state_tensors())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]

        problems = []
        if strict and missing:
            problems.append("missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        values = {}
        for name, param in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = np.asarray(value.data if isinstance(value, Tensor) else value)
            if value.shape != param.shape:
                problems.append(
                    f"size mismatch for {name!r}: the state_dict has shape {tuple(value.shape)}, "
                    f"the one in the model has shape {tuple(param.shape)}")
            values[name] = value
        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n  " + "\n  ".join(problems))

        for name, value in values.items():
            own[name].data[...] = value
        return IncompatibleKeys(missing, unexpected)

    # --- printing -----------------------------------------------------------------------------

    def extra_repr(self):
        """What goes between the parentheses of this module's line; layers override it."""
        return ""

    def _repr_lines(self):
        """The PyTorch-style tree, one line per module, each annotated with its parameter count."""
        count = f"# {self.num_parameters():,} params"
        if not self._modules:
            return [f"{type(self).__name__}({self.extra_repr()})  {count}"]
        lines = [f"{type(self).__name__}(  {count}"]
        if self.extra_repr():
            lines.append("  " + self.extra_repr())
        for name, child in self._modules.items():
            child_lines = child._repr_lines()
            lines.append(f"  ({name}): {child_lines[0]}")
            lines.extend("  " + line for line in child_lines[1:])
        lines.append(")")
        return lines

    def __repr__(self):
        return "\n".join(self._repr_lines() + [f"Total parameters: {self.num_parameters():,}"])

