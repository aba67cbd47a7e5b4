"""`tl.autograd`: PyTorch's `torch.autograd.grad`, for gradients as Tensors that can be
differentiated again (see `tensorlite.tensor` for how the engine records a backward pass)."""

from tensorlite.tensor import autograd_grad as grad

__all__ = ["grad"]
