"""The whole machine: each framework's best way to use every core, at the same global batch.

    python benchmarks/bench_whole_machine.py                       # shakespeare-cpu, 5 rounds
    python benchmarks/bench_whole_machine.py --configs tiny,shakespeare-cpu --rounds 3

Four arms, each in its own fresh process (or process group), alternating round by round:

* tensorlite-threads: one process, the kernels on every core (the default);
* tensorlite-mpi: ``mpiexec -n W``, one thread per rank, DistributedDataParallel averaging the
  gradients (what ``mpiexec -n 2 tensorlite-train`` runs);
* torch-threads: one process, torch's default intra-op threads (every core);
* torch-ddp: ``torchrun --nproc_per_node W``, one thread per rank, DistributedDataParallel over
  gloo (torch's CPU data parallelism).

Every arm trains the bench_train GPT config on the same global batch (each of W ranks takes
batch / W rows), so the loss curves agree in expectation; the figure is tokens per second of the
whole job (global batch x block size / median step time of rank 0, after a barrier each step).
W defaults to the number of cores. Prints the CPU family and model beside the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

ARMS = ("tensorlite-threads", "tensorlite-mpi", "torch-threads", "torch-ddp")


# ---------------------------------------------------------------------------------------------
# Workers: one training job each; rank 0 prints its median step time as JSON.
# ---------------------------------------------------------------------------------------------

def no_barrier():
    """A one-process job has no other rank to wait for."""


def run_steps(step, barrier, steps, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        barrier()
        start = time.perf_counter()
        step()
        barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tensorlite_worker(config, global_batch, steps, warmup, distributed):
    import tensorlite as tl
    from bench_train import GRAD_CLIP, TensorliteRunner, model_settings
    rank, world = 0, 1
    barrier = no_barrier
    if distributed:
        from tensorlite import distributed as dist
        from tensorlite.nn.parallel import DistributedDataParallel
        dist.init_process_group("mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
        tl.kernels.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        barrier = dist.barrier
    runner = TensorliteRunner(model_settings(config), global_batch // world, seed=rank)
    if distributed:
        ddp = DistributedDataParallel(runner.model)

        def step():
            x, y = next(runner.data)
            _, loss = ddp(x, y)
            loss.backward()
            ddp.sync_gradients()
            tl.optim.clip_grad_norm_(runner.parameters, GRAD_CLIP)
            runner.optimizer.step()
            runner.optimizer.zero_grad()
    else:
        step = runner.step
    return rank, run_steps(step, barrier, steps, warmup)


def torch_worker(config, global_batch, steps, warmup, distributed):
    import torch
    from bench_train import GRAD_CLIP, TorchRunner, model_settings
    rank, world = 0, 1
    barrier = no_barrier
    if distributed:
        import torch.distributed as dist
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        barrier = dist.barrier
    runner = TorchRunner(model_settings(config), global_batch // world, seed=rank)
    if distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(runner.model)

        def step():
            x, y = (torch.from_numpy(a) for a in next(runner.data))
            _, loss = ddp(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(runner.parameters, GRAD_CLIP)
            runner.optimizer.step()
            runner.optimizer.zero_grad(set_to_none=True)
    else:
        step = runner.step
    return rank, run_steps(step, barrier, steps, warmup)


def worker_main(args):
    framework, mode = args.worker.split("-", 1)
    work = tensorlite_worker if framework == "tensorlite" else torch_worker
    rank, seconds = work(args.config, args.global_batch, args.steps, args.warmup,
                         mode in ("mpi", "ddp"))
    if rank == 0:
        print(json.dumps({"step_s": seconds}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------

def launch(arm, config, global_batch, steps, warmup, world):
    worker = [os.path.abspath(__file__), "--worker", arm, "--config", config,
              "--global-batch", str(global_batch), "--steps", str(steps), "--warmup", str(warmup)]
    if arm == "tensorlite-mpi":
        mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
        if mpiexec is None:
            return {"error": "mpiexec not found (pip install '.[mpi]')"}
        command = [mpiexec, "-n", str(world), sys.executable, *worker]
    elif arm == "torch-ddp":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={world}", *worker]
    else:
        command = [sys.executable, *worker]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", ""))
    if arm == "torch-ddp" and not env["OMP_NUM_THREADS"]:
        env["OMP_NUM_THREADS"] = "1"  # torchrun's own default, said out loud
    if not env["OMP_NUM_THREADS"]:
        del env["OMP_NUM_THREADS"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()
        return {"error": tail[-1] if tail else f"exit status {done.returncode}"}
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="shakespeare-cpu")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--world", type=int, default=os.cpu_count() or 2,
                        help="ranks for the mpi and ddp arms (default: the number of cores)")
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--global-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    from bench_train import CONFIGS, cpu_line
    arms = [a for a in args.arms.split(",") if a]
    print(f"CPU: {cpu_line()}; {args.rounds} alternating rounds, {args.steps} timed steps "
          f"each, W = {args.world}")
    results = {}
    for config in args.configs.split(","):
        settings, batch, _ = CONFIGS[config]
        batch = max(batch, args.world) // args.world * args.world  # divisible among the ranks
        tokens = batch * settings["block_size"]
        times = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm in arms:
                result = launch(arm, config, batch, args.steps, args.warmup, args.world)
                if "error" in result:
                    print(f"{config} {arm}: {result['error']}", file=sys.stderr)
                else:
                    times[arm].append(result["step_s"])
        print(f"\n{config}, global batch {batch} x {settings['block_size']} tokens\n")
        print("| arm | ms/step median (min-max) | tokens/s | vs torch's best |")
        print("| --- | --- | --- | --- |")
        rates = {arm: tokens / statistics.median(t) for arm, t in times.items() if t}
        torch_best = max((rates[a] for a in ("torch-threads", "torch-ddp") if a in rates),
                         default=None)
        for arm, t in times.items():
            if not t:
                print(f"| {arm} | failed | | |")
                continue
            ratio = f"{rates[arm] / torch_best:.2f}x" if torch_best else ""
            print(f"| {arm} | {1e3 * statistics.median(t):.1f} ({1e3 * min(t):.1f}-"
                  f"{1e3 * max(t):.1f}) | {rates[arm]:,.0f} | {ratio} |")
        results[config] = {"global_batch": batch, "step_s": times, "tokens_per_s": rates}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_line(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
