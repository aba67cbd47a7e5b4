"""Neural-network functions (`tensorlite.functional`, imported as `F`; `tensorlite.nn.functional`
is the same module): the fused ops of `tensorlite/ops/nn.py` and the losses of
`tensorlite/losses.py`, and the convolution family (`ops/conv.py`, `ops/pool.py`, `ops/batch_norm.py`,
`ops/padding.py`), under the names torch.nn.functional uses. How the ops are fused and how
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
from tensorlite.ops.conv import conv1d, conv2d, conv_transpose2d, fold, unfold  # noqa: F401
from tensorlite.ops.pool import (  # noqa: F401
    adaptive_avg_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d,
)
from tensorlite.ops.batch_norm import batch_norm  # noqa: F401
from tensorlite.ops.padding import pad  # noqa: F401
from tensorlite.ops.index import one_hot  # noqa: F401
from tensorlite.ops.nn import dropout2d  # noqa: F401
from tensorlite.losses import (  # noqa: F401  (cross_entropy's common case is ops.nn.CrossEntropy)
    binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss, nll_loss, silu,
)

__all__ = [
    "softmax", "log_softmax", "cross_entropy", "gelu", "relu", "layer_norm", "embedding",
    "dropout", "linear", "scaled_dot_product_attention", "mse_loss", "l1_loss",
    "binary_cross_entropy_with_logits", "nll_loss", "silu",
    "conv1d", "conv2d", "conv_transpose2d", "unfold", "fold", "max_pool1d", "max_pool2d",
    "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "pad", "one_hot", "dropout2d",
]
