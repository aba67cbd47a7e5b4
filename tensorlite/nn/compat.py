"""Names that exist only so that programs written for PyTorch run unchanged.

tensorlite computes on the CPU, in float32 or float64. PyTorch programs still name devices
(``model.to("cpu")``, ``model.cpu()``, ``nn.Linear(..., device=device)``) and use a few
alternative spellings; this module accepts them, in one place, so that the rest of ``nn`` is
about what the library does:

* ``device=`` arguments and device positionals: "cpu" (or "cpu:0", or any object whose
  ``type`` is "cpu", such as a ``torch.device``) is accepted and changes nothing; any other
  device is a one-line ``RuntimeError``.
* ``Module.cpu()`` (returns the module), ``Module.cuda()`` (the ``RuntimeError`` above),
  ``Module.register_module`` (PyTorch's other name for ``add_module``), and the device part of
  ``Module.to(device, dtype)`` (see ``to_arguments``).
* ``import tensorlite.nn.functional as F``: the module ``tensorlite.functional`` under torch's
  path (registered by ``tensorlite/nn/__init__.py``).

Optimizers accept PyTorch's performance switches ``foreach=``, ``fused=`` and ``capturable=``
and ignore them; that is in ``tensorlite/optim/optimizer.py``, beside the options they sit with.
"""

import numpy as np

__all__ = ["TorchModuleMethods", "check_device", "float_dtype", "is_device", "layer_dtype",
           "to_arguments"]

# PyTorch's device types: a string starting with one of these is a device, not a dtype.
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "xla", "meta", "hip", "ipu", "hpu", "mtia",
                 "privateuseone", "vulkan", "mkldnn", "opengl", "opencl", "ideep", "ve", "fpga",
                 "maia", "lazy")


def _device_type(device):
    """'cpu' for "cpu", "cpu:0" or a device object of type cpu; None for what is no device."""
    kind = getattr(device, "type", None)
    if isinstance(kind, str):  # torch.device, tl.device
        return kind
    if isinstance(device, str):
        kind = device.split(":")[0]
        return kind if kind in _DEVICE_TYPES else None
    return None


def is_device(value):
    """Whether ``value`` names a device (of any type) rather than a dtype."""
    return _device_type(value) is not None


def check_device(op, device):
    """Accept None and the CPU; raise a one-line RuntimeError for any other device."""
    if device is None:
        return
    kind = _device_type(device)
    if kind != "cpu":
        raise RuntimeError(f"{op}: tensorlite computes on the CPU only, not on device {device!r}")


def float_dtype(op, dtype):
    """``dtype`` as a NumPy dtype, checked to be float32 or float64 (None means float32)."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: {dtype!r} is not a dtype (use e.g. tl.float32 or "
                        f"tl.float64)") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: modules hold float32 or float64 parameters, not {dtype}")
    return dtype


def layer_dtype(op, device, dtype):
    """A layer constructor's ``device=`` and ``dtype=`` (PyTorch's "factory" keywords): the
    device checked to be the CPU, the dtype returned as float32 (default) or float64."""
    check_device(op, device)
    return float_dtype(op, dtype)


def to_arguments(args, kwargs):
    """The dtype that ``Module.to(*args, **kwargs)`` asks for, or None (device only).

    PyTorch's forms: ``to(device=None, dtype=None, non_blocking=False)``, ``to(dtype)``,
    ``to(tensor)`` (that tensor's dtype) and ``to(memory_format=...)``; the device, if any, must
    be the CPU, and ``non_blocking`` / ``memory_format`` change nothing here."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "memory_format", "copy"}
    if unknown:
        raise TypeError(f"to() got unexpected keyword argument(s) {sorted(unknown)}")
    dtype = kwargs.get("dtype")
    check_device("to", kwargs.get("device"))
    for arg in args:
        if isinstance(arg, bool):  # non_blocking, given positionally
            continue
        if is_device(arg):
            check_device("to", arg)
            continue
        if not isinstance(arg, (type, np.dtype, str)) and hasattr(arg, "dtype"):
            arg = arg.dtype  # to(tensor): that tensor's dtype
        if dtype is not None:
            raise TypeError(f"to: two dtypes given ({dtype!r} and {arg!r})")
        dtype = arg
    return dtype


class TorchModuleMethods:
    """The ``Module`` methods that exist only for PyTorch programs (``Module`` inherits them)."""

    def cpu(self):
        """Return the module: its parameters already live in main memory."""
        return self

    def cuda(self, device=None):
        """Raise: tensorlite has no GPU backend."""
        raise RuntimeError("cuda: tensorlite computes on the CPU only; keep the model on the "
                           "CPU (drop .cuda(), or use .to('cpu'))")

    def register_module(self, name, module):
        """PyTorch's other name for ``add_module``."""
        return self.add_module(name, module)
