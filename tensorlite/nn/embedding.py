"""``Embedding``: a lookup table of one learnable vector per token, as ``torch.nn.Embedding``
(which PyTorch keeps in ``torch/nn/modules/sparse.py``)."""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` (num_embeddings, embedding_dim) is the vector of
    token ``i``. Initialised N(0, 1) like PyTorch (``reset_parameters``). ``dtype`` defaults
    to float32; ``device`` may only be the CPU."""

    def __init__(self, num_embeddings, embedding_dim, *, device=None, dtype=None):
        super().__init__()
        dtype = compat.layer_dtype("Embedding", device, dtype)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh initial values (from tensorlite's generator, see ``tl.manual_seed``)."""
        init.normal_(self.weight)

    def forward(self, idx):
        return F.embedding(idx, self.weight)  # idx (...) ints -> (..., embedding_dim)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
