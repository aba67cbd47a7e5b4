"""The tensor operations, one `Function` class per op with its forward and backward side by side,
by category:

    elementwise.py  arithmetic, unary functions, comparisons, casts
    shape.py        reshape, transpose, permute, broadcast, concatenate, stack, repeat, squeeze
    index.py        x[index], where, masked_fill, gather, scatter_add, index_select, split, chunk
    reduce.py       sum, mean, var/std, max/min, norm, prod, logsumexp, cumsum, sort, topk
    linalg.py       matmul, einsum
    nn.py           softmax family, layer norm, GELU, embedding, dropout, linear, attention, the
                    cross-entropy op
    conv.py         conv1d/conv2d, conv_transpose2d, unfold and fold (each other's backwards)
    pool.py         max and average pooling, adaptive average pooling
    batch_norm.py   batch normalization (training statistics, running statistics)
    padding.py      pad: constant, reflect, replicate, circular
    rnn.py          the recurrent layers' sequence ops (RNN, LSTM, GRU)
    arguments.py    keyword spellings (dim/axis), axis, dtype and device checks shared by the above;
                    tl.device
    methods.py      TENSOR_METHODS: the one table from which Tensor gets its operators and methods

Conventions: `forward` receives NumPy arrays and returns one; `backward` receives the gradient of
the output and returns one gradient per tensor input (None where an input needs none), written
with operations that arrays and Tensors share so that `create_graph=True` can record it.
"""

# noqa: A001 below: PyTorch's names (sum, max, abs, round, ...) shadow builtins here, as in torch.
from tensorlite.ops.arguments import (  # noqa: F401,A001
    _broadcast_check, _dtype, either_keyword, _normalize_axes, _UNSET,
)
from tensorlite.ops.elementwise import (  # noqa: F401,A001
    Abs, abs, Add, Cast, ceil, Clamp, clamp, clip, Cos, cos, Div, Exp, exp, Expm1, expm1,
    floor, Log, log, Log1p, log1p, Maximum, maximum, Minimum, minimum, Mul, Neg, Pow, Relu,
    relu, round, Rsqrt, rsqrt, Sigmoid, sigmoid, sign, Sin, sin, Sqrt, sqrt, Square, square,
    StepFunction, Sub, Tanh, tanh, _to, Clone, clone, contiguous, pow,
)
from tensorlite.ops.shape import (  # noqa: F401,A001
    BroadcastTo, cat, Concatenate, concatenate, _expand, expand, flatten, Permute, Repeat,
    _repeat, repeat, Reshape, squeeze, Stack, stack, Transpose, Triangle, tril, triu, unsqueeze,
)
from tensorlite.ops.index import (  # noqa: F401,A001
    chunk, gather, GetItem, index_select, _index_to_numpy, IndexBackward, masked_fill,
    MaskedFill, scatter_add, split, Where, where,
)
from tensorlite.ops.reduce import (  # noqa: F401,A001
    amax, amin, argmax, argmin, argsort, CumSum, cumsum, LogSumExp, logsumexp, Max, max, Mean,
    _mean, mean, Min, min, Norm, norm, Prod, prod, ProductOfOthers, sort, std, Sum, _sum, sum,
    topk, ValuesIndices, Var, _var, var,
)
from tensorlite.ops.linalg import (  # noqa: F401,A001
    Einsum, einsum, MatMul, matmul,
)
from tensorlite.ops.nn import (  # noqa: F401
    CrossEntropy, CrossEntropyBackward, Dropout, Embedding, EmbeddingBackward, Gelu,
    GeluBackward, GeluErf, GeluErfBackward, LayerNorm, NormalCdf, Linear, log_softmax, LogSoftmax, LogSoftmaxBackward,
    ScaledDotProductAttention, Softmax, softmax, SoftmaxBackward,
)
from tensorlite.ops.methods import NO_GRADIENT_METHODS, TENSOR_METHODS  # noqa: F401
