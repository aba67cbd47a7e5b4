"""Data-parallel benchmark: the gradient allreduce measured here, scaling to many hosts predicted.

    python benchmarks/bench_distributed.py                    # measures everything (~1-2 min)
    python benchmarks/bench_distributed.py --step-ms shakespeare-cpu=23,gpt-mini=5900

Run it without mpiexec; it launches `mpiexec -n 2` itself (the [mpi] extra provides one).

1. Single-process step time of each config (forward + backward + clip + AdamW, all cores),
   measured, or given with --step-ms.
2. Under `mpiexec -n 2`, one thread per rank: the time of DistributedDataParallel's
   `sync_gradients()` over the model's gradient bytes (packing into buckets, MPI_Allreduce,
   averaging), and of one bare MPI_Allreduce of the same bytes; then, for the configs in
   --throughput-configs, tokens/s of 2 processes x 1 thread against 1 process x all threads,
   and whether overlapping pays: backward followed by the allreduce, against the allreduce
   started (MPI_Iallreduce) before backward and waited for after it.
3. The prediction. Each host is one machine like this one, keeps its per-host batch (weak
   scaling, as in Horovod's tables) and computes a step in the measured time T. The
   gradients are averaged with a ring allreduce, which costs

       C(N) = 2 (N-1)/N * bytes / bandwidth  +  2 (N-1) * latency * messages

   (each of the 2(N-1) ring steps moves bytes/N per host and pays one latency per message;
   sync_gradients() sends one message per bucket). Efficiency without overlap is T / (T + C); with the reduction perfectly hidden
   behind backward it would be T / max(T, C). Latencies are flags; the defaults, 50 us at
   10 Gbit/s (TCP over Ethernet) and 10 us at 100 Gbit/s (RDMA), are typical, not measured.

A Markdown table for the README goes to stdout; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import tensorlite as tl  # noqa: E402  (first: it decides the OpenBLAS kernel set)
import numpy as np  # noqa: E402

# The configs and the training step are bench_train's, so both benchmarks time the same thing.
from bench_train import CONFIGS, GRAD_CLIP, TensorliteRunner, model_settings  # noqa: E402
from tensorlite.models.gpt import GPT, GPTConfig  # noqa: E402

HOSTS = (2, 4, 8, 16, 32, 64)
BANDWIDTHS_GBIT = (10, 100)


def gradient_bytes(model):
    return sum(p.data.nbytes for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Step 1: the single-process step time (no MPI)
# ---------------------------------------------------------------------------------------------

def measure_step_ms(name, steps, warmup=2):
    runner = TensorliteRunner(model_settings(name), CONFIGS[name][1])
    for _ in range(warmup):
        runner.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Step 2: under mpiexec -n 2 (this script re-launched with --worker)
# ---------------------------------------------------------------------------------------------

class DataParallelRunner(TensorliteRunner):
    """TensorliteRunner's step with the gradients averaged over the ranks before clipping."""

    def __init__(self, settings, batch_size, rank):
        from tensorlite.nn.parallel import DistributedDataParallel
        super().__init__(settings, batch_size, seed=rank)  # each rank its own batches
        self.ddp = DistributedDataParallel(self.model)

    def step(self):
        x, y = next(self.data)
        _, loss = self.ddp(x, y)
        loss.backward()
        self.ddp.sync_gradients()
        tl.optim.clip_grad_norm_(self.parameters, GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()


def slowest_rank_ms(seconds):
    """The time of a collective is the time of its slowest rank."""
    from tensorlite import distributed as dist
    value = np.array([1e3 * seconds])
    dist.all_reduce(value, op="max")
    return float(value[0])


def time_collective(fn, repeats):
    from tensorlite import distributed as dist
    fn()  # warm-up: first-touch of the buffers, MPI's connection set-up
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        fn()
        times.append(slowest_rank_ms(time.perf_counter() - start))
    return statistics.median(times)


def overlap_experiment(runner, nbytes, repeats):
    """Does overlapping pay? The same backward followed by an allreduce of the gradient bytes,
    against the allreduce started (MPI_Iallreduce) before backward and waited for after it.
    Returns median slowest-rank times in ms: backward alone, sequential, overlapped."""
    from tensorlite import distributed as dist
    flat = np.ones(nbytes // 4, dtype=np.float32)
    backward, sequential, overlapped = [], [], []

    def loss():
        x, y = next(runner.data)
        return runner.ddp(x, y)[1]

    for _ in range(repeats):
        pending = loss()
        dist.barrier()
        start = time.perf_counter()
        pending.backward()
        backward_done = time.perf_counter()
        dist.all_reduce(flat)
        sequential.append(slowest_rank_ms(time.perf_counter() - start))
        backward.append(slowest_rank_ms(backward_done - start))
        runner.optimizer.zero_grad()

        pending = loss()
        dist.barrier()
        start = time.perf_counter()
        work = dist.all_reduce(flat, async_op=True)
        pending.backward()
        work.wait()
        overlapped.append(slowest_rank_ms(time.perf_counter() - start))
        runner.optimizer.zero_grad()
    return [statistics.median(v) for v in (backward, sequential, overlapped)]


def worker_main(args):
    from tensorlite import distributed as dist
    from tensorlite.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    rank = dist.get_rank()
    results = {"world_size": dist.get_world_size(), "configs": {}}
    for name in args.configs.split(","):
        settings, batch_size = model_settings(name), CONFIGS[name][1]
        tl.manual_seed(rank)
        model = GPT(GPTConfig(**settings))
        ddp = DistributedDataParallel(model)
        grads_rng = np.random.default_rng(rank)
        params = list(model.parameters())

        def sync():
            for p in params:  # fresh gradients each time, as after a backward
                p.grad = tl.Tensor(grads_rng.standard_normal(p.data.shape).astype(p.data.dtype))
            start = time.perf_counter()
            ddp.sync_gradients()
            return time.perf_counter() - start

        sync()
        sync_times = []
        for _ in range(args.repeats):
            dist.barrier()
            sync_times.append(slowest_rank_ms(sync()))
        flat = np.ones(gradient_bytes(model) // 4, dtype=np.float32)
        entry = {"gradient_bytes": gradient_bytes(model), "buckets": len(ddp._buckets),
                 "sync_gradients_ms": statistics.median(sync_times),
                 "bare_allreduce_ms": time_collective(lambda: dist.all_reduce(flat), args.repeats)}

        if name in args.throughput_configs.split(","):
            runner = DataParallelRunner(settings, batch_size, rank)
            for _ in range(2):
                runner.step()
            step_times = []
            for _ in range(args.steps):
                dist.barrier()
                start = time.perf_counter()
                runner.step()
                step_times.append(slowest_rank_ms(time.perf_counter() - start))
            step_ms = statistics.median(step_times)
            entry["ddp_step_ms"] = step_ms
            tokens_per_step = dist.get_world_size() * batch_size * settings["block_size"]
            entry["ddp_tokens_per_s"] = tokens_per_step / (step_ms / 1e3)
            entry["backward_ms"], entry["backward_then_allreduce_ms"], entry["overlapped_ms"] = \
                overlap_experiment(runner, entry["gradient_bytes"], args.steps)
        results["configs"][name] = entry
    if rank == 0:
        with open(args.worker_json, "w") as f:
            json.dump(results, f)


def run_workers(args, ranks, threads_per_rank):
    from tensorlite.distributed import INSTALL_HINT
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        import shutil
        mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit(f"bench_distributed: no mpiexec found; {INSTALL_HINT}")
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads_per_rank),
               OMP_NUM_THREADS=str(threads_per_rank))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "workers.json")
        command = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
                   "--worker-json", out, "--configs", args.configs, "--repeats", str(args.repeats),
                   "--steps", str(args.steps), "--throughput-configs", args.throughput_configs]
        subprocess.run(command, env=env, check=True)
        with open(out) as f:
            return json.load(f)


# ---------------------------------------------------------------------------------------------
# Step 3: the prediction
# ---------------------------------------------------------------------------------------------

def ring_allreduce_ms(nbytes, hosts, gbit_per_s, latency_us, messages):
    bandwidth_term = 2 * (hosts - 1) / hosts * nbytes * 8 / (gbit_per_s * 1e9)
    latency_term = 2 * (hosts - 1) * latency_us * 1e-6 * messages
    return 1e3 * (bandwidth_term + latency_term)


def efficiency(step_ms, comm_ms, overlap=False):
    return step_ms / max(step_ms, comm_ms) if overlap else step_ms / (step_ms + comm_ms)


def markdown_table(step_ms, measured, latencies_us):
    hosts_header = " | ".join(f"{n} hosts" for n in HOSTS)
    lines = [f"| config | gradients | step (1 host) | link | allreduce at 64 hosts | {hosts_header} |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in HOSTS) + " |"]
    for name, entry in measured["configs"].items():
        nbytes, messages = entry["gradient_bytes"], entry["buckets"]
        for gbit, latency in zip(BANDWIDTHS_GBIT, latencies_us):
            comms = [ring_allreduce_ms(nbytes, n, gbit, latency, messages) for n in HOSTS]
            cells = " | ".join(f"{100 * efficiency(step_ms[name], c):.0f}%" for c in comms)
            lines.append(f"| {name} | {nbytes / 1e6:.1f} MB | {step_ms[name]:.0f} ms | "
                         f"{gbit} Gbit/s, {latency:g} us | {comms[-1]:.1f} ms | {cells} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="shakespeare-cpu,gpt-mini")
    parser.add_argument("--step-ms", default="", metavar="NAME=MS,...",
                        help="single-process step times to use instead of measuring them")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (gpt-mini: 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed allreduces per config")
    parser.add_argument("--throughput-configs", default="shakespeare-cpu",
                        help="configs whose 2-process training throughput is measured")
    parser.add_argument("--latency-us", default="50,10", metavar="AT_10G,AT_100G",
                        help="per-message latency assumed at 10 and 100 Gbit/s")
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0

    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    latencies_us = [float(v) for v in args.latency_us.split(",")]
    given = dict(item.split("=") for item in args.step_ms.split(",") if item)
    cores = os.cpu_count() or 1
    print(f"# {cores} cores; {tl.kernels.format_runtime_info()}", flush=True)

    step_ms = {}
    for name in names:
        if name in given:
            step_ms[name] = float(given[name])
        else:
            steps = args.steps if name != "gpt-mini" else min(args.steps, 3)
            step_ms[name] = measure_step_ms(name, steps)
        print(f"single-process step, {name}: {step_ms[name]:.1f} ms ({cores} threads)", flush=True)

    ranks = 2
    measured = run_workers(args, ranks, max(1, cores // ranks))
    print(f"\nMeasured here, {ranks} ranks x {max(1, cores // ranks)} thread(s), shared memory:\n")
    print("| config | gradients | buckets | sync_gradients() | bare MPI_Allreduce | share of a step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        entry = measured["configs"][name]
        print(f"| {name} | {entry['gradient_bytes'] / 1e6:.1f} MB | {entry['buckets']} | "
              f"{entry['sync_gradients_ms']:.2f} ms | {entry['bare_allreduce_ms']:.2f} ms | "
              f"{100 * entry['sync_gradients_ms'] / step_ms[name]:.1f}% |")
    print("\n'share of a step' bounds what overlapping the reduction with backward could save here.")
    for name in names:
        entry = measured["configs"][name]
        if "ddp_step_ms" in entry:
            single = CONFIGS[name][1] * model_settings(name)["block_size"] / (step_ms[name] / 1e3)
            source = "given by --step-ms" if name in given else "measured"
            print(f"\nThroughput, {name}: 1 process x {cores} threads {single:,.0f} tokens/s ({source}); "
                  f"{ranks} processes x {max(1, cores // ranks)} thread(s) "
                  f"{entry['ddp_tokens_per_s']:,.0f} tokens/s ({entry['ddp_step_ms']:.1f} ms/step)")
            print(f"Overlap, {name}: backward {entry['backward_ms']:.1f} ms; backward then allreduce "
                  f"{entry['backward_then_allreduce_ms']:.1f} ms; allreduce started before backward, "
                  f"waited after {entry['overlapped_ms']:.1f} ms")

    print("\nPredicted scaling efficiency (weak scaling, ring allreduce, no overlap), "
          "each host like this one:\n")
    print(markdown_table(step_ms, measured, latencies_us))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"step_ms": step_ms, "measured": measured, "latency_us": latencies_us}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
