"""Embedding lookup backward: a scatter-add of rows into the table."""

import numpy as np


# ----------------------------------------------------------------------------
# embedding lookup backward

def embedding_backward(indices, grad, num_embeddings):
    """Scatter-add rows of grad into a (num_embeddings, D) table.

    indices: integer array of any shape; grad: indices.shape + (D,). Row
    grad[..., :] is added to grad_weight[indices[...]]; repeated indices
    accumulate (np.add.at is unbuffered, unlike fancy-index +=).
    """
    d = grad.shape[-1]
    grad_weight = np.zeros((num_embeddings, d), dtype=grad.dtype)
    np.add.at(grad_weight, indices.reshape(-1), grad.reshape(-1, d))
    return grad_weight
