"""Loss functions with PyTorch's names, arguments and `reduction=` semantics.

Every loss here is composed from existing differentiable ops (arithmetic, `abs`, `log1p`, `sigmoid`,
`log_softmax`, indexing, `masked_fill`, reductions), so its gradient is whatever autograd derives
from those ops: no new backward to trust. The one exception is `cross_entropy` in its common
case (index targets, `reduction="mean"`, no weight, no label smoothing), which takes the fused
single-node kernel of `tensorlite.functional` because a GPT's training step spends real time
there.

`reduction` is one of
    "mean"  the average over elements (over non-ignored, weighted targets for nll/cross-entropy)
    "sum"   the sum over elements
    "none"  the unreduced per-element (or per-sample) losses
"""

from __future__ import annotations

import warnings

import numpy as np

# The ops these losses build on (tensorlite.functional re-exports both them and the losses).
from tensorlite.ops import nn as F
from tensorlite.tensor import Tensor

__all__ = [
    "mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy", "silu",
]

REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Helpers shared by the losses
# --------------------------------------------------------------------------------------------

def _check_reduction(op, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_tensor(value, like):
    """Tensors that require grad pass through; anything else becomes a constant of `like`'s
    dtype, so a float64 target or weight does not turn a float32 loss into float64."""
    if isinstance(value, Tensor):
        if value.requires_grad or value.dtype == like.dtype:
            return value
        value = value.data
    return Tensor(np.asarray(value, dtype=like.dtype))


def _as_array(value):
    return np.asarray(value.data if isinstance(value, Tensor) else value)


def _elementwise_target(op, input, target):
    """The target as a Tensor; shapes that broadcast to something else warn, as in PyTorch."""
    target = _as_tensor(target, input)
    if target.shape != input.shape:
        try:
            broadcast = np.broadcast_shapes(input.shape, target.shape)
        except ValueError:
            raise ValueError(f"{op}: input of shape {tuple(input.shape)} and target of shape "
                             f"{tuple(target.shape)} cannot be broadcast together") from None
        warnings.warn(f"{op}: target shape {tuple(target.shape)} differs from input shape "
                      f"{tuple(input.shape)}; they broadcast to {broadcast}, which is likely "
                      f"not what you want", UserWarning, stacklevel=3)
    return target


# --------------------------------------------------------------------------------------------
# Regression losses and an activation
# --------------------------------------------------------------------------------------------

def mse_loss(input, target, reduction="mean") -> Tensor:
    """(input - target)^2, reduced. Like `torch.nn.functional.mse_loss`."""
    _check_reduction("mse_loss", reduction)
    diff = input - _elementwise_target("mse_loss", input, target)
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean") -> Tensor:
    """|input - target|, reduced (gradient 0 where they are equal, as torch's)."""
    _check_reduction("l1_loss", reduction)
    return _reduce((input - _elementwise_target("l1_loss", input, target)).abs(), reduction)


def silu(x) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return x * x.sigmoid()


def _softplus_of_negative(x):
    """log(1 + exp(-x)) for any x without overflow.

    The textbook stable form max(-x, 0) + log(1 + exp(-|x|)) has a kink at 0 in each term, and
    relu's zero subgradient there would give the wrong slope at exactly x = 0 (all-zero logits
    of a fresh logistic regression). Writing max(-x, 0) = (|x| - x) / 2 gathers the kinks into
    g(|x|) with g(a) = a/2 + log(1 + exp(-a)), whose slope at a = 0 is exactly 0, so the result
    is right whatever subgradient |x| takes at 0: d/dx = -1/2 + 0 = -sigmoid(0)."""
    magnitude = x.abs()
    return 0.5 * (magnitude - x) + (-magnitude).exp().log1p()


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None) -> Tensor:
    """Binary cross-entropy of sigmoid(input) against target probabilities, computed from the
    logits without overflow:

        loss = (1 - y) * x + (1 + (pos_weight - 1) * y) * log(1 + exp(-x))

    which is -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] when pos_weight is 1.
    `weight` rescales each element (broadcast against input); `pos_weight` weighs the positive
    examples of each class (broadcast against the last axis), as in PyTorch."""
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    target = _as_tensor(target, input)
    if target.shape != input.shape:
        raise ValueError(f"{op}: target shape {tuple(target.shape)} must equal input shape "
                         f"{tuple(input.shape)}")
    softplus_neg = _softplus_of_negative(input)
    if pos_weight is None:
        loss = (1.0 - target) * input + softplus_neg
    else:
        pos_weight = _as_tensor(pos_weight, input)
        loss = (1.0 - target) * input + (1.0 + (pos_weight - 1.0) * target) * softplus_neg
    if weight is not None:
        loss = loss * _as_tensor(weight, input)
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# Classification: nll_loss and cross_entropy
# --------------------------------------------------------------------------------------------

def _class_rows(op, input, target):
    """Lay out a classification problem as (M, C) rows of class scores and (M,) targets.

    Accepted, as in PyTorch: input (C,) with a scalar target; (N, C) with (N,); and
    (N, C, d1, ..., dk) with (N, d1, ..., dk) (class axis 1). tensorlite also accepts class
    scores on the LAST axis, (..., C) with targets (...), e.g. a GPT's (B, T, vocab) logits;
    where both readings fit, PyTorch's wins. Returns (rows, targets, shape of 'none' output)."""
    target = _as_array(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: class-index targets must be integers, got dtype {target.dtype} "
                        f"(class-probability targets must have the input's shape "
                        f"{tuple(input.shape)})")
    shape = tuple(input.shape)
    if len(shape) == 0:
        raise ValueError(f"{op}: input must have a class axis, got a 0-d tensor")
    num_classes = shape[1] if len(shape) >= 2 else shape[0]
    torch_layout = shape[:1] + shape[2:] if len(shape) >= 2 else ()
    if target.shape == torch_layout:
        if len(shape) == 2:
            rows = input
        elif len(shape) == 1:
            rows = input.reshape(1, num_classes)
        else:  # (N, C, d1, ..., dk) -> (N, d1, ..., dk, C) -> (M, C)
            order = (0,) + tuple(range(2, len(shape))) + (1,)
            rows = input.permute(order).reshape(-1, num_classes)
    elif len(shape) >= 3 and target.shape == shape[:-1]:
        num_classes = shape[-1]
        rows = input.reshape(-1, num_classes)
    else:
        raise ValueError(f"{op}: input of shape {shape} needs class-index targets of shape "
                         f"{torch_layout} (class axis 1"
                         + (f") or {shape[:-1]} (class axis last)" if len(shape) >= 3 else ")")
                         + f", got {target.shape}")
    return rows, target.reshape(-1).astype(np.int64, copy=False), target.shape


def _class_weight(op, weight, num_classes, dtype):
    if weight is None:
        return None
    weight = np.asarray(_as_array(weight), dtype=dtype)
    if weight.shape != (num_classes,):
        raise ValueError(f"{op}: weight must have shape ({num_classes},) (one per class), "
                         f"got {weight.shape}")
    return weight


def _check_target_range(op, targets, num_classes, ignore_index):
    valid = targets != ignore_index
    bad = valid & ((targets < 0) | (targets >= num_classes))
    if bad.any():
        raise IndexError(f"{op}: targets must lie in [0, {num_classes}) or equal ignore_index="
                         f"{ignore_index}, got {targets[bad][0]}")
    return valid


def _mean_over(total, count):
    """total / count; 0 / 0 is nan (every target ignored), as in PyTorch, without a warning."""
    if count == 0:
        return total * float("nan")
    return total * (1.0 / count)


def _nll_rows(log_probs, targets, valid, weight, reduction, out_shape):
    """The nll loss of (M, C) log-probability rows: -weight[t] * log_probs[row, t]."""
    rows = np.arange(len(targets))
    safe_targets = np.where(valid, targets, 0)  # ignored rows pick class 0, then are zeroed
    # masked_fill, not a multiply by 0: a picked -inf (a masked class) times 0 would be nan.
    picked = log_probs[rows, safe_targets].masked_fill(~valid, 0.0)  # (M,)
    if weight is None:
        coefficient, total_weight = None, float(valid.sum())
    else:
        coefficient = np.where(valid, weight[safe_targets], 0).astype(log_probs.dtype)
        total_weight = float(coefficient.sum())
    losses = -picked if coefficient is None else -(picked * coefficient)
    if reduction == "none":
        return losses.reshape(out_shape)
    if reduction == "sum":
        return losses.sum()
    return _mean_over(losses.sum(), total_weight)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean") -> Tensor:
    """Negative log-likelihood of class-index targets given log-probabilities `input`
    ((N, C), (C,), or (N, C, d1, ...)). With reduction="mean" the sum is divided by the total
    weight of the non-ignored targets (their count when `weight` is None)."""
    _check_reduction("nll_loss", reduction)
    rows, targets, out_shape = _class_rows("nll_loss", input, target)
    weight = _class_weight("nll_loss", weight, rows.shape[1], rows.dtype)
    valid = _check_target_range("nll_loss", targets, rows.shape[1], ignore_index)
    return _nll_rows(rows, targets, valid, weight, reduction, out_shape)


def _soft_target_cross_entropy(input, target, weight, reduction, label_smoothing):
    """Cross-entropy against class probabilities of the input's shape (class axis 1)."""
    class_axis = 1 if input.ndim >= 2 else 0
    num_classes = input.shape[class_axis]
    target = _as_tensor(target, input)
    if label_smoothing > 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_probs = F.log_softmax(input, axis=class_axis)
    per_class = log_probs * target
    if weight is not None:
        per_class = per_class * weight.reshape((num_classes,) + (1,) * (input.ndim - class_axis - 1))
    losses = -per_class.sum(axis=class_axis)  # (N, d1, ...)
    if reduction == "mean":  # over samples (and positions), not over weights
        return losses.sum() * (1.0 / max(input.numel() // num_classes, 1))
    return _reduce(losses, reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0) -> Tensor:
    """Cross-entropy between logits and targets, as `torch.nn.functional.cross_entropy`.

    input: logits (N, C), (C,) or (N, C, d1, ...); or (..., C) with targets (...).
    target: class indices (integers; entries equal to `ignore_index` are left out), or class
        probabilities of the input's shape (floats).
    weight: optional per-class weights (C,).
    label_smoothing: eps in [0, 1]: the target becomes (1 - eps) * onehot + eps / C, that is
        loss = (1 - eps) * nll + eps * mean over classes of -weight[c] * log_softmax[c].
    With index targets and reduction="mean" the result is divided by the total weight of the
    non-ignored targets; it is nan when every target is ignored, as in PyTorch.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    target_array = _as_array(target)
    if target_array.dtype.kind == "f":
        if target_array.shape != tuple(input.shape):
            raise ValueError(f"{op}: class-probability targets must have the input's shape "
                             f"{tuple(input.shape)}, got {target_array.shape}")
        class_axis = 1 if input.ndim >= 2 else 0
        weight = _class_weight(op, weight, input.shape[class_axis], input.dtype)
        return _soft_target_cross_entropy(input, target, weight, reduction, label_smoothing)

    rows, targets, out_shape = _class_rows(op, input, target_array)
    num_classes = rows.shape[1]
    weight = _class_weight(op, weight, num_classes, rows.dtype)
    valid = _check_target_range(op, targets, num_classes, ignore_index)

    if reduction == "mean" and label_smoothing == 0 and weight is None:
        # The common case, as one fused node: forward and backward in one pass over the rows.
        return F.CrossEntropy.apply(rows, targets=targets, ignore_index=ignore_index)

    log_probs = F.log_softmax(rows, axis=-1)  # (M, C)
    nll = _nll_rows(log_probs, targets, valid, weight, reduction, out_shape)
    if label_smoothing == 0:
        return nll
    # eps * (mean over classes of -weight[c] * log p[c]) per row, zero on ignored rows
    weighted = log_probs if weight is None else log_probs * weight
    smooth = (-weighted.sum(axis=-1)).masked_fill(~valid, 0.0)  # (M,)
    if reduction == "none":
        smooth = smooth.reshape(out_shape)
    elif reduction == "sum":
        smooth = smooth.sum()
    else:
        total_weight = valid.sum() if weight is None else weight[targets[valid]].sum()
        smooth = _mean_over(smooth.sum(), float(total_weight))
    return (1.0 - label_smoothing) * nll + (label_smoothing / num_classes) * smooth
