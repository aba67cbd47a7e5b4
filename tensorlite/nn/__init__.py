"""Neural-network building blocks: ``Parameter``, ``Module`` and a handful of layers.

The design follows ``torch.nn``:

* A ``Parameter`` is a float ``Tensor`` that always requires a gradient.
* A ``Module`` notices every ``Parameter`` and every sub-``Module`` assigned to one of its
  attributes (``self.weight = Parameter(...)``, ``self.proj = Linear(...)``) and records it, in
  assignment order.  That bookkeeping is all ``parameters()``, ``state_dict()``, ``train()`` and
  friends need: they walk the recorded tree.
* Layers (``Linear``, ``Embedding``, ``LayerNorm``, ...) are small modules whose ``forward`` calls
  one function from ``tensorlite.functional``; the math lives there, the state lives here. The
  same goes for the activation modules (``ReLU``, ``Softmax``, ...) and the loss modules
  (``MSELoss``, ``CrossEntropyLoss``, ...), whose functions are in ``tensorlite.losses``.
* Non-learnable state (running statistics, masks, class weights) is a buffer
  (``register_buffer``): saved in ``state_dict`` and cast by ``to``, but not a parameter.
* ``register_forward_pre_hook`` / ``register_forward_hook`` run code around a module's forward
  (to inspect activations or replace inputs or outputs); each returns a handle with ``remove()``.

Example::

    import tensorlite as tl
    from tensorlite import nn

    class TwoLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.fc2 = nn.Linear(8, 1)

        def forward(self, x):
            return self.fc2(self.fc1(x).relu())

    model = TwoLayer()
    [name for name, _ in model.named_parameters()]
    # ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
"""

import itertools
import math
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from tensorlite import functional as F
from tensorlite import losses
# rng(): the library-wide generator that every layer initialisation draws from, so
# tl.manual_seed(seed) makes model initialisation reproducible.
from tensorlite.tensor import RemovableHandle, Tensor, rng as _rng

__all__ = [
    "Parameter", "Module", "RemovableHandle", "Linear", "Embedding", "LayerNorm", "Dropout",
    "GELU", "ReLU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax", "Identity", "Flatten",
    "MSELoss", "L1Loss", "CrossEntropyLoss", "BCEWithLogitsLoss", "NLLLoss",
    "ModuleList", "ModuleDict", "Sequential",
]


# ----------------------------------------------------------------------------------------------
# Parameter
# ----------------------------------------------------------------------------------------------

class Parameter(Tensor):
    """A ``Tensor`` that is a learnable weight of a ``Module``.

    Always floating point and always ``requires_grad=True``.  Float input keeps its dtype unless
    ``dtype`` is given (like ``Tensor``); integer input becomes float32 (an integer weight could
    not be trained).  The layers below create float32 parameters by default.  Assigning a
    ``Parameter`` to a module attribute registers it with the module.
    """

    def __init__(self, data, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data)
        if dtype is None and not np.issubdtype(array.dtype, np.floating):
            dtype = np.float32
        super().__init__(array, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


# ----------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------

# What load_state_dict returns when strict=False (same shape as PyTorch's result).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_buffer(name, value):
    """A buffer is a Tensor that is state but not a learnable weight (or None: no buffer)."""
    if value is None or (isinstance(value, Tensor) and not isinstance(value, Parameter)):
        return value
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float, bool)):
        return Tensor(np.asarray(value))
    raise TypeError(f"buffer '{name}' must be a Tensor, an array or None, got {type(value).__name__}")


class Module:
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
    _forward_pre_hooks = _forward_hooks = ()

    def __init__(self):
        # object.__setattr__ skips our own __setattr__, which needs these to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
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
        if self._forward_pre_hooks or self._forward_hooks:
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
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(self._forward_hooks.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:  # replacement output
                output = result
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

    def named_parameters(self, prefix="", remove_duplicate=True):
        """(dotted name, parameter) pairs, e.g. ``('transformer.h.0.attn.c_attn.weight', p)``.

        Order: a module's own parameters in assignment order, then each child's, depth first.
        A parameter shared by two modules (tied weights) is yielded once, under the first name
        met, unless ``remove_duplicate=False``.
        """
        return self._named_members("_parameters", prefix, remove_duplicate)

    def parameters(self):
        """Every learnable parameter once (tied weights are not repeated)."""
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix="", remove_duplicate=True):
        """(dotted name, buffer) pairs, in the order of ``named_parameters`` (None skipped)."""
        return self._named_members("_buffers", prefix, remove_duplicate)

    def _named_members(self, store, prefix, remove_duplicate):
        """(dotted name, value) of every module's `store` dict (parameters or buffers), each
        value once unless remove_duplicate is False; None entries skipped."""
        seen = set()
        for module_name, module in self.named_modules(prefix, remove_duplicate):
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def buffers(self):
        """Every buffer once."""
        for _, buffer in self.named_buffers():
            yield buffer

    def num_parameters(self):
        """Total number of scalar weights (tied weights counted once)."""
        return sum(p.size for p in self.parameters())

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
        with zeros when ``set_to_none=False``)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = np.zeros_like(p.data)

    def requires_grad_(self, requires_grad=True):
        """Switch gradient recording on or off for every parameter (e.g. to freeze a layer).
        Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, dtype):
        """Cast every parameter and floating-point buffer to the floating dtype ``dtype``
        (e.g. ``np.float64``).  Returns self.  ``to("cpu")`` is accepted and changes nothing
        (there is no other device).

        The cast replaces each parameter's array (``p.data``), so do it before building an
        optimizer that holds views of those arrays.  Tied parameters stay tied: the
        ``Parameter`` objects themselves are kept.
        """
        if isinstance(dtype, str) and dtype == "cpu":
            return self
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"parameters must stay floating point, cannot cast to {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for buffer in self.buffers():
            if buffer.dtype.kind == "f":
                buffer.data = buffer.data.astype(dtype)
        return self

    def double(self):
        """Cast every parameter to float64.  Returns self."""
        return self.to(np.float64)

    def float(self):
        """Cast every parameter to float32.  Returns self."""
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


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features).

    Initialised like PyTorch: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)] (this is what
    kaiming_uniform(a=sqrt(5)) works out to).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        rng = _rng()
        self.weight = Parameter(rng.uniform(-bound, bound, size=(out_features, in_features)), dtype)
        self.bias = Parameter(rng.uniform(-bound, bound, size=(out_features,)), dtype) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` (num_embeddings, embedding_dim) is the vector of
    token ``i``.  Initialised N(0, 1) like PyTorch."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = Parameter(_rng().standard_normal((num_embeddings, embedding_dim)), dtype)

    def forward(self, idx):
        return F.embedding(idx, self.weight)  # idx (...) ints -> (..., embedding_dim)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale by ``weight`` (ones) and
    shift by ``bias`` (zeros; omitted when ``bias=False``, as GPT configs may ask)."""

    def __init__(self, normalized_shape, bias=True, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = Parameter(np.ones(normalized_shape), dtype)
        self.bias = Parameter(np.zeros(normalized_shape), dtype) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class Dropout(Module):
    """While training, zero each element with probability ``p`` and scale the rest by 1/(1-p);
    the identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """The GELU activation, tanh approximation (GPT-2's)."""

    def forward(self, x):
        return F.gelu(x)


# ----------------------------------------------------------------------------------------------
# Activations and shape helpers
# ----------------------------------------------------------------------------------------------

class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return x.sigmoid()


class SiLU(Module):
    """x * sigmoid(x) (also called swish)."""

    def forward(self, x):
        return losses.silu(x)


def _implicit_softmax_dim(ndim):
    # PyTorch's legacy choice when no dim is given (it warns too).
    warnings.warn("Implicit dimension choice for softmax has been deprecated; pass dim=",
                  UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """softmax along ``dim``: exp(x) / sum(exp(x))."""

    function = staticmethod(F.softmax)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = _implicit_softmax_dim(x.ndim) if self.dim is None else self.dim
        return self.function(x, axis=dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log softmax along ``dim``: x - logsumexp(x)."""

    function = staticmethod(F.log_softmax)


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch's does."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge the axes ``start_dim`` to ``end_dim`` into one: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        shape = tuple(x.shape)
        ndim = max(len(shape), 1)
        start, end = self.start_dim, self.end_dim
        if not (-ndim <= start < ndim and -ndim <= end < ndim):
            raise IndexError(f"Flatten: start_dim={start} or end_dim={end} is out of range for "
                             f"an input of shape {shape}")
        start, end = start % ndim, end % ndim
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for an input of shape {shape}")
        if len(shape) == 0:
            return x.reshape(1)
        merged = int(np.prod(shape[start:end + 1], dtype=np.int64))
        return x.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ----------------------------------------------------------------------------------------------
# Losses: modules around the functions of tensorlite.losses
# ----------------------------------------------------------------------------------------------

class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        losses._check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error: ``MSELoss()(input, target)``."""

    def forward(self, input, target):
        return losses.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error."""

    def forward(self, input, target):
        return losses.l1_loss(input, target, reduction=self.reduction)


class _WeightedLoss(_Loss):
    """As in PyTorch, the class weights are a buffer, so they travel with the state_dict."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of class indices given log-probabilities."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return losses.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits against class indices (or class probabilities); see
    ``tensorlite.losses.cross_entropy``."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return losses.cross_entropy(input, target, weight=self.weight,
                                    ignore_index=self.ignore_index, reduction=self.reduction,
                                    label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy on logits (sigmoid folded in, numerically stable)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return losses.binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight)


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------

class ModuleList(Module):
    """A list of modules registered under the names "0", "1", ... (hence ``h.0.attn...``)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __setitem__(self, index, module):
        self.add_module(self._key(index), module)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index]
        for key in list(self._modules):
            delattr(self, key)
        self.extend(modules)  # renumber 0, 1, ... as PyTorch does

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, module)
        for key in list(self._modules):
            delattr(self, key)
        self.extend(modules)

    def _key(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ModuleList of length {len(self)}")
        return str(index % len(self))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of modules; each is also an attribute, so ``d.wte`` and ``d['wte']`` agree."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in dict(modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for name, module in dict(modules).items():
            self.add_module(name, module)

    def pop(self, name):
        module = self._modules[name]
        delattr(self, name)
        return module


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b)(x) == b(a(x))``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*list(self._modules.values())[index])
        return super().__getitem__(index)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x
