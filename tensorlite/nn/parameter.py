"""``Parameter``: a Tensor that is a learnable weight of a ``Module`` (``torch.nn.Parameter``)."""

import numpy as np

from tensorlite.tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A ``Tensor`` that is a learnable weight of a ``Module``.

    Always floating point, and requires grad unless ``requires_grad=False`` (a frozen weight,
    still a parameter of its module, as in PyTorch). Float input keeps its dtype unless
    ``dtype`` is given (like ``Tensor``); integer input becomes float32 (an integer weight could
    not be trained); no ``data`` is an empty float32 parameter. Layers create float32
    parameters by default. Assigning a ``Parameter`` to a module attribute registers it with
    the module.
    """

    def __init__(self, data=None, requires_grad=True, *, dtype=None):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data)
        if dtype is None and not np.issubdtype(array.dtype, np.floating):
            dtype = np.float32
        super().__init__(array, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

