"""``Embedding``: a lookup table of one learnable vector per token, as ``torch.nn.Embedding``
(which PyTorch keeps in ``torch/nn/modules/sparse.py``)."""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter
from tensorlite.ops.nn import _padding_index

__all__ = ["Embedding"]


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` (num_embeddings, embedding_dim) is the vector of
    token ``i``. Initialised N(0, 1) like PyTorch (``reset_parameters``). ``dtype`` defaults
    to float32; ``device`` may only be the CPU. With ``padding_idx``, that row starts at zero
    and receives no gradient (a padding token), as in PyTorch."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, device=None,
                 dtype=None):
        super().__init__()
        dtype = compat.layer_dtype("Embedding", device, dtype)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _padding_index(padding_idx, num_embeddings, "Embedding")
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh initial values (from tensorlite's generator, see ``tl.manual_seed``)."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, idx):
        # idx (...) ints -> (..., embedding_dim)
        return F.embedding(idx, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"
