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

from tensorlite.ops.arguments import _check_device, _is_device, _to_dtype_argument

__all__ = ["TorchModuleMethods", "check_device", "float_dtype", "is_device", "layer_dtype",
           "to_arguments"]

# The device checks are the engine's (tensorlite/ops/arguments.py), so that a module and a tensor
# accept and refuse the same devices with the same message.
is_device = _is_device
check_device = _check_device


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
    return _to_dtype_argument("to", args, kwargs.get("dtype"), kwargs.get("device"))


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
