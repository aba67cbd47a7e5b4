"""Per-op cost: what one small op costs in Python and bookkeeping, forward plus backward.

    python benchmarks/bench_per_op.py              # 5 alternating rounds, tensorlite and torch

The measurement (issue "speed round three"): the marginal time of one op in a chain of 100
additions of 8x8 float32 tensors, forward and backward, i.e. (time of a chain of 101 - time of a
chain of 1) / 100, each a median of 2000 repeats after 200 warm-up ones. At 8x8 the arithmetic is
nothing; what is measured is creating the op, recording it, walking it in backward and
accumulating the gradient of the tensor added each time. Each framework runs in its own fresh
process, alternating; torch on one thread (its default on this size anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def worker(framework):
    import numpy as np
    if framework == "tensorlite":
        import tensorlite as lib
        x = lib.tensor(np.ones((8, 8), np.float32), requires_grad=True)
        w = lib.tensor(np.ones((8, 8), np.float32), requires_grad=True)
    else:
        import torch as lib
        lib.set_num_threads(1)
        x, w = lib.ones(8, 8, requires_grad=True), lib.ones(8, 8, requires_grad=True)

    def step(n):
        y = x
        for _ in range(n):
            y = y + w
        y.sum().backward()

    medians = {}
    for n in (1, 101):
        for _ in range(200):
            step(n)
        times = []
        for _ in range(2000):
            start = time.perf_counter()
            step(n)
            times.append(time.perf_counter() - start)
        medians[n] = statistics.median(times)
    return (medians[101] - medians[1]) / 100 * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps({"us_per_op": worker(args.worker)}))
        return 0
    from bench_train import cpu_line
    results = {"tensorlite": [], "torch": []}
    for _ in range(args.rounds):
        for framework in results:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                   framework], capture_output=True, text=True, check=True)
            results[framework].append(json.loads(done.stdout.strip().splitlines()[-1])["us_per_op"])
    print(f"CPU: {cpu_line()}; load average {os.getloadavg()[0]:.2f}\n")
    print("| framework | us per op, median (min-max of processes) |")
    print("|---|---|")
    for framework, values in results.items():
        print(f"| {framework} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
    ratio = statistics.median(results["tensorlite"]) / statistics.median(results["torch"])
    print(f"\ntensorlite / torch: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
