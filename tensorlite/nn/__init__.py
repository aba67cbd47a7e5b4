"""Neural-network building blocks, as ``torch.nn``: ``Parameter``, ``Module``, layers, losses and
containers.

The design follows ``torch.nn``:

* A ``Parameter`` is a float ``Tensor`` that always requires a gradient.
* A ``Module`` notices every ``Parameter`` and every sub-``Module`` assigned to one of its
  attributes and records it, in assignment order; ``parameters()``, ``state_dict()``,
  ``train()`` and friends walk the recorded tree.
* Layers (``Linear``, ``Embedding``, ``LayerNorm``, ...) are small modules whose ``forward`` calls
  one function from ``tensorlite.functional``; the math lives there, the state lives here. The
  same goes for the activation modules (``ReLU``, ``Softmax``, ...) and the loss modules
  (``MSELoss``, ``CrossEntropyLoss``, ...), whose functions are in ``tensorlite.losses``.

Where each family lives (one module per family, named as in ``torch.nn.modules``):

============================  =================================================================
``nn/parameter.py``           ``Parameter``
``nn/module.py``              ``Module``: bookkeeping, hooks, walking the tree, ``state_dict``
``nn/backward_hook.py``       how a module's backward hooks see its gradients
``nn/init.py``                weight initialisation, as ``torch.nn.init``
``nn/utils.py``               gradient clipping and parameter vectors, as ``torch.nn.utils``
``nn/compat.py``              what exists only for PyTorch programs (devices, ``cpu()``, ...)
``nn/linear.py``              ``Identity``, ``Linear``
``nn/embedding.py``           ``Embedding``
``nn/normalization.py``       ``LayerNorm``
``nn/dropout.py``             ``Dropout``, ``Dropout2d``
``nn/conv.py``                ``Conv1d``, ``Conv2d``, ``ConvTranspose2d``
``nn/pooling.py``             ``MaxPool1d``, ``MaxPool2d``, ``AvgPool1d``, ``AvgPool2d``,
                              ``AdaptiveAvgPool2d``
``nn/batchnorm.py``           ``BatchNorm1d``, ``BatchNorm2d``
``nn/rnn.py``                 ``RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell``, ``GRUCell``
``nn/activation.py``          ``GELU``, ``ReLU``, ``Tanh``, ``Sigmoid``, ``SiLU``, ``Softmax``,
                              ``LogSoftmax``
``nn/flatten.py``             ``Flatten``
``nn/loss.py``                ``MSELoss``, ``L1Loss``, ``CrossEntropyLoss``, ``BCEWithLogitsLoss``,
                              ``NLLLoss``
``nn/container.py``           ``ModuleList``, ``ModuleDict``, ``Sequential``
``nn/parallel.py``            ``DistributedDataParallel`` (imported on demand: it needs MPI)
============================  =================================================================

``tensorlite.nn.functional`` is ``tensorlite.functional`` itself, under PyTorch's path, so
``import tensorlite.nn.functional as F`` works as in a PyTorch program.

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

import sys

from tensorlite import functional
from tensorlite.tensor import RemovableHandle
from tensorlite.nn import init, utils
from tensorlite.nn.parameter import Parameter
from tensorlite.nn.module import IncompatibleKeys, Module
from tensorlite.nn.linear import Identity, Linear
from tensorlite.nn.embedding import Embedding
from tensorlite.nn.normalization import LayerNorm
from tensorlite.nn.dropout import Dropout, Dropout2d
from tensorlite.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from tensorlite.nn.pooling import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from tensorlite.nn.batchnorm import BatchNorm1d, BatchNorm2d
from tensorlite.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from tensorlite.nn.activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from tensorlite.nn.flatten import Flatten
from tensorlite.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from tensorlite.nn.container import ModuleDict, ModuleList, Sequential

__all__ = [
    "Parameter", "Module", "RemovableHandle", "Linear", "Embedding", "LayerNorm", "Dropout",
    "GELU", "ReLU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax", "Identity", "Flatten",
    "MSELoss", "L1Loss", "CrossEntropyLoss", "BCEWithLogitsLoss", "NLLLoss",
    "ModuleList", "ModuleDict", "Sequential", "IncompatibleKeys", "functional", "init", "utils",
    "Dropout2d", "Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d", "AvgPool1d",
    "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
]

# One module under two names: registering it as tensorlite.nn.functional lets
# `import tensorlite.nn.functional as F` and `from tensorlite.nn.functional import relu` find it.
sys.modules[__name__ + ".functional"] = functional
