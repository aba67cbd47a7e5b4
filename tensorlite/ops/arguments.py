"""Argument handling shared by the ops: PyTorch's and NumPy's keyword spellings (`dim`/`axis`,
`keepdim`/`keepdims`), axis normalisation, dtype and broadcast checks."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite.tensor import Tensor


_UNSET = object()  # "argument not passed", so that passing both spellings can be told apart


def _broadcast_check(op_name, a, b):
    """A clear error naming the op and both shapes, instead of NumPy's generic one."""
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op_name}: shapes {a.shape} and {b.shape} cannot be broadcast "
                         f"together") from None


def _normalize_axes(axis, ndim, op=None):
    """axis (None, int, or tuple; negatives allowed) -> sorted tuple of non-negative axes.
    `op` names the operation in the error message."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    who = f"{op}: " if op else ""
    if ndim == 0:
        # Like PyTorch, a scalar accepts axis 0 or -1, and reducing it changes nothing.
        if any(a not in (0, -1) for a in axes):
            raise ValueError(f"{who}axis {axes} is out of bounds for a 0-dimensional tensor")
        return ()
    normalized = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{who}axis {a} is out of bounds for a tensor with {ndim} "
                             f"dimensions")
        normalized.append(int(a) % ndim)
    return tuple(sorted(normalized))


def _kept_shape(shape, axes):
    """`shape` with the reduced axes kept as size 1."""
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


def either_keyword(op, torch_name, torch_value, numpy_name, numpy_value, default):
    """The value of an argument that has a PyTorch spelling (dim, keepdim) and a NumPy one
    (axis, keepdims): either works; both at once is a TypeError naming the op."""
    if numpy_value is _UNSET:
        return default if torch_value is _UNSET else torch_value
    if torch_value is not _UNSET:
        raise TypeError(f"{op}: got both {torch_name}= and {numpy_name}= (two spellings of the "
                        f"same argument); pass one")
    return numpy_value


def _dim_keepdim(op, dim, keepdim, axis, keepdims, default_dim=None):
    return (either_keyword(op, "dim", dim, "axis", axis, default_dim),
            bool(either_keyword(op, "keepdim", keepdim, "keepdims", keepdims, False)))


def _one_axis(op, dim, ndim):
    """A single dim (negatives allowed) -> non-negative axis, or an error naming the op."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    size = builtins.max(ndim, 1)  # a 0-d tensor accepts dim 0 or -1, as in PyTorch
    if not -size <= dim < size:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected a dim in [{-size}, {size - 1}])")
    return int(dim) % size


def _drop_axis(shape, axis):
    return shape[:axis] + shape[axis + 1:]


def _along_axis_index(index, axis):
    """A NumPy index that picks, at each position of `index`, element index[..] along `axis`
    (PyTorch's gather): `index` itself on `axis`, the position's own coordinate elsewhere."""
    ndim = index.ndim
    parts = [np.arange(n).reshape((1,) * d + (n,) + (1,) * (ndim - d - 1))
             for d, n in enumerate(index.shape)]
    parts[axis] = index
    return tuple(parts)


def _sizes(op, sizes):
    """`f(2, 3)` or `f((2, 3))` -> (2, 3)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not all(isinstance(n, (int, np.integer)) for n in sizes):
        raise TypeError(f"{op}: sizes must be ints, got {sizes!r}")
    return tuple(int(n) for n in sizes)


def _integer_index(op, index):
    index = index.data if isinstance(index, Tensor) else np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must hold integers, got dtype {index.dtype}")
    return index


def _dtype(op, dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: {dtype!r} is not a dtype (use e.g. tl.float32, 'float64', "
                        f"tl.int64)") from None
    if dtype.kind == "f" and dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: tensorlite computes in float32 or float64, not {dtype}")
    return dtype


# ---- devices ------------------------------------------------------------------------------------

class device:  # noqa: N801 (PyTorch's name)
    """`tl.device("cpu")`, as `torch.device`: tensorlite computes on the CPU only, so that is
    the one device there is; naming any other raises a one-line RuntimeError."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002 (torch's argument name)
        if isinstance(type, device):
            type, index = type.type, type.index
        elif not isinstance(type, str):
            kind = getattr(type, "type", None)  # a torch.device
            if not isinstance(kind, str):
                raise TypeError(f"device: expected a string like 'cpu', got {type!r}")
            type, index = kind, getattr(type, "index", None)
        if ":" in type:
            type, _, number = type.partition(":")
            index = int(number)
        if type != "cpu":
            raise RuntimeError(f"tensorlite computes on the CPU only, not on device "
                               f"{type + ('' if index is None else f':{index}')!r}")
        self.type, self.index = type, index

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except (RuntimeError, ValueError):
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type

    def __hash__(self):
        return hash(self.type)


CPU = device("cpu")


def _check_float_dtypes(op, input, named=()):
    """As torch: TypeError unless `input` is floating and each of `named` ((name, value) pairs:
    Tensors or arrays; None and numbers are skipped) has input's dtype. Without it a kernel
    would compute on integers, or a float64 weight would silently turn a float32 result
    float64. The message names the op and each dtype."""
    dtype = np.dtype(input.dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {dtype}")
    mixed = [f"{name} {np.dtype(value.dtype)}" for name, value in named
             if isinstance(value, (Tensor, np.ndarray)) and np.dtype(value.dtype) != dtype]
    if mixed:
        names = ["input"] + [name for name, _ in named]
        raise TypeError(f"{op}: {', '.join(names[:-1])} and {names[-1]} must share one floating "
                        f"dtype, got input {dtype}, {', '.join(mixed)}")


def _check_device(op, where):
    """A constructor's or `to`'s `device=`: None or the CPU pass; any other device raises a
    one-line RuntimeError naming the op."""
    if where is None or where is CPU:
        return
    try:
        device(where)
    except RuntimeError:
        raise RuntimeError(f"{op}: tensorlite computes on the CPU only, not on device "
                           f"{str(where)!r}") from None


def set_default_device(where):
    """As `torch.set_default_device`: only the CPU (or None) is accepted, as it is already
    where every tensor lives."""
    _check_device("set_default_device", where)


def get_default_device():
    """The device new tensors are made on: always the CPU."""
    return CPU


# PyTorch's device types: a string starting with one of these is a device, not a dtype.
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "xla", "meta", "hip", "ipu", "hpu", "mtia",
                 "privateuseone", "vulkan", "mkldnn", "opengl", "opencl", "ideep", "ve", "fpga",
                 "maia", "lazy")


def _is_device(value):
    """Whether a positional argument of `to` names a device rather than a dtype."""
    if isinstance(value, device) or isinstance(getattr(value, "type", None), str):
        return True
    if isinstance(value, str):
        return value.partition(":")[0] in _DEVICE_TYPES
    return False


def _to_dtype_argument(op, args, dtype=None, device=None):
    """The dtype that `to(*args, dtype=, device=)` asks for, or None (a device only), as
    torch reads them: `to(dtype)`, `to(device)`, `to(device, dtype)`, `to(other)` (other's
    dtype), `non_blocking` given positionally. Every device named must be the CPU. Shared by
    `Tensor.to` and `Module.to`."""
    _check_device(op, device)
    for arg in args:
        if isinstance(arg, bool):  # non_blocking, given positionally
            continue
        if _is_device(arg):
            _check_device(op, arg)
            continue
        if not isinstance(arg, (type, np.dtype, str)) and hasattr(arg, "dtype"):
            arg = arg.dtype  # to(other): that tensor's dtype
        if dtype is not None:
            raise TypeError(f"{op}: two dtypes given ({dtype!r} and {arg!r})")
        dtype = arg
    return dtype
