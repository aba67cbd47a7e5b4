"""The Numba kernels give the same bits whether compiled in the process or loaded from cache.

Every public kernel of the jitted set runs on fixed, seeded inputs of the GPT's shapes
(float32 and float64) in a subprocess with an empty NUMBA_CACHE_DIR (cold: every kernel
compiles and is written to the cache), then in a second subprocess that loads them from
that cache (warm). The promise of tensorlite.kernels -- same machine, kernel set and
thread count give the same bytes, cold or warm -- is checked on all outputs. The warm
process then runs everything again on one thread, which must agree too, except on the
outputs documented as depending on the thread count.

Run as a script (``python tests/test_kernel_reproducibility.py OUT.npz [OUT_1T.npz]``)
it writes the outputs of one such run (and of the one-thread rerun).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

# Kernels whose bytes may depend on the number of threads (the promise's "same thread
# count"): layer_norm_backward sums grad_weight and grad_bias over one chunk of rows per
# thread, and the matrix products give BLAS one block per thread, whose size can change
# how BLAS blocks (and so rounds) the products.
# conv2d_backward_weight adds one partial sum per thread's chunk of images.
THREAD_DEPENDENT_KERNELS = {"matmul", "matmul_backward", "linear", "linear_backward",
                            "conv2d_backward_weight"}
THREAD_DEPENDENT = {"layer_norm_backward/grad_weight", "layer_norm_backward/grad_bias"}

B, T, C, N_HEAD, VOCAB = 2, 64, 128, 4, 65  # the GPT's shapes, with a smaller batch
ROWS, HEAD, BH = B * T, C // N_HEAD, B * N_HEAD


def kernel_outputs(dtype):
    """{'kernel/output': array} for every public kernel of the jitted set."""
    from tensorlite import kernels
    from tensorlite.kernels import numba as k, numpy as reference

    kernels.use("numba")
    rng = np.random.default_rng(1234)

    def randn(*shape):
        return rng.standard_normal(shape).astype(dtype)

    out = {}
    x, w1, w2 = randn(ROWS, C), randn(C, 4 * C), randn(4 * C, C)
    out["matmul/out"] = k.matmul(x, w1)
    out["matmul/out_transposed"] = k.matmul(x, randn(3 * C, C).T)
    q, kt = randn(BH, T, HEAD), randn(BH, HEAD, T)
    out["matmul/out_batched"] = k.matmul(q, kt)
    out["matmul_backward/grad_a"], out["matmul_backward/grad_b"] = k.matmul_backward(
        randn(ROWS, C), randn(ROWS, 4 * C), w2)
    out["linear/out"] = k.linear(x, randn(3 * C, C), randn(3 * C))
    (out["linear_backward/grad_x"], out["linear_backward/grad_weight"],
     out["linear_backward/grad_bias"]) = k.linear_backward(randn(ROWS, 4 * C), x, w1.T)
    logits, grad = randn(ROWS, VOCAB), randn(ROWS, VOCAB)
    out["softmax/out"] = k.softmax(logits)
    out["softmax_backward/out"] = k.softmax_backward(reference.softmax(logits), grad)
    out["log_softmax/out"] = k.log_softmax(logits)
    out["log_softmax_backward/out"] = k.log_softmax_backward(reference.log_softmax(logits),
                                                             grad)
    packed = randn(B, T, 3, N_HEAD, HEAD)  # a q/k/v projection, heads read in place
    q, key, value = (packed[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    out["attention/out"], out["attention/logsumexp"] = k.attention(q, key, value, HEAD ** -0.5,
                                                                   True)
    (out["attention_backward/grad_q"], out["attention_backward/grad_k"],
     out["attention_backward/grad_v"]) = k.attention_backward(
        randn(B, N_HEAD, T, HEAD), q, key, value,
        reference.attention(q, key, value, HEAD ** -0.5, True)[1], HEAD ** -0.5, True)
    weight, bias = randn(C), randn(C)
    y, mean, rstd = k.layer_norm(x, weight, bias, 1e-5)
    out["layer_norm/out"], out["layer_norm/mean"], out["layer_norm/rstd"] = y, mean, rstd
    _, mean, rstd = reference.layer_norm(x, weight, bias, 1e-5)
    (out["layer_norm_backward/grad_x"], out["layer_norm_backward/grad_weight"],
     out["layer_norm_backward/grad_bias"]) = k.layer_norm_backward(randn(ROWS, C), x, weight,
                                                                    mean, rstd)
    hidden = randn(ROWS, 4 * C)
    out["gelu/out"] = k.gelu(hidden)
    out["gelu_backward/out"] = k.gelu_backward(hidden, randn(ROWS, 4 * C))
    targets = rng.integers(0, VOCAB, ROWS)
    targets[::7] = -100  # some ignored rows
    loss, logsumexp = k.cross_entropy(logits, targets, -100)
    out["cross_entropy/loss"], out["cross_entropy/logsumexp"] = np.float64(loss), logsumexp
    out["cross_entropy_backward/out"] = k.cross_entropy_backward(
        logits, targets, reference.cross_entropy(logits, targets, -100)[1], -100, 1.0)
    out["embedding_backward/out"] = k.embedding_backward(
        rng.integers(0, VOCAB, (B, T)), randn(B, T, C), VOCAB)
    param, exp_avg, exp_avg_sq = randn(20_003), randn(20_003), np.abs(randn(20_003))
    k.adamw_step(param, randn(20_003), exp_avg, exp_avg_sq, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7)
    out["adamw_step/param"], out["adamw_step/exp_avg"] = param, exp_avg
    out["adamw_step/exp_avg_sq"] = exp_avg_sq
    convolution_and_pooling(out, k, randn)
    recurrent_cells(out, k, randn)
    return out


def convolution_and_pooling(out, k, randn):
    """The convolution family on a LeNet-like layer (batch 4, 6 -> 16 channels, 5x5 on 12x12;
    a strided, dilated, grouped one beside it), pooling and batch norm."""
    x, weight, bias = randn(4, 6, 12, 12), randn(16, 6, 5, 5), randn(16)
    geometry = ((1, 1), (2, 2), (1, 1), 1)  # stride, padding, dilation, groups
    out["conv2d/out"] = k.conv2d(x, weight, bias, *geometry)
    out["conv2d/out_strided_grouped"] = k.conv2d(x, randn(8, 3, 3, 3), None, (2, 2), (1, 1),
                                                 (2, 2), 2)
    grad = randn(4, 16, 12, 12)
    out["conv2d_backward_input/out"] = k.conv2d_backward_input(grad, weight, x.shape, *geometry)
    out["conv2d_backward_weight/out"] = k.conv2d_backward_weight(grad, x, weight.shape, *geometry)
    cols = k.unfold(x, (3, 3), (1, 1), (1, 1), (2, 2))
    out["unfold/out"] = cols
    out["fold/out"] = k.fold(cols, (12, 12), (3, 3), (1, 1), (1, 1), (2, 2))
    pooled, indices = k.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    out["max_pool2d/out"], out["max_pool2d/indices"] = pooled, indices
    out["max_pool2d_backward/out"] = k.max_pool2d_backward(randn(*pooled.shape), indices,
                                                           x.shape)
    averaged = k.avg_pool2d(x, (3, 3), (2, 2), (1, 1), True, False)
    out["avg_pool2d/out"] = averaged
    out["avg_pool2d_backward/out"] = k.avg_pool2d_backward(
        randn(*averaged.shape), x.shape, (3, 3), (2, 2), (1, 1), True, False)
    rows = x.reshape(4, 6, 144)
    y, mean, invstd, var = k.batch_norm(rows, randn(6), randn(6), 1e-5)
    out["batch_norm/out"], out["batch_norm/mean"], out["batch_norm/invstd"] = y, mean, invstd
    out["batch_norm/var"] = var
    (out["batch_norm_backward/grad_x"], out["batch_norm_backward/grad_weight"],
     out["batch_norm_backward/grad_bias"]) = k.batch_norm_backward(randn(4, 6, 144), rows,
                                                                   randn(6), mean, invstd)


def recurrent_cells(out, k, randn):
    """One LSTM and one GRU step of the char-LSTM's shapes (batch 32, hidden 256)."""
    batch, hidden = 32, 256
    c_prev = randn(batch, hidden)
    h, c, activations = k.lstm_cell(randn(batch, 4 * hidden), c_prev)
    out["lstm_cell/h"], out["lstm_cell/c"], out["lstm_cell/activations"] = h, c, activations
    (out["lstm_cell_backward/grad_gates"], out["lstm_cell_backward/grad_c_prev"]) = \
        k.lstm_cell_backward(randn(batch, hidden), randn(batch, hidden), activations, c_prev, c)
    h_prev, gh = randn(batch, hidden), randn(batch, 3 * hidden)
    h, activations = k.gru_cell(randn(batch, 3 * hidden), gh, h_prev)
    out["gru_cell/h"], out["gru_cell/activations"] = h, activations
    (out["gru_cell_backward/grad_gi"], out["gru_cell_backward/grad_gh"],
     out["gru_cell_backward/grad_h_prev"]) = k.gru_cell_backward(randn(batch, hidden),
                                                                 activations, gh, h_prev)
    # the whole-sequence loops: 8 steps, forward in time and reversed
    steps, h0, c0, w_hh = 8, randn(batch, hidden), randn(batch, hidden), randn(4 * hidden, hidden)
    for reverse, tag in ((False, ""), (True, "_reverse")):
        hs, cs, activations = k.lstm_sequence(randn(steps, batch, 4 * hidden), w_hh, h0, c0,
                                              reverse)
        out[f"lstm_sequence/hs{tag}"], out[f"lstm_sequence/cs{tag}"] = hs, cs
        out[f"lstm_sequence/activations{tag}"] = activations
        (out[f"lstm_sequence_backward/grad_gates{tag}"], out[f"lstm_sequence_backward/grad_h0{tag}"],
         out[f"lstm_sequence_backward/grad_c0{tag}"]) = k.lstm_sequence_backward(
            randn(steps, batch, hidden), randn(batch, hidden), activations, cs, c0, w_hh, reverse)
    w_hh, b_hh = randn(3 * hidden, hidden), randn(3 * hidden)
    hs, gh, activations = k.gru_sequence(randn(steps, batch, 3 * hidden), w_hh, b_hh, h0, False)
    out["gru_sequence/hs"], out["gru_sequence/gh"], out["gru_sequence/activations"] = \
        hs, gh, activations
    (out["gru_sequence_backward/grad_gi"], out["gru_sequence_backward/grad_gh"],
     out["gru_sequence_backward/grad_h0"]) = k.gru_sequence_backward(
        randn(steps, batch, hidden), activations, gh, hs, h0, w_hh, False)


def run_all(path):
    outputs = {}
    for dtype in (np.float32, np.float64):
        for name, value in kernel_outputs(dtype).items():
            outputs[f"{name}/{np.dtype(dtype).name}"] = np.asarray(value)
    np.savez(path, **outputs)


def load(path):
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def run_in_subprocess(cache_dir, *paths):
    """Run every kernel in a fresh process on 2 threads, writing paths[0]; with a second
    path, run them all again on 1 thread (kernels.set_num_threads) into it."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_NUM_THREADS="2",
               TENSORLITE_KERNELS="numba")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, os.path.abspath(__file__)] + [str(p) for p in paths],
                   env=env, check=True, timeout=600)
    return [load(path) for path in paths]


def differing(first, second):
    assert first.keys() == second.keys()
    return sorted(name for name in first
                  if first[name].dtype != second[name].dtype
                  or first[name].shape != second[name].shape
                  or first[name].tobytes() != second[name].tobytes())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("numba")
    folder = tmp_path_factory.mktemp("reproducibility")
    cache = folder / "numba_cache"
    cold, = run_in_subprocess(cache, folder / "cold.npz")
    assert any(cache.rglob("*.nbi")), "the cold run wrote no kernel cache"
    warm, one_thread = run_in_subprocess(cache, folder / "warm.npz", folder / "one_thread.npz")
    return cold, warm, one_thread


def test_every_public_kernel_is_covered(runs):
    from tensorlite.kernels import numpy as reference
    public = {name for name in dir(reference)
              if callable(getattr(reference, name)) and not name.startswith("_")}
    covered = {name.split("/")[0] for name in runs[0]}
    assert public <= covered | {"np"}, public - covered


def test_cold_and_warm_kernels_give_identical_bytes(runs):
    cold, warm, _ = runs
    # 79 outputs of 37 kernels, in float32 and float64
    assert len(cold) == 158
    assert differing(cold, warm) == []


def test_another_thread_count_changes_only_the_documented_outputs(runs):
    cold, _, one_thread = runs
    allowed = {f"{name}/{dtype}" for name in THREAD_DEPENDENT
               for dtype in ("float32", "float64")}
    allowed |= {name for name in cold if name.split("/")[0] in THREAD_DEPENDENT_KERNELS}
    assert set(differing(cold, one_thread)) <= allowed


if __name__ == "__main__":
    run_all(sys.argv[1])
    if len(sys.argv) > 2:
        from tensorlite import kernels
        kernels.set_num_threads(1)
        run_all(sys.argv[2])
