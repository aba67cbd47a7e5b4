"""Neural-network building blocks: ``Parameter``, ``Module`` and a handful of layers.

The design follows ``torch.nn``:

* A ``Parameter`` is a float ``Tensor`` that always requires a gradient.
* A ``Module`` notices every ``Parameter`` and every sub-``Module`` assigned to one of its
  attributes (``self.weight = Parameter(...)``, ``self.proj = Linear(...)``) and records it, in
  assignment order.  That bookkeeping is all ``parameters()``, ``state_dict()``, ``train()`` and
  friends need: they walk the recorded tree.
* Layers (``Linear``, ``Embedding``, ``LayerNorm``, ...) are small modules whose ``forward`` calls
  one function from ``tensorlite.functional``; the math lives there, the state lives here.

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

import math
from collections import OrderedDict, namedtuple

import numpy as np

from tensorlite import functional as F
# rng(): the library-wide generator that every layer initialisation draws from, so
# tl.manual_seed(seed) makes model initialisation reproducible.
from tensorlite.tensor import Tensor, rng as _rng

__all__ = [
    "Parameter", "Module", "Linear", "Embedding", "LayerNorm", "Dropout", "GELU",
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


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters and sub-modules as
    attributes, and define ``forward``.  Calling the module calls ``forward``.

    Two ordered dictionaries do the bookkeeping:

    * ``_parameters``: attribute name -> ``Parameter`` owned directly by this module
    * ``_modules``:    attribute name -> child ``Module``

    Both keep assignment order, which makes parameter order (and so optimizer state and
    checkpoints) deterministic.
    """

    def __init__(self):
        # object.__setattr__ skips our own __setattr__, which needs these two to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- attribute bookkeeping ----------------------------------------------------------------

    def __setattr__(self, name, value):
        parameters = self.__dict__.get("_parameters")
        if parameters is None and isinstance(value, (Parameter, Module)):
            raise AttributeError(
                f"cannot assign {type(value).__name__} '{name}' before Module.__init__() was "
                f"called; call super().__init__() first in {type(self).__name__}.__init__")
        if parameters is not None:
            modules = self._modules
            if isinstance(value, Parameter):
                modules.pop(name, None)
                parameters[name] = value  # re-assigning an existing name keeps its position
            elif isinstance(value, Module):
                parameters.pop(name, None)
                modules[name] = value
            else:
                # Anything else (None, a plain Tensor, a number) is an ordinary attribute.
                parameters.pop(name, None)
                modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

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
        return self.forward(*args, **kwargs)

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
        seen = set()
        for module_name, module in self.named_modules(prefix, remove_duplicate):
            for name, param in module._parameters.items():
                if remove_duplicate:
                    if id(param) in seen:
                        continue
                    seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        """Every learnable parameter once (tied weights are not repeated)."""
        for _, param in self.named_parameters():
            yield param

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

    def zero_grad(self):
        """Forget accumulated gradients: every parameter's ``.grad`` becomes None."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Cast every parameter to the floating dtype ``dtype`` (e.g. ``np.float64``).  Returns self.

        The cast replaces each parameter's array (``p.data``), so do it before building an
        optimizer that holds views of those arrays.  Tied parameters stay tied: the
        ``Parameter`` objects themselves are kept.
        """
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"parameters must stay floating point, cannot cast to {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    def double(self):
        """Cast every parameter to float64.  Returns self."""
        return self.to(np.float64)

    def float(self):
        """Cast every parameter to float32.  Returns self."""
        return self.to(np.float32)

    # --- checkpoints --------------------------------------------------------------------------

    def state_dict(self):
        """An ordered dict: dotted parameter name -> a copy of its array.

        Like PyTorch, a tied parameter appears under every name it is reachable by (e.g. both
        ``transformer.wte.weight`` and ``lm_head.weight``), so a checkpoint loads into a freshly
        built model regardless of which name it looks for.
        """
        return OrderedDict(
            (name, param.data.copy())
            for name, param in self.named_parameters(remove_duplicate=False))

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters, in place.

        Values are written with ``p.data[...] = value`` so any array that views a parameter
        (an optimizer's flat buffer, for instance) sees the new values.  Values are cast to the
        parameter's dtype.

        Errors (nothing is copied when one is raised):
          * a shape mismatch, always: names the key and both shapes;
          * with ``strict=True`` (default), a parameter with no entry ("missing") or an entry with
            no parameter ("unexpected"): names the keys.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        own = OrderedDict(self.named_parameters(remove_duplicate=False))
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
                    f"the parameter in the model has shape {tuple(param.shape)}")
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
