"""Reference kernels: the math of every hot operation, written in plain NumPy.

Each function here is the readable statement of what a kernel computes. The Numba
versions in ``tensorlite.kernels.numba`` have the same names and signatures, in files of
the same names, and must give the same answers (``tests/test_kernels.py`` checks this);
this package is also the kernel set used when ``TENSORLITE_KERNELS=numpy``.

Conventions shared by every kernel:

* inputs and outputs are ``np.ndarray``; the floating dtype (float32 or float64) of
  the inputs is kept in the outputs;
* inputs may be non-contiguous views (slices with steps, transposes);
* nothing is modified in place except by ``adamw_step``, whose job is to update.
"""

from .adamw import adamw_step
from .attention import (_attention_probabilities, _causal_mask, _check_attention, attention,
                        attention_backward)
from .cross_entropy import _logsumexp_rows, cross_entropy, cross_entropy_backward
from .embedding import embedding_backward
from .gelu import GELU_CUBIC, GELU_SCALE, gelu, gelu_backward
from .layer_norm import layer_norm, layer_norm_backward
from .matmul import linear, linear_backward, matmul, matmul_backward
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from .conv import conv2d, conv2d_backward_input, conv2d_backward_weight, fold, unfold
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .batch_norm import batch_norm, batch_norm_backward
from .rnn import (gru_cell, gru_cell_backward, gru_sequence, gru_sequence_backward, lstm_cell,
                  lstm_cell_backward, lstm_sequence, lstm_sequence_backward)
