"""Neural-network functions (`tensorlite.functional`, usually imported as `F`).

Each is one fused op: a single graph node whose forward and backward call the active kernel set
(`tensorlite.kernels.current`), so a softmax is one node with a one-pass backward, not a chain of
exp, sum and divide nodes. The plain-NumPy statement of each formula is in
`tensorlite/kernels/reference.py`.

Second derivatives. A fused backward kernel cannot be differentiated by the engine, so for
`create_graph=True` each op's backward is itself an op: `SoftmaxBackward`, `GeluBackward`, ...
whose forward is that same kernel (so the numbers are the same) and whose backward, beside it, is
written with differentiable operations. Backwards with several outputs (layer norm, linear,
attention) are instead written as a short composite of differentiable operations in that mode.
The plain first-order path calls the kernels directly, exactly as before.
"""

from tensorlite.ops.nn import (  # noqa: F401
    _along_last_axis, CrossEntropy, CrossEntropyBackward, Dropout, dropout, Embedding,
    embedding, EmbeddingBackward, Gelu, gelu, _GELU_C, GeluBackward, GeluErf, GeluErfBackward,
    layer_norm, NormalCdf,
    _layer_norm_backward_composite, LayerNorm, Linear, linear, log_softmax, LogSoftmax,
    LogSoftmaxBackward, relu, scaled_dot_product_attention, ScaledDotProductAttention, Softmax,
    softmax, SoftmaxBackward,
)
from tensorlite.losses import (  # noqa: F401  (cross_entropy's common case is ops.nn.CrossEntropy)
    binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss, nll_loss, silu,
)

__all__ = [
    "softmax", "log_softmax", "cross_entropy", "gelu", "relu", "layer_norm", "embedding",
    "dropout", "linear", "scaled_dot_product_attention", "mse_loss", "l1_loss",
    "binary_cross_entropy_with_logits", "nll_loss", "silu",
]
