"""Memory for compute: activation checkpointing of every transformer block, ours and torch's.

    python benchmarks/bench_checkpoint.py                  # gpt-mini, block 1024, batch 8
    python benchmarks/bench_checkpoint.py --block-size 256 --batch-size 4 --rounds 1   # quick

Four arms, each in a fresh process, alternating round by round: tensorlite with and without
``GPT.gradient_checkpointing_enable()`` (``tl.utils.checkpoint`` around each block), torch with
and without ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`` around each
block. Each process trains the bench_train gpt-mini model (6 layers, 6 heads, 384 wide) on random
tokens and reports the median step time and its peak resident memory (VmHWM). The table gives
both, and the cost of checkpointing as (step with) / (step without) - 1 per framework.
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

ARMS = ("tensorlite", "tensorlite-checkpoint", "torch", "torch-checkpoint")


def worker(arm, block_size, batch_size, steps, warmup):
    from bench_train import TensorliteRunner, TorchRunner, model_settings, peak_rss
    settings = dict(model_settings("gpt-mini"), block_size=block_size)
    checkpointed = arm.endswith("-checkpoint")
    if arm.startswith("tensorlite"):
        runner = TensorliteRunner(settings, batch_size)
        if checkpointed:
            runner.model.gradient_checkpointing_enable()
    else:
        import torch
        import torch.utils.checkpoint
        runner = TorchRunner(settings, batch_size)
        if checkpointed:
            for block in runner.model.transformer.h:
                block.forward = _checkpointed(torch, block.forward)
    for _ in range(warmup):
        runner.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "peak_rss_mb": peak_rss()["peak_rss_mb"]}


def _checkpointed(torch, forward):
    def run(x):
        return torch.utils.checkpoint.checkpoint(forward, x, use_reentrant=False)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.block_size, args.batch_size, args.steps,
                                args.warmup)))
        return 0
    from bench_train import cpu_line
    arms = args.arms.split(",")
    results = {arm: [] for arm in arms}
    for _ in range(args.rounds):
        for arm in arms:
            command = [sys.executable, os.path.abspath(__file__), "--worker", arm,
                       "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()
                print(f"{arm}: {tail[-1] if tail else done.returncode}", file=sys.stderr)
                continue
            results[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"CPU: {cpu_line()}; gpt-mini, block {args.block_size}, batch "
          f"{args.batch_size}; {args.rounds} alternating rounds of {args.steps} timed steps\n")
    print("| arm | s/step (median) | peak RSS MB (median) | checkpointing costs |")
    print("| --- | --- | --- | --- |")
    summary = {}
    for arm in arms:
        runs = results[arm]
        if not runs:
            print(f"| {arm} | failed | | |")
            continue
        summary[arm] = {"step_s": statistics.median(r["step_s"] for r in runs),
                        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}
    for arm in arms:
        if arm not in summary:
            continue
        base = summary.get(arm.replace("-checkpoint", ""))
        cost = (f"{summary[arm]['step_s'] / base['step_s'] - 1:+.0%} time"
                if arm.endswith("-checkpoint") and base else "")
        print(f"| {arm} | {summary[arm]['step_s']:.2f} | {summary[arm]['peak_rss_mb']:.0f} | {cost} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_line(), "runs": results, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
