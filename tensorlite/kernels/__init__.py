"""Kernel sets: the numerical inner loops behind tensorlite's operations.

Two packages implement the same functions with the same signatures:

* ``numpy`` -- plain NumPy, the readable statement of the math (the reference);
* ``numba`` -- Numba-compiled, fused and parallel, the fast path.

As llm.c keeps each tuned kernel beside its reference, every file of ``numba/`` mirrors
the same-named file of ``numpy/``, function for function: ``matmul.py`` (matmul and the
linear layer), ``softmax.py`` (softmax, log-softmax), ``attention.py``, ``layer_norm.py``,
``gelu.py``, ``cross_entropy.py``, ``embedding.py``, ``adamw.py``, ``conv.py`` (convolution,
unfold and fold), ``pool.py`` (max and average pooling), ``batch_norm.py`` and ``rnn.py`` (the
LSTM and GRU cell steps). What the Numba files
share is in ``numba/_common.py`` (compile options, threading-layer defaults, SIMD
reductions, ``fast_exp``) and ``numba/_gemm.py`` (products as tables of BLAS calls). Each
package's ``__init__`` exports every kernel, so a set is used as one namespace.
``_blas.py`` reaches the OpenBLAS libraries' thread pools; ``tensorlite/environment.py`` checks
the environment variables below. ``reference`` and ``jitted`` remain as names of the two
sets (``jitted`` loads Numba on first use).

The ops call the kernels through this module, by name: ``kernels.softmax(x)``,
``kernels.attention_backward(...)`` and so on are defined at the end of this file, one short
function each, and each says which set it runs (``if _numba_active: ... else: ...``), so a
reader goes from an op in ``tensorlite/ops/`` to the function here and from it to the two
implementations, ``numpy/softmax.py`` and ``numba/softmax.py``. The environment variable ``TENSORLITE_KERNELS`` (``numba``, the default, or
``numpy``) chooses the set at import; ``use(name)`` switches at run time. Another value
raises ``EnvironmentVariableError`` (a ValueError naming the variable and its choices), and
so do a ``NUMBA_NUM_THREADS`` or ``NUMBA_THREADING_LAYER`` that Numba could not use, when
the ``numba`` set is first loaded.

Reproducibility
---------------
Each kernel is a fixed sequence of IEEE float operations (the Numba set is compiled
without ``fastmath``; its sums add in an order written in ``numba/_common.py``). So on the same
machine, with the same kernel set and the same thread count, the same inputs give the
same bytes -- whether the Numba kernels were compiled in this process or loaded from
the on-disk cache (``NUMBA_CACHE_DIR``), and so a run resumed from a checkpoint continues
exactly. Not promised: equal bytes across kernel sets (the sets agree to rounding,
tests/test_kernel_sets.py), across machines or library versions (another CPU, BLAS or
LLVM may round differently), or across thread counts, where a few reductions split
work by thread (layer_norm_backward's and linear_backward's weight and bias gradients;
matrix products are handed to BLAS in blocks per thread).
tests/test_kernel_reproducibility.py checks this.

Threading policy: one thread pool at a time
-------------------------------------------
A process here can hold three thread pools: NumPy's OpenBLAS, SciPy's OpenBLAS (which
the jitted matmul calls) and Numba's own pool for ``prange`` loops. Idle OpenBLAS
workers spin for ~0.1 s after each call before they sleep; if a Numba parallel loop
starts while they spin, two busy threads share each core and a layer ran 16x slower
in our measurements. So exactly one pool does parallel work:

* ``numba`` set: both OpenBLAS libraries run on 1 thread and Numba's ``prange``
  supplies the parallelism, also for matrix products: the jitted matmul calls
  single-threaded BLAS on independent batch items or row blocks from a parallel loop.
  On 2 cores (benchmarks/bench_kernels.py) this ties 2-thread BLAS on the 2-D GPT
  shapes or trails it a little (README, Benchmarks), and it is what lets the attention
  kernel give each thread whole heads, whose small products BLAS parallelises badly.
* ``numpy`` set: nothing calls Numba, and both OpenBLAS libraries get their default
  thread count (all cores, or ``OPENBLAS_NUM_THREADS`` when the user set it).

Numba's threading layer is OpenMP with a short spin (``GOMP_SPINCOUNT=10000``, about
0.25 ms; see ``numba/_common.py``). Measured on the 2-core machine, median time of one GPT
training step (4 layers, n_embd 128, batch 12 x 64 tokens): OpenMP with that spin
~31 ms; OpenMP sleeping at once (``OMP_WAIT_POLICY=passive``) ~36 ms; OpenMP's default
long spin ~31-37 ms but with 8 ms stalls per launch whenever another process holds a
core; workqueue (workers always sleep; each wake-up costs ~40 us on this VM) ~56 ms;
the NumPy set ~80 ms. Environment variables NUMBA_THREADING_LAYER, OMP_WAIT_POLICY,
GOMP_SPINCOUNT and NUMBA_NUM_THREADS override these defaults, which
``tensorlite/runtime.py`` applies with tensorlite's other process-level settings.
"""

import contextlib
import numbers
import os
import sys
import warnings

from . import _blas
from . import numpy as reference
from tensorlite.environment import (EnvironmentVariableError, check_numba_variables,
                                    kernel_set_from_environment)

KERNEL_SETS = ("numba", "numpy")

_active = "numpy"  # the active kernel set's name
_numba_active = False  # _active == "numba", the one test every kernel call below makes
_numba_set = None  # the ``numba`` package, once loaded (importing Numba takes ~0.2 s)
_default_blas_threads = {}  # library path -> thread count before we changed it
_thread_limit = None  # set_num_threads(n): the threads the active set may use


def _load(name):
    """Return the module implementing kernel set `name`."""
    if name == "numpy":
        return reference
    if name == "numba":
        if "numba" not in sys.modules:
            # Numba reads its variables on import and would reject a bad one without naming it
            check_numba_variables()
        if __name__ + ".numba" not in sys.modules:
            from tensorlite import runtime
            runtime.apply_numba_defaults()  # threading layer and spin, before Numba's pool starts
        from . import numba as jitted  # imports Numba (~0.2 s); kernels compile on first call
        return jitted
    raise ValueError(
        f"unknown kernel set {name!r}: choose one of {', '.join(map(repr, KERNEL_SETS))} "
        "(via tensorlite.kernels.use or the TENSORLITE_KERNELS environment variable)")


def _set_blas_threads(lib, numba_mode):
    if lib is None:
        return
    if lib.path not in _default_blas_threads:
        _default_blas_threads[lib.path] = lib.get_num_threads()
    if numba_mode:
        lib.set_num_threads(1)
    elif _thread_limit is not None:
        lib.set_num_threads(_thread_limit)
    else:
        lib.set_num_threads(_default_blas_threads[lib.path])


def apply_threading_policy():
    """(Re)apply the one-pool policy for the active kernel set (see module docstring).

    Called by use() and set_num_threads(); the jitted kernels call it again once
    SciPy's BLAS is loaded.
    """
    numba_mode = _active == "numba"
    _set_blas_threads(_blas.numpy_blas(), numba_mode)
    _set_blas_threads(_blas.scipy_blas(loaded_only=True), numba_mode)
    if numba_mode and _thread_limit is not None:
        import numba
        numba.set_num_threads(min(_thread_limit, numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n):
    """Use at most `n` threads for the kernels, under either kernel set, from now on.

    The limit goes to the one pool that does parallel work (module docstring): with the
    ``numba`` set to Numba's pool (``numba.set_num_threads``; at most the pool's size,
    NUMBA_NUM_THREADS), with the ``numpy`` set to BLAS instead of its default. It
    stays in force across ``use()`` switches, so that, for example, each of several
    processes sharing a machine (MPI ranks) keeps its share. ``None`` removes the
    limit. Returns None.
    """
    global _thread_limit
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"set_num_threads: n must be a positive integer or None, got {n!r}")
        n = int(n)
    _thread_limit = n
    if n is None and _active == "numba" and "numba" in sys.modules:
        import numba
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    apply_threading_policy()


def get_num_threads():
    """The thread limit set by set_num_threads, or None when there is none."""
    return _thread_limit


def use(name):
    """Make kernel set `name` ('numba' or 'numpy') the active one, and apply its
    threading policy. Returns the module now active."""
    global _active, _numba_active, _numba_set
    if not isinstance(name, str) or name.lower() not in KERNEL_SETS:
        _load(name)  # raises the ValueError with the list of choices
    name = name.lower()
    kernel_set = _load(name)
    if name == "numba":
        _numba_set = kernel_set
    _active, _numba_active = name, name == "numba"
    apply_threading_policy()
    return kernel_set


@contextlib.contextmanager
def blas_threads(threads):
    """Run NumPy's OpenBLAS on `threads` threads inside the block (e.g. to measure the
    machine's GEMM peak on every core while the Numba policy keeps BLAS on one)."""
    lib = _blas.numpy_blas()
    if lib is None:
        yield
        return
    before = lib.get_num_threads()
    lib.set_num_threads(threads)
    try:
        yield
    finally:
        lib.set_num_threads(before)


def active():
    """Name of the active kernel set: 'numba' or 'numpy'."""
    return _active


def active_set():
    """The package implementing the active kernel set: ``kernels.numpy`` or ``kernels.numba``."""
    return _numba_set if _numba_active else reference


def runtime_info():
    """What the numbers in a benchmark depend on: kernel set, BLAS build and threads.

    Returns a dict with the active kernel set, NumPy's and SciPy's OpenBLAS (library
    file, corename -- the CPU kernel family OpenBLAS chose, e.g. Haswell = AVX2 or
    SkylakeX/Zen = AVX-512 -- and thread count), Numba's thread count and threading
    layer, the OPENBLAS_CORETYPE environment variable if set, the malloc options
    (``malloc``) and what ``tensorlite.runtime`` applied at import (``runtime``).
    """
    import numpy
    apply_threading_policy()  # also covers a BLAS library loaded since the last use()
    info = {"kernels": _active, "numpy": numpy.__version__, "cpu_count": os.cpu_count(),
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
    numpy_lib = _blas.numpy_blas()
    scipy_lib = _blas.scipy_blas(loaded_only=True)
    info["numpy_blas"] = numpy_lib.info() if numpy_lib else None
    info["scipy_blas"] = scipy_lib.info() if scipy_lib else None
    info["numba"] = None
    if _active == "numba" or "numba" in sys.modules:
        import numba
        from numba.np.ufunc import parallel
        if parallel._is_initialized:  # asking a pool that is not running would start it
            layer, threads = numba.threading_layer(), numba.get_num_threads()
        else:
            layer, threads = "not started", numba.config.NUMBA_NUM_THREADS
        info["numba"] = {"version": numba.__version__, "threads": threads,
                         "threading_layer": layer,
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                         "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}
    from tensorlite import runtime
    info["malloc"] = runtime.malloc_info()
    info["runtime"] = runtime.applied()  # every process-level setting, step by step
    return info


def format_runtime_info(info=None):
    """One line summarising runtime_info(), for benchmark headers."""
    info = runtime_info() if info is None else info
    parts = [f"kernels={info['kernels']}", f"cpus={info['cpu_count']}"]
    for key in ("numpy_blas", "scipy_blas"):
        lib = info[key]
        if lib:
            parts.append(f"{key}={lib['corename']}/{lib['threads']}t")
        else:
            parts.append(f"{key}=not loaded")
    if info["numba"]:
        numba_info = info["numba"]
        parts.append(f"numba={numba_info['version']} {numba_info['threads']}t "
                     f"layer={numba_info['threading_layer']}")
        if numba_info["gomp_spincount"] or numba_info["omp_wait_policy"]:
            parts.append(f"GOMP_SPINCOUNT={numba_info['gomp_spincount']} "
                         f"OMP_WAIT_POLICY={numba_info['omp_wait_policy']}")
    coretype = info["openblas_coretype_env"]
    parts.append(f"OPENBLAS_CORETYPE={coretype if coretype else '(unset)'}")
    if "malloc" in info:
        from tensorlite import runtime
        parts.append(runtime.format_malloc_info(info["malloc"]))
    return " ".join(parts)


def __getattr__(name):
    # ``kernels.jitted`` (and ``from tensorlite.kernels import jitted``, as in kernel
    # modules of earlier revisions that benchmarks/bench_kernels.py loads for an A/B)
    # names the Numba set, loaded on first use like use("numba") would.
    if name == "jitted":
        return _load("numba")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _from_environment():
    name = kernel_set_from_environment(KERNEL_SETS)
    if name == "numba":
        try:
            return use("numba")
        except ImportError as error:  # Numba missing: the NumPy set always works
            warnings.warn(f"Numba kernels unavailable ({error}); using the NumPy kernels")
            name = "numpy"
    return use(name)


_from_environment()


# ----------------------------------------------------------------------------
# The kernels the ops call. Each runs the active set's function of the same name; the
# signatures and the math are documented once, in the reference (kernels/numpy/<file>.py).

def matmul(a, b):
    """a @ b with NumPy's batching rules (numpy/matmul.py, numba/matmul.py)."""
    if _numba_active:
        return _numba_set.matmul(a, b)
    return reference.matmul(a, b)


def matmul_backward(grad, a, b):
    """(grad @ b^T, a^T @ grad), each summed to its input's shape (numpy/matmul.py)."""
    if _numba_active:
        return _numba_set.matmul_backward(grad, a, b)
    return reference.matmul_backward(grad, a, b)


def linear(x, weight, bias):
    """x @ weight.T + bias for 2-D x, weight (out, in) (numpy/matmul.py, numba/matmul.py)."""
    if _numba_active:
        return _numba_set.linear(x, weight, bias)
    return reference.linear(x, weight, bias)


def linear_backward(grad, x, weight):
    """(grad_x, grad_weight, grad_bias) of linear (numpy/matmul.py, numba/matmul.py)."""
    if _numba_active:
        return _numba_set.linear_backward(grad, x, weight)
    return reference.linear_backward(grad, x, weight)


def softmax(x):
    """Softmax over the last axis (numpy/softmax.py, numba/softmax.py)."""
    if _numba_active:
        return _numba_set.softmax(x)
    return reference.softmax(x)


def softmax_backward(y, grad_y):
    """y * (grad_y - sum(grad_y * y)) over the last axis (numpy/softmax.py, numba/softmax.py)."""
    if _numba_active:
        return _numba_set.softmax_backward(y, grad_y)
    return reference.softmax_backward(y, grad_y)


def log_softmax(x):
    """Log-softmax over the last axis (numpy/softmax.py, numba/softmax.py)."""
    if _numba_active:
        return _numba_set.log_softmax(x)
    return reference.log_softmax(x)


def log_softmax_backward(y, grad_y):
    """grad_y - exp(y) * sum(grad_y) over the last axis (numpy/softmax.py, numba/softmax.py)."""
    if _numba_active:
        return _numba_set.log_softmax_backward(y, grad_y)
    return reference.log_softmax_backward(y, grad_y)


def attention(q, k, v, scale, is_causal):
    """(softmax(q k^T scale) v, logsumexp of each query) (numpy/attention.py, numba/attention.py)."""
    if _numba_active:
        return _numba_set.attention(q, k, v, scale, is_causal)
    return reference.attention(q, k, v, scale, is_causal)


def attention_backward(grad, q, k, v, logsumexp, scale, is_causal):
    """(grad_q, grad_k, grad_v) of attention (numpy/attention.py, numba/attention.py)."""
    if _numba_active:
        return _numba_set.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)
    return reference.attention_backward(grad, q, k, v, logsumexp, scale, is_causal)


def layer_norm(x, weight, bias, eps):
    """(y, mean, rstd) over the last axis (numpy/layer_norm.py, numba/layer_norm.py)."""
    if _numba_active:
        return _numba_set.layer_norm(x, weight, bias, eps)
    return reference.layer_norm(x, weight, bias, eps)


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """(grad_x, grad_weight, grad_bias) of layer_norm (numpy/layer_norm.py, numba/layer_norm.py)."""
    if _numba_active:
        return _numba_set.layer_norm_backward(grad_y, x, weight, mean, rstd)
    return reference.layer_norm_backward(grad_y, x, weight, mean, rstd)


def gelu(x):
    """GELU, tanh form (numpy/gelu.py, numba/gelu.py)."""
    if _numba_active:
        return _numba_set.gelu(x)
    return reference.gelu(x)


def gelu_backward(x, grad_y):
    """grad_y * gelu'(x), tanh form (numpy/gelu.py, numba/gelu.py)."""
    if _numba_active:
        return _numba_set.gelu_backward(x, grad_y)
    return reference.gelu_backward(x, grad_y)


def cross_entropy(logits, targets, ignore_index):
    """(mean loss, logsumexp of each row) (numpy/cross_entropy.py, numba/cross_entropy.py)."""
    if _numba_active:
        return _numba_set.cross_entropy(logits, targets, ignore_index)
    return reference.cross_entropy(logits, targets, ignore_index)


def cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss):
    """d loss / d logits (numpy/cross_entropy.py, numba/cross_entropy.py)."""
    if _numba_active:
        return _numba_set.cross_entropy_backward(logits, targets, logsumexp, ignore_index,
                                                 grad_loss)
    return reference.cross_entropy_backward(logits, targets, logsumexp, ignore_index, grad_loss)


def embedding_backward(indices, grad, num_embeddings):
    """grad's rows summed into the rows named by indices (numpy/embedding.py, numba/embedding.py)."""
    if _numba_active:
        return _numba_set.embedding_backward(indices, grad, num_embeddings)
    return reference.embedding_backward(indices, grad, num_embeddings)


def adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW update of param and both moments, in place (numpy/adamw.py, numba/adamw.py)."""
    if _numba_active:
        return _numba_set.adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps,
                                     weight_decay, step)
    return reference.adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps,
                                weight_decay, step)


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """2-D convolution, NCHW; conv1d arrives with H = 1 (numpy/conv.py, numba/conv.py)."""
    if _numba_active:
        return _numba_set.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return reference.conv2d(x, weight, bias, stride, padding, dilation, groups)


def conv2d_backward_input(grad, weight, input_shape, stride, padding, dilation, groups):
    """d loss / d input of conv2d: the transposed convolution (numpy/conv.py, numba/conv.py)."""
    if _numba_active:
        return _numba_set.conv2d_backward_input(grad, weight, input_shape, stride, padding,
                                                dilation, groups)
    return reference.conv2d_backward_input(grad, weight, input_shape, stride, padding,
                                           dilation, groups)


def conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation, groups):
    """d loss / d weight of conv2d (numpy/conv.py, numba/conv.py)."""
    if _numba_active:
        return _numba_set.conv2d_backward_weight(grad, x, weight_shape, stride, padding,
                                                 dilation, groups)
    return reference.conv2d_backward_weight(grad, x, weight_shape, stride, padding, dilation,
                                            groups)


def unfold(x, kernel_size, dilation, padding, stride):
    """im2col, (N, C, H, W) -> (N, C kh kw, L) (numpy/conv.py, numba/conv.py)."""
    if _numba_active:
        return _numba_set.unfold(x, kernel_size, dilation, padding, stride)
    return reference.unfold(x, kernel_size, dilation, padding, stride)


def fold(cols, output_size, kernel_size, dilation, padding, stride):
    """col2im, unfold's adjoint (numpy/conv.py, numba/conv.py)."""
    if _numba_active:
        return _numba_set.fold(cols, output_size, kernel_size, dilation, padding, stride)
    return reference.fold(cols, output_size, kernel_size, dilation, padding, stride)


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(window maxima, their flat positions) (numpy/pool.py, numba/pool.py)."""
    if _numba_active:
        return _numba_set.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return reference.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_backward(grad, indices, input_shape):
    """grad added at each window's arg-max (numpy/pool.py, numba/pool.py)."""
    if _numba_active:
        return _numba_set.max_pool2d_backward(grad, indices, input_shape)
    return reference.max_pool2d_backward(grad, indices, input_shape)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Window means (numpy/pool.py, numba/pool.py)."""
    if _numba_active:
        return _numba_set.avg_pool2d(x, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad)
    return reference.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad):
    """grad spread evenly over each window (numpy/pool.py, numba/pool.py)."""
    if _numba_active:
        return _numba_set.avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding,
                                              ceil_mode, count_include_pad)
    return reference.avg_pool2d_backward(grad, input_shape, kernel_size, stride, padding,
                                         ceil_mode, count_include_pad)


def batch_norm(x, weight, bias, eps):
    """(y, mean, invstd, var) over the batch and spatial axes of x (N, C, L) (numpy/batch_norm.py,
    numba/batch_norm.py)."""
    if _numba_active:
        return _numba_set.batch_norm(x, weight, bias, eps)
    return reference.batch_norm(x, weight, bias, eps)


def batch_norm_backward(grad_y, x, weight, mean, invstd):
    """(grad_x, grad_weight, grad_bias) of batch_norm (numpy/batch_norm.py, numba/batch_norm.py)."""
    if _numba_active:
        return _numba_set.batch_norm_backward(grad_y, x, weight, mean, invstd)
    return reference.batch_norm_backward(grad_y, x, weight, mean, invstd)


def lstm_cell(gates, c_prev):
    """(h, c, activated gates) of one LSTM step after the products (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.lstm_cell(gates, c_prev)
    return reference.lstm_cell(gates, c_prev)


def lstm_cell_backward(grad_h, grad_c, activations, c_prev, c):
    """(grad_gates, grad_c_prev) of lstm_cell (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)
    return reference.lstm_cell_backward(grad_h, grad_c, activations, c_prev, c)


def gru_cell(gi, gh, h_prev):
    """(h, activated gates) of one GRU step after the products (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.gru_cell(gi, gh, h_prev)
    return reference.gru_cell(gi, gh, h_prev)


def gru_cell_backward(grad_h, activations, gh, h_prev):
    """(grad_gi, grad_gh, grad_h_prev) of gru_cell (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.gru_cell_backward(grad_h, activations, gh, h_prev)
    return reference.gru_cell_backward(grad_h, activations, gh, h_prev)


def lstm_sequence(gi, w_hh, h0, c0, reverse):
    """(hs, cs, activations) of one LSTM direction over a whole sequence, the input products
    done (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.lstm_sequence(gi, w_hh, h0, c0, reverse)
    return reference.lstm_sequence(gi, w_hh, h0, c0, reverse)


def lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh, reverse):
    """(grad_gates, grad_h0, grad_c0) of lstm_sequence (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh,
                                                 reverse)
    return reference.lstm_sequence_backward(grad_hs, grad_c, activations, cs, c0, w_hh, reverse)


def gru_sequence(gi, w_hh, b_hh, h0, reverse):
    """(hs, gh, activations) of one GRU direction over a whole sequence (numpy/rnn.py,
    numba/rnn.py)."""
    if _numba_active:
        return _numba_set.gru_sequence(gi, w_hh, b_hh, h0, reverse)
    return reference.gru_sequence(gi, w_hh, b_hh, h0, reverse)


def gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse):
    """(grad_gi, grad_gh, grad_h0) of gru_sequence (numpy/rnn.py, numba/rnn.py)."""
    if _numba_active:
        return _numba_set.gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse)
    return reference.gru_sequence_backward(grad_hs, activations, gh, hs, h0, w_hh, reverse)
