"""Linear algebra: the matrix product (through the active kernel set) and `einsum`."""

from __future__ import annotations

import builtins

import numpy as np

from tensorlite import kernels
from tensorlite.autograd.function import Function
from tensorlite.ops.shape import BroadcastTo
from tensorlite.tensor import Tensor


class MatMul(Function):
    """a @ b for ndim >= 2 with broadcast batch dimensions; 1-D operands as in NumPy."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"(inner dimensions {a.shape[-1]} and "
                             f"{b.shape[-2 if b.ndim > 1 else 0]} differ)")
        if a.ndim > 2 or b.ndim > 2:
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} "
                                 f"cannot be broadcast together") from None
        self.save_for_backward(a, b)
        # 1-D operands become matrices for the kernel and lose that axis again afterwards.
        out = kernels.matmul(a[None, :] if a.ndim == 1 else a,
                                     b[:, None] if b.ndim == 1 else b)
        if a.ndim == 1:
            out = out[..., 0, :]
        if b.ndim == 1:
            out = out[..., 0]
        return out

    def backward(self, grad):
        a, b = self.saved
        a_was_vector, b_was_vector = a.ndim == 1, b.ndim == 1
        if a_was_vector:  # (n,) -> (1, n); grad gains the matching axis of size 1
            a = a.reshape((1,) + a.shape)
            grad = grad.reshape(grad.shape[:-1] + (1,) + grad.shape[-1:])
        if b_was_vector:  # (n,) -> (n, 1)
            b = b.reshape(b.shape + (1,))
            grad = grad.reshape(grad.shape + (1,))
        if isinstance(grad, Tensor):  # create_graph: the same two products, recorded
            grad_a, grad_b = grad @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ grad
        else:
            grad_a, grad_b = kernels.matmul_backward(grad, a, b)
        # Drop the added axis again; unbroadcast sums any broadcast batch axes.
        if a_was_vector:
            grad_a = grad_a.reshape(grad_a.shape[:-2] + grad_a.shape[-1:])
        if b_was_vector:
            grad_b = grad_b.reshape(grad_b.shape[:-1])
        return grad_a, grad_b


class Einsum(Function):
    """np.einsum with explicit output subscripts (see `einsum`). The gradient of operand i is
    itself an einsum: of the output gradient with the other operands, producing operand i's
    subscripts (indices that occur in operand i alone were summed: their gradient is broadcast)."""

    def forward(self, *operands, inputs, output):
        self.inputs, self.output = inputs, output
        self.shapes = tuple(a.shape for a in operands)
        self.save_for_backward(*operands)
        return np.asarray(np.einsum(",".join(inputs) + "->" + output, *operands))

    def backward(self, grad):
        operands = self.saved
        grads = []
        for i, subscripts in enumerate(self.inputs):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [j for j in range(len(operands)) if j != i]
            elsewhere = set(self.output).union(*(self.inputs[j] for j in others))
            kept = "".join(c for c in subscripts if c in elsewhere)
            spec = ",".join([self.output] + [self.inputs[j] for j in others]) + "->" + kept
            grad_i = Einsum.run(grad, *[operands[j] for j in others],
                                inputs=tuple(spec.split("->")[0].split(",")), output=kept)
            if kept != subscripts:  # summed-out indices: the gradient is the same along them
                shape = self.shapes[i]
                grad_i = grad_i.reshape(tuple(n if c in elsewhere else 1
                                              for c, n in zip(subscripts, shape)))
                grad_i = BroadcastTo.run(grad_i, shape=shape)
            grads.append(grad_i)
        return tuple(grads)


def matmul(input, other) -> Tensor:
    """The matrix product `input @ other`, with NumPy's (and torch's) broadcasting of batch
    dimensions."""
    return MatMul.apply(input, other)


def _einsum_subscripts(spec, operands):
    """`spec` -> (input subscripts, output subscripts), explicit, with '...' spelled out in
    unused letters; repeated indices within one operand (diagonals) are refused."""
    spec = spec.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise ValueError(f"einsum: '{spec}' has {len(inputs)} operands, got {len(operands)} "
                         f"tensors")
    letters = set(spec) - set(".,->")
    if not all(c.isalpha() for c in letters):
        raise ValueError(f"einsum: '{spec}' may contain only letters, ',', '->' and '...'")
    spare = iter(sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") - letters))
    ellipsis_length = 0
    for subscripts, operand in zip(inputs, operands):
        named = len(subscripts.replace("...", ""))
        if "..." in subscripts:
            ellipsis_length = builtins.max(ellipsis_length, operand.ndim - named)
        elif named != operand.ndim:
            raise ValueError(f"einsum: subscripts '{subscripts}' name {named} dimensions, but "
                             f"the operand has shape {operand.shape}")
    ellipsis = "".join(next(spare) for _ in range(ellipsis_length))
    spelled = []
    for subscripts, operand in zip(inputs, operands):
        if "..." in subscripts:
            own = operand.ndim - len(subscripts.replace("...", ""))
            if own < 0:
                raise ValueError(f"einsum: subscripts '{subscripts}' name more dimensions than "
                                 f"the operand's shape {operand.shape}")
            subscripts = subscripts.replace("...", ellipsis[ellipsis_length - own:])
        spelled.append(subscripts)
    if not arrow:  # implicit output: the ellipsis, then the letters used once, sorted
        counts = "".join(inputs).replace("...", "")
        output = "..." * bool(ellipsis_length) + "".join(
            sorted(c for c in set(counts) if counts.count(c) == 1))
    output = output.replace("...", ellipsis)
    for position, subscripts in enumerate(spelled + [output]):
        repeated = sorted({c for c in subscripts if subscripts.count(c) > 1})
        if repeated:
            where = "the output" if position == len(spelled) else f"operand {position}"
            raise ValueError(f"einsum: index '{repeated[0]}' repeats in {where} of '{spec}'; "
                             f"diagonals are not supported (take them by indexing)")
    unknown = set(output) - set("".join(spelled))
    if unknown:
        raise ValueError(f"einsum: output index '{sorted(unknown)[0]}' of '{spec}' is in no "
                         f"operand")
    return tuple(spelled), output


def einsum(spec, *operands) -> Tensor:
    """Einstein summation, as torch.einsum / np.einsum ('...' supported, operands may also be
    passed as one list). Differentiable to any order: each gradient is itself an einsum."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    tensors = [o if isinstance(o, Tensor) else Tensor(o) for o in operands]
    inputs, output = _einsum_subscripts(spec, tensors)
    sizes = {}
    for subscripts, t in zip(inputs, tensors):
        for c, n in zip(subscripts, t.shape):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise ValueError(f"einsum: index '{c}' of '{spec}' has sizes {sizes[c]} and {n} "
                                 f"(operand shapes {[t.shape for t in tensors]})")
            sizes[c] = builtins.max(sizes[c], n)
    return Einsum.apply(*tensors, inputs=inputs, output=output)
