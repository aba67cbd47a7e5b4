"""Forward + backward of max pooling and batch norm, tensorlite against torch eager (CPU).

    python benchmarks/bench_pool_norm.py [--repeats 200]

Cases: F.max_pool2d(x, 2) on the two pooled activations of a LeNet-5 training step at batch 64,
(64, 6, 28, 28) and (64, 16, 10, 10), and F.batch_norm in training mode with weight and bias on
(64, 32, 16, 16). Each timing is one forward and one backward (with a fixed upstream gradient)
through the framework's autograd, float32; the table gives the median of `--repeats` runs after
warm-up. Each framework runs in its own fresh subprocess, so neither's thread pool spins while
the other works, and the tensorlite process loads its Numba kernels from the on-disk cache (a
first run compiles them during warm-up). Threads: each framework's default (torch: one per core;
tensorlite: Numba's pool, BLAS on one thread).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [
    ("max_pool2d 2x2", (64, 6, 28, 28)),
    ("max_pool2d 2x2", (64, 16, 10, 10)),
    ("batch_norm train", (64, 32, 16, 16)),
]


def _median_ms(step, repeats, warmup=20):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def run_torch(repeats):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    results = {}
    for name, shape in CASES:
        x = torch.randn(shape, requires_grad=True)
        if name.startswith("max_pool2d"):
            grad = torch.randn(F.max_pool2d(x, 2).shape)

            def step():
                F.max_pool2d(x, 2).backward(grad)
        else:
            weight = torch.randn(shape[1], requires_grad=True)
            bias = torch.randn(shape[1], requires_grad=True)
            mean, var = torch.zeros(shape[1]), torch.ones(shape[1])
            grad = torch.randn(shape)

            def step():
                F.batch_norm(x, mean, var, weight, bias, training=True).backward(grad)
        results[f"{name} {shape}"] = _median_ms(step, repeats)
    return results, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_tensorlite(repeats):
    import numpy as np

    import tensorlite as tl
    from tensorlite import functional as F
    from tensorlite import kernels

    rng = np.random.default_rng(0)
    results = {}
    for name, shape in CASES:
        x = tl.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
        if name.startswith("max_pool2d"):
            grad = rng.standard_normal(F.max_pool2d(x, 2).shape).astype(np.float32)

            def step():
                F.max_pool2d(x, 2).backward(grad)
        else:
            weight = tl.Tensor(rng.standard_normal(shape[1]).astype(np.float32),
                               requires_grad=True)
            bias = tl.Tensor(rng.standard_normal(shape[1]).astype(np.float32),
                             requires_grad=True)
            mean = tl.Tensor(np.zeros(shape[1], np.float32))
            var = tl.Tensor(np.ones(shape[1], np.float32))
            grad = rng.standard_normal(shape).astype(np.float32)

            def step():
                F.batch_norm(x, mean, var, weight, bias, training=True).backward(grad)
        results[f"{name} {shape}"] = _median_ms(step, repeats)
    return results, kernels.format_runtime_info()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--worker", choices=["torch", "tensorlite"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_torch if args.worker == "torch" else run_tensorlite
        results, setup = run(args.repeats)
        print(json.dumps({"results": results, "setup": setup}))
        return
    measured = {}
    for framework in ("tensorlite", "torch"):
        done = subprocess.run([sys.executable, __file__, "--worker", framework, "--repeats",
                               str(args.repeats)], capture_output=True, text=True, check=True)
        measured[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    from bench_train import cpu_line  # this folder is on sys.path when run as a script
    print(f"CPU: {cpu_line()}")
    # Another process busy on the cores stalls both frameworks' thread pools many times over.
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    for framework, data in measured.items():
        print(f"{framework}: {data['setup']}")
    print(f"forward + backward, float32, median of {args.repeats} (ms)\n")
    print(f"| {'case':<36} | tensorlite | torch  | torch / tensorlite |")
    print(f"|{'-' * 38}|------------|--------|--------------------|")
    for case in measured["torch"]["results"]:
        ours = measured["tensorlite"]["results"][case]
        theirs = measured["torch"]["results"][case]
        print(f"| {case:<36} | {ours:10.3f} | {theirs:6.3f} | {theirs / ours:18.2f} |")


if __name__ == "__main__":
    main()
