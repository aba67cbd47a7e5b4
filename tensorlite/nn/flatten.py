"""``Flatten``, as ``torch.nn.Flatten``."""

import numpy as np

from tensorlite.nn.module import Module

__all__ = ["Flatten"]



class Flatten(Module):
    """Merge the axes ``start_dim`` to ``end_dim`` into one: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        shape = tuple(x.shape)
        ndim = max(len(shape), 1)
        start, end = self.start_dim, self.end_dim
        if not (-ndim <= start < ndim and -ndim <= end < ndim):
            raise IndexError(f"Flatten: start_dim={start} or end_dim={end} is out of range for "
                             f"an input of shape {shape}")
        start, end = start % ndim, end % ndim
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for an input of shape {shape}")
        if len(shape) == 0:
            return x.reshape(1)
        merged = int(np.prod(shape[start:end + 1], dtype=np.int64))
        return x.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
