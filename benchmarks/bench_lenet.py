"""LeNet-5 training step: tensorlite against PyTorch eager, each in its own fresh process.

    python benchmarks/bench_lenet.py                    # 5 alternating rounds, 40 timed steps each
    python benchmarks/bench_lenet.py --rounds 3 --steps 20
    python benchmarks/bench_lenet.py --threads 1        # both frameworks on one thread
    python benchmarks/bench_lenet.py --profile          # tensorlite's per-op profile of a step

The model is LeNet-5 as usually written for 28x28 inputs: Conv(1->6, 5x5, padding 2), ReLU,
MaxPool 2, Conv(6->16, 5x5), ReLU, MaxPool 2, Flatten, Linear 400->120, ReLU, 120->84, ReLU,
84->10. A step is forward + cross-entropy + backward + Adam (lr 1e-3) on a batch of 64 random
28x28 images with random labels (float32; the same four batches, cycled, in both frameworks).

Method, as benchmarks/bench_train.py: every measurement is a fresh subprocess that imports one
framework only, builds the model, takes ``--warmup`` steps (the first includes Numba's
compile and is reported as "first step") and times ``--steps`` steps one by one; the frameworks
take turns round after round (tensorlite, torch, tensorlite, torch, ...) so a noisy moment on the
shared machine hits both alike. Reported per framework: the median over processes of each
process's median step (with the min-max of those medians), the first step, and the peak RSS
(VmHWM), and the CPU time per timed step (all threads; a waiting thread that spins counts);
then the ratio tensorlite / torch of the medians from the same run, and the CPU's
model name, family and model from /proc/cpuinfo. Both frameworks run with their default thread
counts (what a user gets) unless ``--threads N`` sets both (``torch.set_num_threads``,
``tensorlite.kernels.set_num_threads``): on a machine busy with other work, a framework whose
threads wait on each other loses more than one that runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_train import cpu_info, peak_rss, run_script_worker  # noqa: E402  (the machine, as every benchmark reports it)

BATCH_SIZE, IMAGE, CLASSES, LEARNING_RATE = 64, 28, 10, 1e-3
FRAMEWORKS = ("tensorlite", "torch")


def lenet(nn):
    """LeNet-5 from a torch.nn-like namespace (torch.nn or tensorlite.nn): one definition for
    both frameworks."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, CLASSES),
    )


def batches(count=4, seed=0):
    """`count` (images, labels) NumPy batches, the same for every framework."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH_SIZE, 1, IMAGE, IMAGE)).astype(np.float32),
             rng.integers(0, CLASSES, size=BATCH_SIZE).astype(np.int64)) for _ in range(count)]


def make_step(framework: str, seed: int = 0, threads=None):
    """A function taking one training step and returning the loss, for `framework`; the
    model is built inside, so each process imports one framework only."""
    if framework == "tensorlite":
        sys.path.insert(0, ROOT)
        import tensorlite as lib
        import tensorlite.nn.functional as F
        if threads:
            lib.kernels.set_num_threads(threads)
        data = [(lib.tensor(x), lib.tensor(y)) for x, y in batches()]
    elif framework == "torch":
        import torch as lib
        import torch.nn.functional as F
        if threads:
            lib.set_num_threads(threads)
        data = [(lib.from_numpy(x), lib.from_numpy(y)) for x, y in batches()]
    else:
        raise ValueError(f"unknown framework {framework!r}; choose from {FRAMEWORKS}")
    lib.manual_seed(seed)
    model = lenet(lib.nn)
    optimizer = lib.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    counter = iter(range(1 << 62))

    def step():
        x, y = data[next(counter) % len(data)]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# ---------------------------------------------------------------------------------------------
# The machine and the process
# ---------------------------------------------------------------------------------------------

def load_average() -> str:
    """The 1-minute load average (other work on the machine), or '?' where unreadable."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def framework_info(framework: str) -> str:
    if framework == "tensorlite":
        import tensorlite as tl
        return f"tensorlite {tl.__version__}, {tl.kernels.format_runtime_info()}"
    import torch
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------------
# Worker: one framework, one process, JSON on the last stdout line
# ---------------------------------------------------------------------------------------------

def worker(framework: str, steps: int, warmup: int, threads=None) -> dict:
    started = time.perf_counter()
    step = make_step(framework, threads=threads)
    built = time.perf_counter()
    first_loss = step()
    first_step = time.perf_counter() - built
    for _ in range(warmup - 1):
        step()
    seconds = []
    cpu_start = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    cpu_per_step = (time.process_time() - cpu_start) / steps
    return {"step_s": seconds, "cpu_s_per_step": cpu_per_step, "first_step_s": first_step,
            "build_s": built - started,
            "first_loss": first_loss, "peak_rss_mb": peak_rss()["peak_rss_mb"],
            "info": framework_info(framework)}


def run_worker(framework: str, steps: int, warmup: int, threads=None,
               timeout: float = 900) -> dict:
    extra = ["--threads", str(threads)] if threads else []
    return run_script_worker(__file__, framework, "--steps", str(steps), "--warmup", str(warmup),
                             *extra, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# The benchmark: alternating rounds of fresh processes
# ---------------------------------------------------------------------------------------------

def summarize(runs: list) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"]}
    medians = [1e3 * statistics.median(r["step_s"]) for r in ok]
    return {"median_ms": statistics.median(medians), "min_ms": min(medians),
            "max_ms": max(medians), "process_medians_ms": medians,
            "cpu_ms": 1e3 * statistics.median(r["cpu_s_per_step"] for r in ok),
            "first_step_ms": 1e3 * statistics.median(r["first_step_s"] for r in ok),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in ok),
            "first_loss": ok[0]["first_loss"], "info": ok[0]["info"],
            "errors": [r["error"] for r in runs if "error" in r]}


def markdown(summaries: dict, cpu: dict, command: str, loads=("?", "?")) -> str:
    lines = [f"`{command}`", "",
             f"CPU: {cpu['model']}, family {cpu['family']} model {cpu['model_number']}, "
             f"{os.cpu_count()} cores; 1-minute load average {loads[0]} before, {loads[1]} after",
             ""]
    for framework, summary in summaries.items():
        if "info" in summary:
            lines.append(f"- {summary['info']}")
    lines += ["", "| framework | ms/step, median (min-max of process medians) | CPU ms/step | "
              "first step ms | peak RSS MB | tensorlite / this |", "|---|---|---:|---:|---:|---:|"]
    subject = summaries.get("tensorlite", {})
    for framework, summary in summaries.items():
        if "error" in summary:
            lines.append(f"| {framework} | error: {summary['error']} | | | | |")
            continue
        ratio = ""
        if framework != "tensorlite" and "median_ms" in subject:
            ratio = f"{subject['median_ms'] / summary['median_ms']:.2f}"
        lines.append(f"| {framework} | {summary['median_ms']:.2f} ({summary['min_ms']:.2f}-"
                     f"{summary['max_ms']:.2f}) | {summary['cpu_ms']:.2f} | "
                     f"{summary['first_step_ms']:.0f} | "
                     f"{summary['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


def profile(steps: int, warmup: int, threads=None) -> str:
    """tensorlite's per-op profile (tensorlite.profiler) of `steps` steps after warm-up, in
    this process; figures are per step."""
    step = make_step("tensorlite", threads=threads)
    for _ in range(warmup):
        step()
    import tensorlite.profiler
    with tensorlite.profiler.profile() as prof:
        for _ in range(steps):
            step()
    return prof.table(scale=steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--frameworks", default="tensorlite,torch")
    parser.add_argument("--threads", type=int, help="threads for both (default: each's own)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--profile", action="store_true",
                        help="print tensorlite's per-op profile instead of timing both")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.threads)))
        return 0
    if args.profile:
        print(profile(args.steps, args.warmup, args.threads))
        return 0

    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown framework(s) {unknown}; choose from {list(FRAMEWORKS)}")
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, family {cpu['family']} model {cpu['model_number']}",
          file=sys.stderr)
    runs = {f: [] for f in frameworks}
    load_before = load_average()
    for round_index in range(args.rounds):
        for framework in frameworks:
            result = run_worker(framework, args.steps, args.warmup, args.threads)
            runs[framework].append(result)
            status = result.get("error") or f"{1e3 * statistics.median(result['step_s']):.2f} ms/step"
            print(f"  round {round_index + 1}/{args.rounds} {framework}: {status}",
                  file=sys.stderr, flush=True)
    summaries = {f: summarize(r) for f, r in runs.items()}
    command = "python benchmarks/bench_lenet.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    print(markdown(summaries, cpu, command.strip(), (load_before, load_average())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "frameworks": summaries, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
