"""Numba kernels: the same functions as ``tensorlite.kernels.numpy``, fused and parallel.

Every public function here has the name, signature and result of its counterpart in
``tensorlite.kernels.numpy`` (read that first: it is the statement of the math). Each
file mirrors the same-named file there, function for function (``matmul.py``,
``softmax.py``, ``attention.py``, ``layer_norm.py``, ``gelu.py``, ``cross_entropy.py``,
``embedding.py``, ``adamw.py``, ``conv.py``, ``pool.py``, ``batch_norm.py``, ``rnn.py``); each
section starts with ``# reference: reference.<name>`` and says what is done differently for
speed. What the files share is in ``_common.py``
(compile options, threading-layer defaults, scalar and SIMD helpers) and ``_gemm.py``
(matrix products as tables of BLAS calls). The recurring tricks:

* fusion: one pass over a row does the max, the exponentials, the sum and the scaling,
  instead of NumPy's four temporary arrays;
* ``prange`` over rows (or over a flat buffer) spreads the work over Numba's threads;
* ``_sum``: row sums in an 8-lane SIMD accumulator whose order of additions is
  written out in ``_common.py`` rather than left to the compiler (see "Reproducible
  floating point" below);
* ``fast_exp``: NumPy's ``exp`` is a library call that stops LLVM from vectorising the
  loop around it, so float32 uses a short polynomial (``_common.py``) that compiles to
  SIMD code; ``_max`` does the same for running maxima;
* matrix products are left to BLAS, called on independent pieces (batch items, row
  blocks, the two products of a backward pass) from one parallel loop with BLAS
  itself on one thread -- see ``tensorlite.kernels`` for this threading policy.

Reproducible floating point: every kernel is compiled with IEEE semantics (no
``fastmath``), so the optimiser may not reorder a sum or fuse a multiply-add; the
order of every floating-point operation is the one written here. This is what makes a
kernel give the same bits whether it was compiled in this process or loaded from the
on-disk cache. With ``fastmath`` it did not: Numba compiles a ``prange`` body as its
own library, which the compiling process runs, and caches the kernel's module, in
which that body was optimised a second time after being linked in; with ``reassoc``
the two optimisations summed a row's partial sums in different orders (``(a+b)+c)+d``
against ``(a+b)+(c+d)``), so a cold and a warm process disagreed in the last bits.

Each kernel compiles on its first call (``cache=True`` keeps the machine code on disk,
so later processes load it in milliseconds); importing this package compiles nothing.
Numba checks a cached kernel only against its own file: after editing a helper in
``_common.py`` or ``_gemm.py``, delete the cache (the ``*.nbi``/``*.nbc`` files in
``__pycache__`` or ``NUMBA_CACHE_DIR``) so the kernels that inline it recompile.
The thin Python wrappers make inputs contiguous when they must, pick the float type's
constants, and fall back to ``reference`` (the NumPy set) for what the kernels do not
handle (integer dtypes, empty arrays).
"""

import numba  # noqa: F401  (tests set numba.get_num_threads through this name)

from .. import numpy as reference  # noqa: F401
from ._common import GOMP_SPINCOUNT, exp_array, fast_exp
from .adamw import adamw_step
from .attention import ATTENTION_QUERY_BLOCK, attention, attention_backward
from .cross_entropy import cross_entropy, cross_entropy_backward
from .embedding import embedding_backward
from .gelu import gelu, gelu_backward
from .layer_norm import layer_norm, layer_norm_backward
from ._gemm import SMALL_MATMUL
from .matmul import (LINEAR_BACKWARD_MIN_BLOCK_ROWS, _linear_backward_plan, linear,
                     linear_backward, matmul, matmul_backward)
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from .conv import conv2d, conv2d_backward_input, conv2d_backward_weight, fold, unfold
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .batch_norm import batch_norm, batch_norm_backward
from .rnn import (gru_cell, gru_cell_backward, gru_sequence, gru_sequence_backward, lstm_cell,
                  lstm_cell_backward, lstm_sequence, lstm_sequence_backward)
