"""Embedding backward as a plain scatter-add loop.

The Numba twin of ``tensorlite/kernels/numpy/embedding.py`` (same functions, same
results); see ``tensorlite.kernels.numba`` for the techniques and the
reproducibility rules.
"""

import numpy as np
from numba import njit

from .. import numpy as reference
from ._common import _OPTS, _flat, _is_float


# ----------------------------------------------------------------------------
# embedding backward
# reference: reference.embedding_backward
#
# np.add.at is a slow generic scatter; here it is a plain loop adding each grad row to
# its table row (vectorised along D). It stays serial: rows with the same index would
# race, and the whole job is a few microseconds.

@njit(**_OPTS)
def _embedding_backward(indices, grad, out):
    n_rows, dim = grad.shape
    n_embeddings = out.shape[0]
    for i in range(n_rows):
        index = indices[i]
        if index < 0:
            index += n_embeddings  # negative indices count from the end, as in NumPy
        target = out[index]
        source = grad[i]
        for j in range(dim):
            target[j] += source[j]


def embedding_backward(indices, grad, num_embeddings):
    """Scatter-add of grad rows into a (num_embeddings, D) table -- see
    reference.embedding_backward."""
    if not _is_float(grad) or grad.size == 0:
        return reference.embedding_backward(indices, grad, num_embeddings)
    flat_indices = _flat(indices)
    if flat_indices.dtype.kind not in "iu":
        raise IndexError("embedding indices must be integers")
    if flat_indices.size and (flat_indices.max() >= num_embeddings
                              or flat_indices.min() < -num_embeddings):
        raise IndexError(f"embedding index out of range for {num_embeddings} rows")
    dim = grad.shape[-1]
    out = np.zeros((num_embeddings, dim), dtype=grad.dtype)
    _embedding_backward(flat_indices, np.ascontiguousarray(grad).reshape(-1, dim), out)
    return out
