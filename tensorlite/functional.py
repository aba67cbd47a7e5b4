"""Neural-network functions (`tensorlite.functional`, imported as `F`; `tensorlite.nn.functional`
is the same module): the fused ops of `tensorlite/ops/nn.py` and the losses of
`tensorlite/losses.py`, under the names torch.nn.functional uses. How the ops are fused and how
they are differentiated twice is told in `tensorlite/ops/nn.py`.
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
