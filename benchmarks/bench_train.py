"""Training-step benchmark: tensorlite against PyTorch eager, same model, same machine, same run.

    python benchmarks/bench_train.py                      # all configs, torch if importable
    python benchmarks/bench_train.py --configs shakespeare-cpu --steps 30
    python benchmarks/bench_train.py --profile-only       # just the per-op profile table

For each config it reports the median ms per step (forward + backward + clip + AdamW) over
`--steps` steps after warm-up, with min and max, tokens/s, model FLOPs per step, achieved GFLOP/s
and MFU against the float32 GEMM peak measured in this run, peak RSS (each framework in its own
subprocess, since peak RSS is per process), and the time to the first step including Numba's
compile, with a cold and with a warm cache. When torch is importable the same architecture and
hyperparameters run in PyTorch eager, interleaved with tensorlite in blocks of steps, and the
ratio tensorlite/torch is printed. Results go to JSON (`--json`) and a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorlite as tl  # noqa: E402  (first: it decides the OpenBLAS kernel set)
import numpy as np  # noqa: E402

from models.gpt import GPT, GPTConfig, measure_peak_flops  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    # name: model config, batch size, steps to time by default
    "tiny": (dict(n_layer=2, n_head=2, n_embd=64, block_size=32), 16, 30),
    "shakespeare-cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64), 12, 30),
    "gpt-mini": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256), 64, 6),
}
VOCAB_SIZE = 65  # tiny Shakespeare's character vocabulary
LEARNING_RATE, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batches(config: GPTConfig, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.integers(0, config.vocab_size, size=(batch_size, config.block_size + 1))
        yield idx[:, :-1].astype(np.int64), idx[:, 1:].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# One framework's training step, behind the same small interface.
# ---------------------------------------------------------------------------------------------

class TensorliteRunner:
    name = "tensorlite"

    def __init__(self, config: GPTConfig, batch_size: int, seed: int = 0):
        tl.manual_seed(seed)
        self.model = GPT(config)
        self.optimizer = self.model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE, BETAS)
        self.parameters = list(self.model.parameters())
        self.data = batches(config, batch_size, seed)

    def step(self) -> float:
        x, y = next(self.data)
        _, loss = self.model(x, y)
        loss.backward()
        tl.optim.clip_grad_norm_(self.parameters, GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()

    def generate(self, prompt, max_new_tokens):
        return self.model.generate(prompt, max_new_tokens, temperature=1.0, top_k=None,
                                   rng=np.random.default_rng(0))


class TorchRunner:
    name = "torch"

    def __init__(self, config: GPTConfig, batch_size: int, seed: int = 0):
        import torch
        from torch_gpt import TorchGPT
        self.torch = torch
        torch.manual_seed(seed)
        self.model = TorchGPT(config)
        self.optimizer = self.model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE, BETAS)
        self.parameters = list(self.model.parameters())
        self.data = batches(config, batch_size, seed)

    def step(self) -> float:
        x, y = (self.torch.from_numpy(a) for a in next(self.data))
        _, loss = self.model(x, y)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.parameters, GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def generate(self, prompt, max_new_tokens):
        self.model.eval()
        return self.model.generate(self.torch.from_numpy(prompt), max_new_tokens)


def make_runner(framework: str, config: GPTConfig, batch_size: int):
    return (TorchRunner if framework == "torch" else TensorliteRunner)(config, batch_size)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def set_torch_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def model_config(name: str) -> tuple:
    settings, batch_size, steps = CONFIGS[name]
    return GPTConfig(vocab_size=VOCAB_SIZE, dropout=0.0, bias=True, **settings), batch_size, steps


# ---------------------------------------------------------------------------------------------
# Subprocess modes: first-step time (cold/warm Numba cache) and peak RSS, each in a fresh process.
# ---------------------------------------------------------------------------------------------

def child_main(args) -> None:
    config, batch_size, _ = model_config(args.config)
    if args.framework == "torch":
        set_torch_threads(args.threads)
    started = time.perf_counter()
    runner = make_runner(args.framework, config, batch_size)
    runner.step()
    first_step = time.perf_counter() - started
    for _ in range(args.child_steps):
        runner.step()
    print(json.dumps({"first_step_s": first_step, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space made by exec;
    ru_maxrss would also count the parent's high-water mark from before the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(framework: str, config_name: str, threads: int, steps: int, cache_dir=None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    command = [sys.executable, os.path.abspath(__file__), "--child", "--framework", framework,
               "--config", config_name, "--child-steps", str(steps), "--threads", str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The benchmark proper.
# ---------------------------------------------------------------------------------------------

def time_interleaved(runners, steps: int, warmup: int, block: int = 5) -> dict:
    """Steps of each runner in alternating blocks, so machine noise hits both alike."""
    times = {r.name: [] for r in runners}
    for r in runners:
        for _ in range(warmup):
            r.step()
    while min(len(t) for t in times.values()) < steps:
        for r in runners:
            for _ in range(min(block, steps - len(times[r.name]))):
                start = time.perf_counter()
                r.step()
                times[r.name].append(time.perf_counter() - start)
    return times


def summarize(seconds: list) -> dict:
    return {"median_ms": 1e3 * statistics.median(seconds), "min_ms": 1e3 * min(seconds),
            "max_ms": 1e3 * max(seconds), "steps": len(seconds)}


def profile_step(config_name: str, steps: int = 10):
    from tensorlite.profiler import profile
    config, batch_size, _ = model_config(config_name)
    runner = TensorliteRunner(config, batch_size)
    for _ in range(3):
        runner.step()
    with profile() as profiler:
        for _ in range(steps):
            runner.step()
    return profiler, steps


def generation_benchmark(use_torch: bool, new_tokens: int = 256) -> dict:
    config, _, _ = model_config("gpt-mini")
    prompt = np.zeros((1, 1), dtype=np.int64)
    out = {}
    frameworks = ["tensorlite"] + (["torch"] if use_torch else [])
    for framework in frameworks:
        runner = make_runner(framework, config, 1)
        runner.generate(prompt, 8)  # warm-up (and JIT compile)
        start = time.perf_counter()
        runner.generate(prompt, new_tokens)
        out[framework] = new_tokens / (time.perf_counter() - start)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,shakespeare-cpu,gpt-mini")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default per config)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-subprocess", action="store_true", help="skip RSS and cold-start runs")
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--profile-only", action="store_true")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "train.json"))
    # internal: child-process mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="tensorlite", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return 0

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    use_torch = not args.no_torch and torch_available()
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "runtime": tl.kernels.format_runtime_info(),
        "torch": __import__("torch").__version__ if use_torch else None,
    }
    if use_torch:
        set_torch_threads(args.threads)
    print(f"# bench_train {header['date']} on {header['machine']}")
    print(f"# {header['runtime']}")
    print(f"# torch: {header['torch'] + f' ({args.threads} threads)' if use_torch else 'not importable, column skipped'}")
    results = {"header": header, "configs": {}}

    if args.profile_only:
        profiler, steps = profile_step("shakespeare-cpu")
        print(f"\n## Profile of one shakespeare-cpu step (mean over {steps} steps)\n")
        print(profiler.table(scale=steps))
        return 0

    peak = measure_peak_flops(n=1024, repeats=15)
    results["gemm_peak_gflops"] = peak / 1e9
    print(f"# float32 GEMM peak (best of 15, 1024^3, NumPy BLAS, {os.cpu_count()} threads): "
          f"{peak / 1e9:.0f} GFLOP/s\n")

    for name in names:
        config, batch_size, default_steps = model_config(name)
        steps = args.steps or default_steps
        runners = [TensorliteRunner(config, batch_size)]
        # nanoGPT's estimate, 6 N + 12 L T C per token (fwd + bwd), for a batch of block_size rows
        flops = runners[0].model.flops_per_token() * batch_size * config.block_size
        if use_torch:
            runners.append(TorchRunner(config, batch_size))
        times = time_interleaved(runners, steps, args.warmup, block=5 if steps >= 10 else 1)
        entry = {"flops_per_step": flops, "tokens_per_step": batch_size * config.block_size,
                 "floor_ms": 1e3 * flops / peak}
        for framework, seconds in times.items():
            stats = summarize(seconds)
            median_s = stats["median_ms"] / 1e3
            stats.update(tokens_per_s=entry["tokens_per_step"] / median_s,
                         gflops=flops / median_s / 1e9, mfu=flops / median_s / peak)
            entry[framework] = stats
        if use_torch:
            entry["ratio"] = entry["tensorlite"]["median_ms"] / entry["torch"]["median_ms"]
        if not args.no_subprocess:
            with tempfile.TemporaryDirectory() as cold_cache:
                entry["tensorlite"]["first_step_cold_s"] = run_child(
                    "tensorlite", name, args.threads, 3, cold_cache)["first_step_s"]
                warm = run_child("tensorlite", name, args.threads, 3, cold_cache)
            entry["tensorlite"]["first_step_warm_s"] = warm["first_step_s"]
            entry["tensorlite"]["peak_rss_mb"] = warm["peak_rss_mb"]
            if use_torch:
                torch_child = run_child("torch", name, args.threads, 3)
                entry["torch"]["first_step_s"] = torch_child["first_step_s"]
                entry["torch"]["peak_rss_mb"] = torch_child["peak_rss_mb"]
        results["configs"][name] = entry
        print(f"{name}: done", file=sys.stderr)

    print(markdown_table(results, use_torch))

    if not args.no_generate and "gpt-mini" in names:
        generation = generation_benchmark(use_torch)
        results["generation_gpt_mini_tokens_per_s"] = generation
        line = f"\nGeneration, gpt-mini, 256 new tokens: tensorlite (KV cache) {generation['tensorlite']:.1f} tok/s"
        if use_torch:
            line += (f", torch (recompute) {generation['torch']:.1f} tok/s, "
                     f"ratio {generation['tensorlite'] / generation['torch']:.2f}x")
        print(line)

    profiler, profiled_steps = profile_step("shakespeare-cpu")
    results["profile_shakespeare_cpu"] = profiler.to_dict()
    print(f"\n## Profile of one shakespeare-cpu step (mean over {profiled_steps} steps)\n")
    print(profiler.table(scale=profiled_steps))

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.json}")
    return 0


def markdown_table(results: dict, use_torch: bool) -> str:
    lines = ["| config | tensorlite ms/step (min-max) | torch ms/step (min-max) | ratio tl/torch | "
             "tokens/s tl | GFLOP/s tl | MFU tl | floor ms | first step cold/warm s | "
             "peak RSS MB tl / torch |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for name, e in results["configs"].items():
        t = e["tensorlite"]
        torch_cell = (f"{e['torch']['median_ms']:.1f} ({e['torch']['min_ms']:.1f}-{e['torch']['max_ms']:.1f})"
                      if use_torch else "n/a")
        ratio = f"{e['ratio']:.2f}" if use_torch else "n/a"
        first = (f"{t['first_step_cold_s']:.1f} / {t['first_step_warm_s']:.1f}"
                 if "first_step_cold_s" in t else "n/a")
        rss = f"{t['peak_rss_mb']:.0f}" if "peak_rss_mb" in t else "n/a"
        if use_torch and "peak_rss_mb" in e.get("torch", {}):
            rss += f" / {e['torch']['peak_rss_mb']:.0f}"
        lines.append(f"| {name} | {t['median_ms']:.1f} ({t['min_ms']:.1f}-{t['max_ms']:.1f}) | "
                     f"{torch_cell} | {ratio} | {t['tokens_per_s']:.0f} | {t['gflops']:.0f} | "
                     f"{100 * t['mfu']:.0f}% | {e['floor_ms']:.1f} | {first} | {rss} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
