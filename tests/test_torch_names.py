"""PyTorch's names and meanings on the public surface (API.md), compared with torch itself
where it is installed."""

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.nn.functional as F


def _torch():
    return pytest.importorskip("torch")


# ---- size() / dim() ------------------------------------------------------------------------

def test_size_is_torchs_method():
    torch = _torch()
    t = tl.zeros(2, 3, 4)
    reference = torch.zeros(2, 3, 4)
    assert t.size() == tuple(reference.size()) == (2, 3, 4)
    for dim in (0, 1, 2, -1, -3):
        assert t.size(dim) == reference.size(dim)
    assert t.dim() == reference.dim() == 3
    assert t.numel() == reference.numel() == 24
    with pytest.raises(IndexError):
        t.size(3)
