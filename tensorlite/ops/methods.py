"""TENSOR_METHODS: the one table from which `Tensor` gets every operator and method that
computes (installed at the bottom of `tensorlite/tensor.py`): the ops of this package, the
engine's entry points, and the in-place methods of `tensorlite/inplace.py`."""

from __future__ import annotations

import numpy as np

from tensorlite.autograd.api import tensor_backward
from tensorlite.autograd.engine import retain_grad
from tensorlite.autograd.graphviz import to_dot
from tensorlite.inplace import IN_PLACE_METHODS
from tensorlite.ops.elementwise import (
    abs, Add, Cast, ceil, clamp, cos, Div, exp, expm1, floor, log, log1p, maximum, minimum,
    Mul, Neg, _no_grad_binary, _no_grad_compare, _no_grad_unary, Pow, pow, relu, round, rsqrt,
    sigmoid, sign, sin, sqrt, square, Sub, tanh, _to, _binary, clone, contiguous,
)
from tensorlite.ops.shape import (
    _expand, flatten, _permute, _repeat, _reshape, squeeze, _T, _t, _transpose, tril, triu,
    unsqueeze,
)
from tensorlite.ops.arguments import CPU
from tensorlite.ops.nn import log_softmax, softmax
from tensorlite.ops.index import (
    chunk, gather, GetItem, index_select, masked_fill, scatter_add, split,
)
from tensorlite.ops.reduce import (
    amax, amin, argmax, argmin, argsort, cumsum, logsumexp, max, _mean, min, norm, prod, sort,
    std, _sum, topk, _var,
)
from tensorlite.ops.linalg import MatMul, matmul


TENSOR_METHODS = {
    # torch's type promotion (a float tensor with an integer one keeps its float dtype)
    "__add__": _binary(Add),
    "__radd__": _binary(Add, reflected=True),
    "__sub__": _binary(Sub),
    "__rsub__": _binary(Sub, reflected=True),
    "__mul__": _binary(Mul),
    "__rmul__": _binary(Mul, reflected=True),
    "__truediv__": _binary(Div, true_divide=True),
    "__rtruediv__": _binary(Div, reflected=True, true_divide=True),
    "__pow__": _binary(Pow),
    "__rpow__": _binary(Pow, reflected=True),
    "__matmul__": matmul,
    "__rmatmul__": lambda a, b: MatMul.apply(b, a),
    "__neg__": lambda x: Neg.apply(x),
    "__abs__": abs,
    "__getitem__": lambda x, index: GetItem.apply(x, index=index),
    "__gt__": _no_grad_compare(np.greater),
    "__ge__": _no_grad_compare(np.greater_equal),
    "__lt__": _no_grad_compare(np.less),
    "__le__": _no_grad_compare(np.less_equal),
    "__eq__": _no_grad_compare(np.equal),
    "__ne__": _no_grad_compare(np.not_equal),
    # integer and boolean arithmetic: no gradient
    "__floordiv__": _no_grad_binary("floor_divide (//)", np.floor_divide),
    "__rfloordiv__": _no_grad_binary("floor_divide (//)", np.floor_divide, reflected=True),
    "__mod__": _no_grad_binary("remainder (%)", np.remainder),
    "__rmod__": _no_grad_binary("remainder (%)", np.remainder, reflected=True),
    "__and__": _no_grad_binary("bitwise_and (&)", np.bitwise_and),
    "__rand__": _no_grad_binary("bitwise_and (&)", np.bitwise_and, reflected=True),
    "__or__": _no_grad_binary("bitwise_or (|)", np.bitwise_or),
    "__ror__": _no_grad_binary("bitwise_or (|)", np.bitwise_or, reflected=True),
    "__xor__": _no_grad_binary("bitwise_xor (^)", np.bitwise_xor),
    "__rxor__": _no_grad_binary("bitwise_xor (^)", np.bitwise_xor, reflected=True),
    "__invert__": _no_grad_unary("bitwise_not (~)", np.invert),
    "matmul": matmul,
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "relu": relu,
    "abs": abs,
    "clamp": clamp,
    "clip": clamp,
    "maximum": maximum,
    "minimum": minimum,
    "sin": sin,
    "cos": cos,
    "log1p": log1p,
    "expm1": expm1,
    "square": square,
    "rsqrt": rsqrt,
    "sign": sign,
    "floor": floor,
    "ceil": ceil,
    "round": round,
    "sum": _sum,
    "mean": _mean,
    "max": max,
    "min": min,
    "amax": amax,
    "amin": amin,
    "argmax": argmax,
    "argmin": argmin,
    "var": _var,
    "std": std,
    "norm": norm,
    "prod": prod,
    "logsumexp": logsumexp,
    "cumsum": cumsum,
    "topk": topk,
    "sort": sort,
    "argsort": argsort,
    "reshape": _reshape,
    "view": _reshape,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "permute": _permute,
    "T": property(_T),
    "flatten": flatten,
    "squeeze": squeeze,
    "unsqueeze": unsqueeze,
    "expand": _expand,
    "repeat": _repeat,
    "chunk": chunk,
    "split": split,
    "index_select": index_select,
    "gather": gather,
    "scatter_add": scatter_add,
    "masked_fill": masked_fill,
    "pow": pow,
    "clone": clone,
    "contiguous": contiguous,
    "is_contiguous": lambda x: bool(x.data.flags.c_contiguous),
    "t": _t,
    "tril": tril,
    "triu": triu,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "device": property(lambda x: CPU, doc="Where the tensor lives: always tl.device('cpu')."),
    "is_cuda": property(lambda x: False),
    "cpu": lambda x: x,
    "numel": lambda x: x.data.size,
    "tolist": lambda x: x.data.tolist(),
    "to": _to,
    "float": lambda x: _to(x, np.float32),
    "double": lambda x: _to(x, np.float64),
    "long": lambda x: _to(x, np.int64),
    "int": lambda x: _to(x, np.int32),
    "bool": lambda x: _to(x, np.bool_),
    "astype": lambda x, dtype: Cast.apply(x, dtype=np.dtype(dtype)),
    # the engine
    "backward": tensor_backward,
    "retain_grad": retain_grad,
    "to_dot": to_dot,
    # in place: add_, sub_, mul_, div_, zero_, fill_, clamp_, copy_, t[i] = v, +=, ...
    **IN_PLACE_METHODS,
}


# Registry entries that have no derivative at all (comparisons, integer arithmetic, indices,
# conversions to Python): no gradient flows through them.
NO_GRADIENT_METHODS = frozenset({
    "__gt__", "__ge__", "__lt__", "__le__", "__eq__", "__ne__", "__floordiv__", "__rfloordiv__",
    "__mod__", "__rmod__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__",
    "__invert__", "argmax", "argmin", "argsort", "numel", "tolist", "long", "int", "bool",
    "device", "is_cuda", "is_contiguous",
    "backward", "retain_grad", "to_dot",  # the engine itself, not ops
})
