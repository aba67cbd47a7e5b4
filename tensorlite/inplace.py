"""In-place operations: `add_`, `sub_`, `mul_`, `div_`, `zero_`, `fill_`, `clamp_`, `copy_`,
`t[index] = value`, and `+=` with its siblings.

How they stay correct under autograd, in the order the checks happen:

1. A leaf that requires grad cannot be changed in place while grad mode is on: its gradient
   would describe values that no longer exist. (Under `tl.no_grad()` it can: that is how
   optimizers update parameters.)
2. A view of a tensor that requires grad cannot be changed in place either: the change would
   bypass the base tensor's history. Clone first. (PyTorch rebases the view's history instead;
   we refuse rather than risk a wrong gradient.)
3. Otherwise the new value is computed out of place by the ordinary differentiable op, from a
   copy of the old value that keeps the old history, and then written into the tensor's own
   memory; the tensor takes the new op as its history. So `y = x * 2; y.add_(1)` is
   differentiable, exactly like `y = x * 2 + 1`.
4. Every in-place change increments the tensor's version counter (shared with its views). An op
   that saved this tensor for its backward notices the changed version and raises, naming itself,
   instead of computing a gradient from overwritten values (`y = x.sigmoid(); y.mul_(2)`).
"""

from __future__ import annotations

import numpy as np

from tensorlite.autograd.function import Function
from tensorlite.autograd.grad_mode import is_grad_enabled, no_grad
from tensorlite.ops.elementwise import clamp
from tensorlite.ops.index import GetItem, MaskedFill, _index_to_numpy
from tensorlite.ops.shape import BroadcastTo
from tensorlite.tensor import Tensor


class SetItem(Function):
    """x with `value` written at `index` (out of place): the op behind `x[index] = value`.
    The gradient reaches x everywhere but at `index`, and `value` from `index`."""

    def forward(self, x, value, index):
        self.index = index
        out = x.copy()
        try:
            out[index] = value
        except (ValueError, IndexError) as error:
            raise ValueError(f"setitem: cannot assign a value of shape {value.shape} to index "
                             f"{index!r} of a tensor of shape {x.shape} ({error})") from None
        return out

    def backward(self, grad):
        return SetItem.run(grad, 0.0, index=self.index), GetItem.run(grad, index=self.index)


def _modify_in_place(x: Tensor, what: str, compute, *others, direct=None) -> Tensor:
    """Replace x's values by `compute(x)` in x's own memory (see the module docstring). When
    nothing is recorded, `direct(array)`, if given, does the same to the array at less cost."""
    records = is_grad_enabled() and (x.requires_grad or any(
        isinstance(o, Tensor) and o.requires_grad for o in others))
    if records and x.requires_grad and x._ctx is None:
        raise RuntimeError(f"{what}: a leaf tensor that requires grad cannot be modified in "
                           f"place (its gradient would refer to values that no longer exist); "
                           f"do it under tl.no_grad(), or on a copy")
    if records and x._ctx is not None and x._ctx.is_view:
        raise RuntimeError(f"{what}: this tensor is a view ({x._ctx.name}) of a tensor that "
                           f"requires grad; modifying it in place would bypass the base tensor's "
                           f"history. Modify a copy instead (x = x * 1, then {what})")
    if not records and direct is not None:
        direct(x.data)
        x._version_counter[0] += 1
        return x
    if records:
        old = Tensor._make(x.data.copy(), x.requires_grad)  # the old value, with x's history
        old._ctx = x._ctx
        result = compute(old)
    else:
        with no_grad():
            result = compute(x)
    try:
        np.copyto(x.data, result.data, casting="same_kind")
    except TypeError:
        raise TypeError(f"{what}: the result has dtype {result.dtype}, which cannot be stored in "
                        f"this tensor of dtype {x.dtype} in place") from None
    except ValueError:
        raise ValueError(f"{what}: the result has shape {result.shape}, which does not fit this "
                         f"tensor of shape {x.shape} in place") from None
    if records:
        x._ctx, x.requires_grad = result._ctx, result.requires_grad
    x._version_counter[0] += 1
    return x


def add_(x, other, alpha=1):
    """x += alpha * other, in place."""
    return _modify_in_place(x, "add_", lambda old: old + (other if alpha == 1 else other * alpha),
                            other)


def sub_(x, other, alpha=1):
    """x -= alpha * other, in place."""
    return _modify_in_place(x, "sub_", lambda old: old - (other if alpha == 1 else other * alpha),
                            other)


def mul_(x, other):
    return _modify_in_place(x, "mul_", lambda old: old * other, other)


def div_(x, other):
    return _modify_in_place(x, "div_", lambda old: old / other, other)


def fill_(x, value):
    """Every element set to `value` (the gradient to the old values is zero)."""
    return _modify_in_place(x, "fill_", lambda old: MaskedFill.apply(old, mask=np.True_,
                                                                       value=value))


def zero_(x):
    return fill_(x, 0)


def clamp_(x, min=None, max=None):
    """Values limited to [min, max] in place; the gradient passes where nothing was clipped."""
    if min is None and max is None:
        raise ValueError("clamp_: give min, max, or both")
    return _modify_in_place(x, "clamp_", lambda old: clamp(old, min, max), min, max)


def copy_(x, source):
    """x's values replaced by `source` (broadcast to x's shape, converted to x's dtype)."""
    def copy(old):
        source_tensor = source if isinstance(source, Tensor) else Tensor(np.asarray(source))
        if source_tensor.dtype != old.dtype:
            source_tensor = source_tensor.astype(old.dtype)
        return BroadcastTo.apply(source_tensor, shape=old.shape)

    return _modify_in_place(x, "copy_", copy, source)


def setitem(x, index, value):
    """`x[index] = value`, differentiable with respect to x (elsewhere) and value."""
    index, _ = _index_to_numpy(index)
    value = value if isinstance(value, Tensor) else np.asarray(value, dtype=x.dtype)

    def assign(array):
        array[index] = value.data if isinstance(value, Tensor) else value

    return _modify_in_place(x, "setitem", lambda old: SetItem.apply(old, value, index=index),
                            value, direct=assign)


IN_PLACE_METHODS = {
    "add_": add_,
    "sub_": sub_,
    "mul_": mul_,
    "div_": div_,
    "fill_": fill_,
    "zero_": zero_,
    "clamp_": clamp_,
    "clip_": clamp_,
    "copy_": copy_,
    "__setitem__": setitem,
    "__iadd__": add_,
    "__isub__": sub_,
    "__imul__": mul_,
    "__itruediv__": div_,
}
