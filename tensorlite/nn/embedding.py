"""``Embedding``: a lookup table of one learnable vector per token, as ``torch.nn.Embedding``
(which PyTorch keeps in ``torch/nn/modules/sparse.py``)."""

import numpy as np

from tensorlite import functional as F
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter
from tensorlite.tensor import rng as _rng

__all__ = ["Embedding"]


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
