"""LSTM language-model training step: tensorlite against torch eager, each in a fresh process.

    python benchmarks/bench_lstm.py                # 5 alternating rounds of 20 timed steps
    python benchmarks/bench_lstm.py --rounds 3 --steps 10
    python benchmarks/bench_lstm.py --profile      # tensorlite's per-op profile of one step

The model: embedding 64 -> 2-layer LSTM, hidden 256 -> linear head over a 65-symbol vocabulary;
batch 32 x 64 steps of random tokens, cross-entropy, Adam (lr 1e-3), float32. One training step
is forward + backward + optimizer step + zero_grad. As benchmarks/bench_train.py: every
framework runs in its own fresh subprocess, the frameworks take turns round after round
(tensorlite, torch, tensorlite, torch, ...) so a noisy moment on the shared machine hits each
alike; a process takes `--warmup` steps (the first includes Numba's compile or cache load) and
reports the median of `--steps` timed steps and its peak RSS. The table gives the median over
rounds of those medians, their range, and tensorlite's median over torch's from the same run.
Each round's line also prints the host's 1-minute load average, since the machine is shared.

Measured on an AMD EPYC, CPU family 25, model 17 (Zen 4), 2 logical CPUs, shared with other
jobs (5 rounds x 10 steps each):

    load average ~2.3 (3 rounds):  tensorlite 103.8 ms, torch 83.7 ms (medians): 1.24x
    load average ~1 (first three rounds of an earlier run, before the forward products read
    W_hh^T row-major):  tensorlite 87.6-92.2 ms, torch 65.0-92.4 ms
    load average 4-6 (two whole runs):  tensorlite 350 / 359 ms, torch 632 / 671 ms: 0.55x / 0.54x

On a quiet machine torch is 1.0-1.35x faster (1.24x in the latest run); on a busy one
tensorlite is about twice as fast: its sequence kernels make one parallel launch per layer and direction, with no barrier
between time steps, where torch's threads meet at every step. Where the time goes (the profile,
--profile): the LSTM layers' op takes 93% of a step, 40% forward and 60% backward; inside a layer
the recurrent loops (the per-step products with W_hh and the cells, forward and backward) and
the four large products (the input projection, grad x, grad W_ih, grad W_hh) take about half
each: 43-63 ms and 54-70 ms of CPU time for a layer of input 256 on the busy machine.
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
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from bench_train import cpu_info, peak_rss  # noqa: E402  (after the path set-up)

VOCAB, EMBED, HIDDEN, LAYERS, BATCH, STEPS_T = 65, 64, 256, 2, 32, 64


def _batches(seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    while True:
        tokens = rng.integers(0, VOCAB, size=(BATCH, STEPS_T + 1))
        yield tokens[:, :-1].T.copy(), tokens[:, 1:].T.copy()  # (T, B): time-major


class TensorliteLM:
    def __init__(self):
        import tensorlite as tl
        from tensorlite.nn.rnn import LSTM
        tl.manual_seed(0)
        self.tl = tl
        self.embedding = tl.nn.Embedding(VOCAB, EMBED)
        self.lstm = LSTM(EMBED, HIDDEN, LAYERS)
        self.head = tl.nn.Linear(HIDDEN, VOCAB)
        self.parameters = [p for m in (self.embedding, self.lstm, self.head)
                           for p in m.parameters()]
        self.optimizer = tl.optim.Adam(self.parameters, lr=1e-3)
        self.data = _batches()

    def step(self):
        x, y = next(self.data)
        output, _ = self.lstm(self.embedding(x))  # (T, B, H)
        logits = self.head(output)  # (T, B, V)
        loss = self.tl.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()


class TorchLM:
    def __init__(self):
        import torch
        torch.manual_seed(0)
        self.torch = torch
        self.embedding = torch.nn.Embedding(VOCAB, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, LAYERS)
        self.head = torch.nn.Linear(HIDDEN, VOCAB)
        self.parameters = [p for m in (self.embedding, self.lstm, self.head)
                           for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=1e-3)
        self.data = _batches()

    def step(self):
        torch = self.torch
        x, y = (torch.from_numpy(a) for a in next(self.data))
        output, _ = self.lstm(self.embedding(x))
        logits = self.head(output)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()


def worker(framework, steps, warmup):
    started = time.perf_counter()
    model = TensorliteLM() if framework == "tensorlite" else TorchLM()
    model.step()
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        model.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model.step()
        times.append(time.perf_counter() - t0)
    return {"framework": framework, "median_ms": 1e3 * statistics.median(times),
            "first_step_s": first, "loss": loss, **peak_rss()}


def profile():
    import tensorlite as tl
    model = TensorliteLM()
    for _ in range(3):
        model.step()
    with tl.profiler.profile() as prof:
        for _ in range(3):
            model.step()
    print(prof.table() if hasattr(prof, "table") else prof)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--worker", choices=["tensorlite", "torch"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup)))
        return
    if args.profile:
        profile()
        return
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} (family {cpu['family']}, model {cpu['model_number']}, "
          f"avx512f {cpu['flags_avx512f']}), {os.cpu_count()} logical CPUs")
    print(f"model: embedding {EMBED}, {LAYERS}-layer LSTM hidden {HIDDEN}, vocabulary {VOCAB}, "
          f"batch {BATCH} x {STEPS_T} steps, Adam, float32; {args.rounds} rounds x "
          f"{args.steps} timed steps per fresh process")
    runs = {"tensorlite": [], "torch": []}
    for round_index in range(args.rounds):
        for framework in runs:
            command = [sys.executable, os.path.abspath(__file__), "--worker", framework,
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"{framework} worker failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[framework].append(result)
            print(f"  round {round_index + 1} {framework:10s} {result['median_ms']:7.1f} ms/step "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB, load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    medians = {f: statistics.median(r["median_ms"] for r in rs) for f, rs in runs.items()}
    print()
    print("| framework | ms/step (median) | range | first step s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for framework, rs in runs.items():
        values = [r["median_ms"] for r in rs]
        print(f"| {framework} | {medians[framework]:.1f} | {min(values):.1f}-{max(values):.1f} "
              f"| {statistics.median(r['first_step_s'] for r in rs):.2f} "
              f"| {statistics.median(r['peak_rss_mb'] for r in rs):.0f} |")
    print(f"\ntensorlite / torch: {medians['tensorlite'] / medians['torch']:.2f}x")


if __name__ == "__main__":
    main()
