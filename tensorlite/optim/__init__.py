"""Optimizers, gradient clipping and learning-rate schedules, as `torch.optim`.

The update rules follow PyTorch exactly (torch.optim.SGD, Adam, AdamW, RMSprop,
torch.nn.utils.clip_grad_norm_), so results can be compared number for number. Every
optimizer works on parameters through `p.data` (updated in place) and `p.grad`.

Where each part lives:

    optim/optimizer.py     Optimizer: parameter groups, state_dict / load_state_dict (its
                           docstring describes both layouts)
    optim/sgd.py           SGD (momentum, dampening, Nesterov, weight decay)
    optim/adam.py          Adam and AdamW, stepping one flat buffer per group and dtype
    optim/rmsprop.py       RMSprop
    optim/clip_grad.py     clip_grad_norm_
    optim/lr_scheduler.py  LambdaLR, StepLR, CosineAnnealingLR, LinearLR (torch's schedulers),
                           and nanoGPT's warmup-then-cosine get_lr / CosineWarmupSchedule
"""

from tensorlite.optim.optimizer import Optimizer
from tensorlite.optim.sgd import SGD
from tensorlite.optim.adam import Adam, AdamW
from tensorlite.optim.rmsprop import RMSprop
from tensorlite.optim.clip_grad import clip_grad_norm_
from tensorlite.optim import lr_scheduler
from tensorlite.optim.lr_scheduler import CosineWarmupSchedule, get_lr

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm_", "lr_scheduler",
           "get_lr", "CosineWarmupSchedule"]
