"""Benchmark conv2d forward + backward: tensorlite (Numba kernels) against torch eager.

One step is y = F.conv2d(x, weight, bias, padding=...) then y.backward(grad), at the shapes of
a LeNet-5 training step (its two convolutions at batch 64; the first one's input needs no
gradient, as in training) and two wider layers. Each framework runs in a fresh subprocess of
its own, so neither's thread pool is running while the other is timed; a process warms up
(first call compiles the Numba kernels, or loads them from the cache) and then times many
steps, and the table gives the median (and the minimum) in milliseconds.

    python benchmarks/bench_conv.py [--repeats 200] [--dtype float32] [--threads N]

Prints the CPU (family, model and name from /proc/cpuinfo), each framework's thread count,
and a markdown table. --threads limits both frameworks to N threads (torch.set_num_threads,
tensorlite.kernels.set_num_threads); on a machine shared with other jobs, one thread each
is the comparison least disturbed by them (a parallel loop waits for its slowest thread).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, N, C, H, W, O, k, padding, input needs a gradient)
SHAPES = [
    ("LeNet conv1 1->6 5x5 pad 2, 28x28", 64, 1, 28, 28, 6, 5, 2, False),
    ("LeNet conv2 6->16 5x5, 14x14", 64, 6, 14, 14, 16, 5, 0, True),
    ("3->32 3x3 pad 1, 32x32", 32, 3, 32, 32, 32, 3, 1, True),
    ("64->64 3x3 pad 1, 16x16", 16, 64, 16, 16, 64, 3, 1, True),
]
WARMUP = 10


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def run_torch(repeats, dtype, threads):
    import numpy as np
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    results = {}
    for name, n, c, h, w, o, k, padding, needs_x in SHAPES:
        rng = np.random.default_rng(0)
        x = torch.tensor(rng.standard_normal((n, c, h, w)).astype(dtype), requires_grad=needs_x)
        weight = torch.tensor(rng.standard_normal((o, c, k, k)).astype(dtype) * 0.1,
                              requires_grad=True)
        bias = torch.zeros(o, dtype=weight.dtype, requires_grad=True)
        grad = None
        times = []
        for step in range(WARMUP + repeats):
            x.grad = weight.grad = bias.grad = None
            started = time.perf_counter()
            y = F.conv2d(x, weight, bias, padding=padding)
            if grad is None:
                grad = torch.ones_like(y)
            y.backward(grad)
            if step >= WARMUP:
                times.append(time.perf_counter() - started)
        results[name] = times
    return results, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_tensorlite(repeats, dtype, threads):
    import numpy as np
    import tensorlite as tl
    import tensorlite.functional as F
    from tensorlite import kernels

    kernels.use("numba")
    if threads:
        kernels.set_num_threads(threads)
    results = {}
    for name, n, c, h, w, o, k, padding, needs_x in SHAPES:
        rng = np.random.default_rng(0)
        x = tl.Tensor(rng.standard_normal((n, c, h, w)).astype(dtype), requires_grad=needs_x)
        weight = tl.Tensor(rng.standard_normal((o, c, k, k)).astype(dtype) * 0.1,
                           requires_grad=True)
        bias = tl.Tensor(np.zeros(o, dtype), requires_grad=True)
        grad = None
        times = []
        for step in range(WARMUP + repeats):
            x.grad = weight.grad = bias.grad = None
            started = time.perf_counter()
            y = F.conv2d(x, weight, bias, padding=padding)
            if grad is None:
                grad = tl.Tensor(np.ones(y.shape, dtype))
            y.backward(grad)
            if step >= WARMUP:
                times.append(time.perf_counter() - started)
        results[name] = times
    return results, kernels.format_runtime_info()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both frameworks (default: each one's own)")
    parser.add_argument("--worker", choices=["torch", "tensorlite"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_torch if args.worker == "torch" else run_tensorlite
        results, runtime = run(args.repeats, args.dtype, args.threads)
        print(json.dumps({"results": results, "runtime": runtime}))
        return
    from bench_train import cpu_line  # this folder is on sys.path when run as a script
    print(f"CPU: {cpu_line()}")
    print(f"conv2d forward + backward, {args.dtype}, median (min) of {args.repeats} steps, ms; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    measured = {}
    for framework in ("tensorlite", "torch"):
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", framework, "--repeats",
             str(args.repeats), "--dtype", args.dtype, "--threads", str(args.threads)],
            cwd=ROOT, capture_output=True, text=True, check=True)
        report = json.loads(output.stdout.strip().splitlines()[-1])
        measured[framework] = report["results"]
        print(f"{framework}: {report['runtime']}")
    print("\n| shape | batch | tensorlite | torch | torch / tensorlite |")
    print("|---|---|---|---|---|")
    for name, n, *_ in SHAPES:
        ours, theirs = measured["tensorlite"][name], measured["torch"][name]
        print(f"| {name} | {n} | {1e3 * _median(ours):.3f} ({1e3 * min(ours):.3f}) | "
              f"{1e3 * _median(theirs):.3f} ({1e3 * min(theirs):.3f}) | "
              f"{_median(theirs) / _median(ours):.2f} |")


if __name__ == "__main__":
    main()
