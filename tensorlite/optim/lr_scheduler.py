"""Learning-rate schedulers with the names and numbers of `torch.optim.lr_scheduler`.

A scheduler sets `group["lr"]` of every parameter group of an optimizer. As in PyTorch,
building it applies the schedule's value for epoch 0, and `scheduler.step()` (once per epoch or
per iteration, after `optimizer.step()`) moves to the next one:

    optimizer = tl.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = tl.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)            # optimizer.step() inside
        scheduler.step()

Each `get_lr` uses PyTorch's recursive ("chainable") form, which updates the CURRENT lr of each
group, so results agree with torch's to the last bit and two schedulers can be stacked on one
optimizer. `_closed_form_lr` gives the same values from `base_lrs` directly; it is used when
`step(epoch)` jumps to an explicit epoch.

`state_dict()` holds plain numbers and lists (saveable with `tl.save`); a LambdaLR's functions
are code and are not saved, as in PyTorch: rebuild the scheduler with them, then load.

Also here: nanoGPT's schedule, linear warmup then cosine decay, as a function of the iteration
(`get_lr`) and bundled with its settings (`CosineWarmupSchedule`), which the GPT trainer uses.
"""

import math
import numbers

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "CosineAnnealingLR", "LinearLR", "get_lr",
           "CosineWarmupSchedule"]


class LRScheduler:
    """Base class: bookkeeping of epochs, base learning rates and state_dict."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__} needs an optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when "
                                   f"resuming a {type(self).__name__} (last_epoch={last_epoch})")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()  # the schedule's value for the first epoch

    def get_lr(self):
        """The learning rate of every group for `self.last_epoch` (implemented by subclasses)."""
        raise NotImplementedError

    def _closed_form_lr(self):
        return self.get_lr()

    def get_last_lr(self):
        """The learning rates the last `step()` set, one per parameter group."""
        return list(self._last_lr)

    def step(self, epoch=None):
        """Advance one epoch (or jump to `epoch`) and set each group's lr."""
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """Everything but the optimizer (and functions), as plain values."""
        return {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in self.__dict__.items()
                if key not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict):
        """Restore what `state_dict` returned (the optimizer itself is not touched)."""
        unknown = set(state_dict) - set(self.state_dict())
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected keys "
                             f"{sorted(unknown)} (is this a {type(self).__name__} state_dict?)")
        self.__dict__.update(state_dict)

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch); `lr_lambda` is one function or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        groups = optimizer.param_groups
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(groups):
                raise ValueError(f"LambdaLR: expected {len(groups)} lr_lambdas (one per parameter "
                                 f"group), got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(groups)
        for f in self.lr_lambdas:
            if not callable(f):
                raise TypeError(f"LambdaLR: lr_lambda must be callable, got {type(f).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * f(self.last_epoch) for f, base_lr in zip(self.lr_lambdas, self.base_lrs)]


def _check_positive_int(scheduler, name, value):
    if not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{scheduler}: {name} must be a positive integer, got {value!r}")


class StepLR(LRScheduler):
    """Multiply the lr by `gamma` every `step_size` epochs: base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_positive_int("StepLR", "step_size", step_size)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]

    def _closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine from base_lr down to `eta_min` over `T_max` epochs (and back up, periodically):
    eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups, epoch, T_max, eta_min = self.optimizer.param_groups, self.last_epoch, self.T_max, self.eta_min
        if epoch == 0:
            return [group["lr"] for group in groups]
        if self._step_count == 1 and epoch > 0:  # resuming at a later epoch
            return self._closed_form_lr()
        if (epoch - 1 - T_max) % (2 * T_max) == 0:  # the bottom of the cosine: turn around
            return [group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        # ratio of consecutive cosine factors, applied to the current lr
        ratio = (1 + math.cos(math.pi * epoch / T_max)) / (1 + math.cos(math.pi * (epoch - 1) / T_max))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]

    def _closed_form_lr(self):
        factor = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * factor for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from `start_factor` to `end_factor` over
    `total_iters` epochs, then keep base_lr * end_factor."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor}")
        _check_positive_int("LinearLR", "total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in lrs]
        if self.last_epoch > self.total_iters:
            return lrs
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in lrs]

    def _closed_form_lr(self):
        progress = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base_lr * factor for base_lr in self.base_lrs]


# ----------------------------------------------------------------------------
# nanoGPT's schedule: warmup, then cosine decay


def get_lr(it, *, max_lr, min_lr, warmup_iters, lr_decay_iters):
    """Learning rate at iteration `it`: linear warmup, then cosine decay to min_lr.

    As in nanoGPT:
      it <  warmup_iters:   max_lr * (it + 1) / (warmup_iters + 1)
      it >  lr_decay_iters: min_lr
      otherwise:            cosine from max_lr (at warmup_iters) down to min_lr
                            (at lr_decay_iters)
    """
    if lr_decay_iters < warmup_iters:
        raise ValueError(f"lr_decay_iters ({lr_decay_iters}) must be >= warmup_iters ({warmup_iters})")
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_span = lr_decay_iters - warmup_iters
    decay_ratio = (it - warmup_iters) / decay_span if decay_span > 0 else 0.0
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)


class CosineWarmupSchedule:
    """`get_lr` with its settings bundled; `apply(optimizer, it)` sets every group's lr.

        schedule = CosineWarmupSchedule(max_lr=6e-4, min_lr=6e-5,
                                        warmup_iters=100, lr_decay_iters=5000)
        for it in range(max_iters):
            lr = schedule.apply(optimizer, it)
            ...
    """

    def __init__(self, *, max_lr, min_lr, warmup_iters, lr_decay_iters):
        if lr_decay_iters < warmup_iters:
            raise ValueError(f"lr_decay_iters ({lr_decay_iters}) must be >= warmup_iters ({warmup_iters})")
        self.max_lr, self.min_lr = max_lr, min_lr
        self.warmup_iters, self.lr_decay_iters = warmup_iters, lr_decay_iters

    def __call__(self, it):
        return get_lr(it, max_lr=self.max_lr, min_lr=self.min_lr,
                      warmup_iters=self.warmup_iters, lr_decay_iters=self.lr_decay_iters)

    def apply(self, optimizer, it):
        """Set lr of every parameter group of `optimizer` for iteration `it`; return it."""
        lr = self(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __repr__(self):
        return (f"CosineWarmupSchedule(max_lr={self.max_lr}, min_lr={self.min_lr}, "
                f"warmup_iters={self.warmup_iters}, lr_decay_iters={self.lr_decay_iters})")
