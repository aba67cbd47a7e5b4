"""Second order on a tiny GPT in float64: the cost of a Hessian-vector product, and sharpness.

    python benchmarks/bench_hessian.py                    # tiny preset's shape, 16 x 32 tokens
    python benchmarks/bench_hessian.py --repeats 20 --power-iters 30 --train-steps 200

(a) Cost. One Hessian-vector product of the training loss with respect to every parameter
    (`tl.func.hvp`: forward, recorded backward, backward through the recording) against one
    first-order training step (forward + backward), both on the same batch of real tokens from
    the default corpus; medians over `--repeats`, and the ratio hvp / step. Theory says about 3 to
    4 (Pearlmutter 1994: a Hessian-vector product costs a small constant times a gradient).

(b) Sharpness. The top eigenvalue of the Hessian of that loss, by power iteration on hvp:
    v <- H v / |H v|, with the Rayleigh quotient v.H v printed at every step so its convergence
    can be read off. The model is first trained for `--train-steps` AdamW steps (a freshly
    initialised GPT sits on a flat plateau), in float64 throughout.

Timings are only comparable on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorlite as tl  # noqa: E402  (first: it decides the OpenBLAS kernel set)
import numpy as np  # noqa: E402

from tensorlite.models.data import TokenDataset, encode_corpus, load_text  # noqa: E402
from tensorlite.models.gpt import GPT, GPTConfig  # noqa: E402
from tensorlite.models.tokenizer import CharTokenizer  # noqa: E402
from tensorlite.models.train import PRESETS  # noqa: E402
from tensorlite import func  # noqa: E402


def build(preset, batch_size, seed):
    """A float64 GPT of the preset's shape and one batch (x, y) of real tokens."""
    text, _ = load_text(None)
    tokenizer = CharTokenizer(text)
    dataset = TokenDataset(encode_corpus(text, tokenizer))
    settings = PRESETS[preset]
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=settings["block_size"],
                       n_layer=settings["n_layer"], n_head=settings["n_head"],
                       n_embd=settings["n_embd"], dropout=0.0)
    tl.manual_seed(seed)
    model = GPT(config, dtype=np.float64)
    rng = np.random.default_rng(seed)
    batch_size = settings["batch_size"] if batch_size is None else batch_size
    return model, dataset, rng, batch_size, config.block_size


def train(model, dataset, rng, batch_size, block_size, steps):
    """A few AdamW steps so that the Hessian is measured somewhere interesting."""
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.99))
    for step in range(steps):
        x, y = dataset.get_batch("train", batch_size, block_size, rng)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  train step {step:4d}  loss {loss.item():.4f}")


def loss_of_parameters(model, names, x, y):
    """The batch loss as a function of the parameters (what tl.func differentiates)."""
    def loss(*parameters):
        _, value = func.functional_call(model, dict(zip(names, parameters)), (x, y))
        return value
    return loss


def seconds(work):
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def alternating_seconds(first, second, repeats):
    """Time `first` and `second` alternately, so that both meet the same machine (a shared
    machine's speed drifts); returns both lists of times and the per-pair ratios second/first."""
    times_first, times_second = [], []
    for _ in range(repeats):
        times_first.append(seconds(first))
        times_second.append(seconds(second))
    return times_first, times_second, [b / a for a, b in zip(times_first, times_second)]


def summary(times):
    return statistics.median(times), min(times), max(times)


def unit(vectors):
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in vectors))
    return [v / norm for v in vectors]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--power-iters", type=int, default=20)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kernels", choices=("numba", "numpy"), default=None)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.power_iters < 1 or args.train_steps < 0:
        p.error("--repeats and --power-iters must be >= 1, --train-steps >= 0")
    if args.kernels:
        tl.kernels.use(args.kernels)

    model, dataset, rng, batch_size, block_size = build(args.preset, args.batch_size, args.seed)
    names, parameters = zip(*model.named_parameters())
    n_params = sum(p.numel() for p in parameters)
    print(f"GPT '{args.preset}' shape in float64: {n_params:,} parameters, batch {batch_size} x "
          f"{block_size} tokens, kernels {tl.kernels.active()}")
    if args.train_steps:
        print(f"training {args.train_steps} AdamW steps first:")
        train(model, dataset, rng, batch_size, block_size, args.train_steps)
    x, y = dataset.get_batch("train", batch_size, block_size, rng)
    loss = loss_of_parameters(model, names, x, y)

    # (a) cost of one hvp against one first-order step
    def first_order_step():
        model.zero_grad()
        _, value = model(x, y)
        value.backward()

    tangent = tuple(unit([np.random.default_rng(args.seed).standard_normal(p.shape)
                          for p in parameters]))

    def hessian_vector_product():
        return func.hvp(loss, tuple(p.detach() for p in parameters), tangent)

    first_order_step(), hessian_vector_product()  # warm-up: Numba compiles, caches fill
    step_times, hvp_times, ratios = alternating_seconds(first_order_step, hessian_vector_product,
                                                        args.repeats)
    step_time, hvp_time = summary(step_times), summary(hvp_times)
    print("\n(a) cost, median [min, max] over", args.repeats, "alternating repeats")
    print(f"  first-order step (forward + backward): {step_time[0] * 1e3:8.2f} ms "
          f"[{step_time[1] * 1e3:.2f}, {step_time[2] * 1e3:.2f}]")
    print(f"  hvp (forward + 2 backward passes)    : {hvp_time[0] * 1e3:8.2f} ms "
          f"[{hvp_time[1] * 1e3:.2f}, {hvp_time[2] * 1e3:.2f}]")
    print(f"  ratio hvp / step, median of per-pair ratios: {statistics.median(ratios):.2f}x "
          f"[{min(ratios):.2f}, {max(ratios):.2f}]")

    # (b) sharpness: power iteration on v -> H v
    print(f"\n(b) top Hessian eigenvalue by power iteration ({args.power_iters} iterations)")
    v = list(tangent)
    previous = None
    for iteration in range(1, args.power_iters + 1):
        _, hv = func.hvp(loss, tuple(p.detach() for p in parameters), tuple(v))
        hv = [h.data for h in hv]
        rayleigh = sum(float(np.sum(a * b)) for a, b in zip(v, hv))  # v.Hv, |v| = 1
        change = "" if previous is None else f"  relative change {abs(rayleigh - previous) / abs(rayleigh):.2e}"
        print(f"  iter {iteration:3d}  v.Hv = {rayleigh:.6f}{change}")
        previous = rayleigh
        v = unit(hv)
    print(f"  sharpness (largest |eigenvalue|) ~ {previous:.6f}")


if __name__ == "__main__":
    main()
