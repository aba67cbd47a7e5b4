"""`Tensor`: an `np.ndarray` plus what reverse-mode autodiff needs.

A tensor holds its values (`data`), whether it wants a gradient (`requires_grad`), the gradient
once computed (`grad`), and the op that produced it (`_ctx`, None for a leaf). That is all this
module defines: the class, its conversions, and its hooks.

Everything a tensor can compute, its operators and methods (`+`, `@`, `sum`, `backward`, `add_`,
...), comes from one table, `TENSOR_METHODS` in `tensorlite/ops/methods.py`, installed at the
bottom of this file. The engine that runs `backward` is the package `tensorlite/autograd/`.
"""

from __future__ import annotations

import collections
import itertools
import operator
import weakref

import numpy as np

__all__ = [
    "Tensor", "RemovableHandle", "Function", "unbroadcast", "no_grad", "enable_grad",
    "is_grad_enabled", "detect_anomaly", "is_anomaly_enabled", "grad", "autograd_grad", "to_dot",
    "manual_seed", "rng",
]


def _check_can_require_grad(array):
    """Raise unless `array` is floating point: a gradient is defined for floats only (an
    integer or boolean tensor holds indices and masks), as in PyTorch."""
    if array.dtype.kind != "f":
        raise TypeError(f"only floating point tensors can require gradients "
                        f"(got dtype {array.dtype})")


def _to_array(data, dtype=None) -> np.ndarray:
    """Lists and Python numbers of floats become float32; an existing float64 array stays
    float64. Half precision is refused rather than silently widened (see `Tensor`)."""
    if isinstance(data, Tensor):
        data = data._data
    array = np.asarray(data, dtype=dtype)
    if array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        raise TypeError(f"tensorlite computes in float32 or float64, not {array.dtype}: convert "
                        f"first, e.g. tl.Tensor(x.astype(np.float32))")
    if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        array = array.astype(np.float32)  # Python floats and lists: float32, as in PyTorch
    return array


class Tensor:
    """An `np.ndarray` plus what reverse-mode autodiff needs: `grad`, `requires_grad`, and the
    op that produced it (`_ctx`). Operators and computing methods come from the table
    `TENSOR_METHODS` (`tensorlite/ops/methods.py`), installed at the bottom of this module.

    dtypes: float32 (the default for Python floats) and float64 compute; integer and boolean
    tensors hold indices and masks. float16 is refused with an error saying how to convert,
    because NumPy's float16 arithmetic loses accuracy and is slow on a CPU."""

    # `data` and `requires_grad` are properties over the slots `_data` and `_requires_grad`, so
    # that assigning them is checked; the engine reads and writes the slots directly.
    # `_grad_home` is set only on a leaf whose optimizer keeps its gradients in a flat buffer
    # (autograd.engine.GradHome), and read with getattr, so `_make` need not pay for it.
    __slots__ = ("_data", "_grad", "_requires_grad", "_ctx", "name", "_version_counter", "_hooks",
                 "_grad_home", "__weakref__")
    # Make `ndarray + Tensor` call Tensor.__radd__ instead of NumPy broadcasting over a Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self._data = _to_array(data, dtype)
        if requires_grad:
            _check_can_require_grad(self._data)
        self._requires_grad = bool(requires_grad)
        self._grad = None
        self._ctx = None
        self.name = None
        self._version_counter = [0]
        self._hooks = None

    @classmethod
    def _make(cls, data: np.ndarray, requires_grad: bool) -> "Tensor":
        """Fast internal constructor: `data` is already a suitable array."""
        t = object.__new__(Tensor)
        t._data = data
        t._requires_grad = requires_grad
        t._grad = None
        t._ctx = None
        t.name = None
        t._version_counter = [0]
        t._hooks = None
        return t

    # ---- plain properties -------------------------------------------------------------------
    def _set_data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        elif not isinstance(value, np.ndarray):
            value = np.asarray(value)
        try:
            old_shape = self._data.shape
        except AttributeError:  # an instance being restored by copy or pickle
            old_shape = value.shape
        if value.shape != old_shape:
            # The graph and every gradient are shaped like the old data: a gradient computed
            # later would not fit the tensor. (A dtype change is fine: Module.to relies on it.)
            raise ValueError(f"Tensor.data: cannot assign data of shape {value.shape} to a "
                             f"tensor of shape {old_shape}; only the dtype may change. Make a "
                             f"new Tensor (or Parameter) of the new shape instead.")
        self._data = value

    def _set_requires_grad(self, requires_grad):
        if requires_grad:
            _check_can_require_grad(self._data)
        self._requires_grad = bool(requires_grad)

    # attrgetter: reading the property costs one C call, not a Python frame
    data = property(operator.attrgetter("_data"), _set_data,
                    doc="The tensor's values, an np.ndarray. Assigning it may change the dtype, "
                        "not the shape.")
    requires_grad = property(operator.attrgetter("_requires_grad"), _set_requires_grad,
                             doc="Whether backward computes a gradient for this tensor (floating "
                                 "point tensors only).")
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    is_leaf = property(lambda self: self._ctx is None)
    grad_fn = property(operator.attrgetter("_ctx"),
                       doc="The op that produced this tensor (a Function; PyTorch's name), None "
                           "for a leaf or a tensor that needs no gradient.")
    _version = property(lambda self: self._version_counter[0],
                        doc="How many in-place operations changed this tensor (or a view of it).")

    def _set_grad(self, grad):
        # Checked as PyTorch does: an optimizer or a later backward would otherwise fail far
        # from the assignment, or write into an array of the wrong shape.
        if grad is not None:
            if not isinstance(grad, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {type(grad).__name__} (wrap an array in tl.tensor)")
            if grad._data.shape != self._data.shape:
                raise RuntimeError(f"assigned grad has data of a different size: "
                                   f"{grad._data.shape}, the tensor is {self._data.shape}")
            if grad._data.dtype != self._data.dtype:
                raise RuntimeError(f"assigned grad has data of a different type: "
                                   f"{grad._data.dtype}, the tensor is {self._data.dtype}")
        self._grad = grad

    grad = property(operator.attrgetter("_grad"), _set_grad,
                    doc="The gradient accumulated by backward, a Tensor of this tensor's shape, or "
                        "None. After backward(create_graph=True) it carries the graph that "
                        "computed it and can be differentiated again.")

    def size(self, dim=None):
        """The shape as a tuple, or the length of dimension `dim` (negative counts from the
        end), as torch's `Tensor.size`; `numel()` counts the elements."""
        if dim is None:
            return self._data.shape
        return self._data.shape[operator.index(dim)]

    def dim(self) -> int:
        """The number of dimensions, as `ndim`."""
        return self._data.ndim

    def numpy(self) -> np.ndarray:
        return self._data

    def item(self):
        return self._data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data (and version counter), cut off from the graph."""
        t = Tensor._make(self._data, False)
        t._version_counter = self._version_counter
        return t

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self._set_requires_grad(requires_grad)
        return self

    def __array__(self, dtype=None, copy=None):
        recording = _thread_state.recording_backward_of
        if recording is not None and self._requires_grad:
            raise RuntimeError(
                f"op '{recording.name}' cannot be differentiated twice: its "
                f"backward turns a Tensor into a NumPy array, which would drop the second "
                f"derivative (write it with Tensor operations or Op.run)")
        if dtype is not None and dtype != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __len__(self):
        return len(self._data)

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    __hash__ = object.__hash__  # identity: `==` is elementwise, like NumPy

    def __repr__(self):
        grad_info = ""
        if self._ctx is not None:
            grad_info = f", grad_fn={self._ctx.name}"
        elif self._requires_grad:
            grad_info = ", requires_grad=True"
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self._data.dtype}{grad_info})"

    # ---- hooks ------------------------------------------------------------------------------
    def register_hook(self, hook) -> "RemovableHandle":
        """Call `hook(grad)` with this tensor's gradient (a Tensor) whenever one is computed;
        a hook that returns a value replaces the gradient. Returns a handle with `remove()`."""
        if not self._requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not "
                               "require grad")
        if self._ctx is None:
            if self._hooks is None:
                self._hooks = collections.OrderedDict()
            hooks = self._hooks
        else:
            if self._ctx.output_hooks is None:
                self._ctx.output_hooks = collections.OrderedDict()
            hooks = self._ctx.output_hooks
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle


class RemovableHandle:
    """Returned by `register_hook` and the module hook methods: `handle.remove()` unregisters
    the hook. Also a context manager, so a hook can live for the duration of a `with` block."""

    _ids = itertools.count()

    def __init__(self, hooks):
        # A weak reference: a handle kept around must not keep a freed graph's hooks alive.
        self._hooks = weakref.ref(hooks)
        self.id = next(RemovableHandle._ids)

    def remove(self):
        hooks = self._hooks()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()
        return False



# --------------------------------------------------------------------------------------------
# Wiring. These imports come after the class because the modules they load are built on
# `Tensor` (they import it from here); at this point it exists.
# --------------------------------------------------------------------------------------------

from tensorlite.autograd.grad_mode import (  # noqa: E402  (re-exported: older import paths)
    _thread_state, detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled,
    manual_seed, no_grad, rng,
)
from tensorlite.autograd import (  # noqa: E402,F401  (Function: the engine's op base)
    EngineFunction as Function, IndexedGrad, functional_grad as grad, grad as autograd_grad,
    to_dot, unbroadcast,
)
from tensorlite.ops import TENSOR_METHODS  # noqa: E402

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
