"""Training-step benchmark: tensorlite against PyTorch and JAX, each in its own fresh process.

    python benchmarks/bench_train.py                        # all configs, every peer installed
    python benchmarks/bench_train.py --quick                # tiny + shakespeare-cpu, 2 short rounds
    python benchmarks/bench_train.py --configs gpt-mini --rounds 3
    python benchmarks/bench_train.py --allocator-ab         # tensorlite with/without its malloc options
    python benchmarks/bench_train.py --profile-only         # per-op profile of a shakespeare-cpu step
    python benchmarks/bench_train.py --interleaved          # old in-process mode (see below)

What a user gets: every framework runs in a fresh subprocess, in the environment the user has
(no allocator variables, no warm-up other than the model's own first steps), and the frameworks
take turns round after round (tensorlite, torch, torch.compile, jax, tensorlite, torch, ...), so a
noisy moment on the machine hits each alike. A process builds the model, takes `--warmup` steps
(the first includes Numba's / XLA's / Inductor's compile and is reported as "first step"), then
times `--steps` steps (forward + backward + clip + AdamW, float32). Per framework and config:

* ms/step: the median over rounds of each process's median step, with the range of the
  per-process medians (min-max) -- fresh processes differ more from each other than steps do;
* tl/peer: tensorlite's median over the peer's;
* tokens/s, and MFU = model FLOPs per second (nanoGPT's 6N + 12 L T C per token) over the
  float32 GEMM peak, which a separate subprocess measures (1024^3 NumPy matmul on every core);
* peak RSS of each process (VmHWM, the high-water mark of the process's own address space;
  ru_maxrss is also in the JSON) and the time of the first step (model build + compile + step);
* page faults and kernel (sys) time per step: the allocator's cost;
* steal %: the host-wide share of CPU time the hypervisor gave to other guests while the
  process timed its steps (/proc/stat), median over processes. On a shared VM this is noise
  that no method removes; a round with high steal is slower for whichever framework met it.
  Only a core that wants to run can be stolen from, so a framework whose threads keep both
  cores busy (tensorlite's workers spin between launches) meets more of it.

Peers, when importable (the `bench` extra): torch eager on its fastest eager path
(`F.scaled_dot_product_attention`, fused AdamW), the same model under `torch.compile`, and a
`jax.jit`-compiled step (`benchmarks/jax_gpt.py`). Results go to benchmarks/results/train.json
and a Markdown table for the README.

--interleaved keeps the previous method: tensorlite and torch eager in ONE process, alternating
blocks of steps after a GEMM warm-up. It is labelled as such; it is not what a fresh process
gets (the warm-up changes glibc's malloc behaviour for the rest of the process).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

CONFIGS = {
    # name: model settings, batch size, timed steps per process by default
    "tiny": (dict(n_layer=2, n_head=2, n_embd=64, block_size=32), 16, 30),
    "shakespeare-cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64), 12, 30),
    "gpt-mini": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256), 64, 3),
}
VOCAB_SIZE = 65  # tiny Shakespeare's character vocabulary
LEARNING_RATE, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0

# name -> module that must be importable; the first is the subject, the rest are peers
FRAMEWORKS = {"tensorlite": "tensorlite", "torch": "torch", "torch-compile": "torch", "jax": "jax"}
# tensorlite with and without its process-wide malloc options (tensorlite/allocator.py)
ALLOCATOR_ARMS = {"tensorlite-glibc-malloc": "tensorlite", "tensorlite-allocator": "tensorlite"}


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------

def cpu_info() -> dict:
    """CPU model name, family and model number from /proc/cpuinfo. AMD family 25 is Zen 3 or
    Zen 4 depending on the model (1 = Milan, Zen 3; 17 = Genoa, Zen 4); family 26 is Zen 5."""
    info = {"model": platform.processor() or platform.machine(), "family": None,
            "model_number": None, "flags_avx512f": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    info["model"] = value
                elif key == "cpu family":
                    info["family"] = int(value)
                elif key == "model":
                    info["model_number"] = int(value)
                elif key == "flags":
                    info["flags_avx512f"] = "avx512f" in value.split()
                    break  # the first processor's block is enough
    except OSError:
        pass
    return info


def cpu_line(info=None) -> str:
    """'<model name>, family F model M, N logical CPUs': what every benchmark prints beside its
    figures (the host CPU varies between machines)."""
    info = cpu_info() if info is None else info
    return (f"{info['model']}, family {info['family']} model {info['model_number']}, "
            f"{os.cpu_count()} logical CPUs")


def model_settings(name: str) -> dict:
    settings, _, _ = CONFIGS[name]
    return dict(vocab_size=VOCAB_SIZE, dropout=0.0, bias=True, **settings)


def batches(settings: dict, batch_size: int, seed: int = 0):
    """Random token batches (x, y) of shape (B, T), the same for every framework."""
    import numpy as np
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.integers(0, settings["vocab_size"], size=(batch_size, settings["block_size"] + 1))
        yield idx[:, :-1].astype(np.int64), idx[:, 1:].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# One framework's training step, behind the same small interface. Imports are inside, so a
# torch process never loads tensorlite (or Numba) and the other way round.
# ---------------------------------------------------------------------------------------------

class TensorliteRunner:
    name = "tensorlite"

    def __init__(self, settings: dict, batch_size: int, seed: int = 0):
        import tensorlite as tl
        from tensorlite.models.gpt import GPT, GPTConfig
        self.tl = tl
        tl.manual_seed(seed)
        self.model = GPT(GPTConfig(**settings))
        self.optimizer = self.model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE, BETAS)
        self.parameters = list(self.model.parameters())
        self.data = batches(settings, batch_size, seed)
        self.flops_per_step = self.model.flops_per_token() * batch_size * settings["block_size"]

    def step(self) -> float:
        x, y = next(self.data)
        _, loss = self.model(x, y)
        loss.backward()
        self.tl.optim.clip_grad_norm_(self.parameters, GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()

    def generate(self, prompt, max_new_tokens):
        import numpy as np
        return self.model.generate(prompt, max_new_tokens, temperature=1.0, rng=np.random.default_rng(0))


class TorchRunner:
    name = "torch"

    def __init__(self, settings: dict, batch_size: int, seed: int = 0, compile: bool = False):
        import torch
        from torch_gpt import TorchGPT
        self.torch = torch
        torch.manual_seed(seed)
        self.model = TorchGPT(types.SimpleNamespace(**settings))
        self.optimizer = self.model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE, BETAS)
        self.parameters = list(self.model.parameters())
        self.forward = torch.compile(self.model) if compile else self.model
        self.data = batches(settings, batch_size, seed)

    def step(self) -> float:
        x, y = (self.torch.from_numpy(a) for a in next(self.data))
        _, loss = self.forward(x, y)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.parameters, GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def generate(self, prompt, max_new_tokens):
        self.model.eval()
        return self.model.generate(self.torch.from_numpy(prompt), max_new_tokens)


class JaxRunner:
    name = "jax"

    def __init__(self, settings: dict, batch_size: int, seed: int = 0):
        import jax_gpt
        config = types.SimpleNamespace(**settings)
        self.params = jax_gpt.init_params(config, seed)
        self.opt_state = jax_gpt.init_optimizer(self.params)
        self.train_step = jax_gpt.make_train_step(config, LEARNING_RATE, BETAS, WEIGHT_DECAY, GRAD_CLIP)
        self.data = batches(settings, batch_size, seed)

    def step(self) -> float:
        x, y = (a.astype("int32") for a in next(self.data))  # JAX's default integer width
        self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state, x, y)
        return float(loss)  # waits for the step, as .item() does


def make_runner(framework: str, settings: dict, batch_size: int):
    if framework.startswith("tensorlite"):
        return TensorliteRunner(settings, batch_size)
    if framework in ("torch", "torch-compile"):
        return TorchRunner(settings, batch_size, compile=framework == "torch-compile")
    if framework == "jax":
        return JaxRunner(settings, batch_size)
    raise ValueError(f"unknown framework {framework!r}")


# ---------------------------------------------------------------------------------------------
# Worker processes (internal --worker mode): one measurement each, JSON on the last stdout line.
# ---------------------------------------------------------------------------------------------

def peak_rss() -> dict:
    """VmHWM: the peak of this process's own address space. ru_maxrss can also hold the
    parent's high-water mark from before exec, which is why both are reported."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_mb": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        out["peak_rss_mb"] = out["ru_maxrss_mb"]
    return out


def host_cpu_ticks():
    """The host-wide CPU time counters (first line of /proc/stat), or None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None


def steal_percent(before, after):
    """Share of the CPU time between two readings that the hypervisor gave to other guests
    ("steal"): on a shared VM, the noise no benchmark method removes, so it is reported."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    return 100 * delta[7] / sum(delta) if sum(delta) > 0 else None


def framework_info(framework: str) -> dict:
    """Versions and thread counts, read in the worker after it ran."""
    if framework.startswith("tensorlite"):
        import tensorlite as tl
        info = {"runtime": tl.kernels.format_runtime_info()}
        allocator = sys.modules.get("tensorlite.allocator")
        info["allocator"] = allocator.format_info() if allocator else "malloc=defaults (allocator not imported)"
        return info
    if framework.startswith("torch"):
        import torch
        return {"version": torch.__version__, "threads": torch.get_num_threads()}
    import jax
    return {"version": jax.__version__, "devices": str(jax.devices())}


def worker_train(framework: str, config_name: str, steps: int, warmup: int, threads) -> dict:
    started = time.perf_counter()
    if framework == "tensorlite-allocator":
        import tensorlite.allocator  # noqa: F401  (sets the malloc options on import)
    if framework.startswith("torch") and threads:
        import torch
        torch.set_num_threads(threads)
    _, batch_size, _ = CONFIGS[config_name]
    runner = make_runner(framework, model_settings(config_name), batch_size)
    built = time.perf_counter()
    losses = [runner.step()]
    first_step = time.perf_counter() - built
    for _ in range(warmup - 1):
        runner.step()
    seconds = []
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    ticks_before = host_cpu_ticks()
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(runner.step())
        seconds.append(time.perf_counter() - t0)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steal = steal_percent(ticks_before, host_cpu_ticks())
    result = {"step_s": seconds,
              # page faults and kernel time per step: the allocator's cost, visible even on a busy machine
              "minor_faults_per_step": (usage.ru_minflt - usage_before.ru_minflt) / steps,
              "sys_ms_per_step": 1e3 * (usage.ru_stime - usage_before.ru_stime) / steps,
              "user_ms_per_step": 1e3 * (usage.ru_utime - usage_before.ru_utime) / steps,
              "steal_pct": steal, "first_step_s": first_step, "build_s": built - started,
              "first_loss": losses[0], "flops_per_step": getattr(runner, "flops_per_step", None),
              "info": framework_info(framework)}
    result.update(peak_rss())
    return result


def worker_gemm_peak() -> dict:
    """Float32 GEMM peak with tensorlite's BLAS (its kernel set, every core)."""
    import tensorlite as tl
    from tensorlite.models.gpt import measure_peak_flops
    return {"gflops": measure_peak_flops(n=1024, repeats=15) / 1e9,
            "runtime": tl.kernels.format_runtime_info()}


def worker_generate(framework: str, new_tokens: int) -> dict:
    import numpy as np
    runner = make_runner(framework, model_settings("gpt-mini"), 1)
    prompt = np.zeros((1, 1), dtype=np.int64)
    runner.generate(prompt, 8)  # warm-up (and JIT compile)
    t0 = time.perf_counter()
    runner.generate(prompt, new_tokens)
    return {"tokens_per_s": new_tokens / (time.perf_counter() - t0)}


def run_worker(*worker_args: str, env_extra=None, timeout=3600) -> dict:
    return run_script_worker(__file__, *worker_args, env_extra=env_extra, timeout=timeout)


def run_script_worker(script: str, *worker_args: str, env_extra=None, timeout=3600) -> dict:
    """Run `script --worker ...` in a fresh process; its last stdout line (JSON) as a dict, or
    {"error": the last line of its output} when it failed or timed out."""
    env = dict(os.environ)
    env.update(env_extra or {})
    command = [sys.executable, os.path.abspath(script), "--worker", *worker_args]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_main(args) -> int:
    kind = args.worker
    if kind == "gemm-peak":
        result = worker_gemm_peak()
    elif kind == "generate":
        result = worker_generate(args.framework, args.new_tokens)
    else:
        result = worker_train(kind, args.config, args.steps, args.warmup, args.threads)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# The benchmark proper: rounds of fresh processes.
# ---------------------------------------------------------------------------------------------

def arm_environment(framework: str) -> dict:
    """The glibc-malloc arm opts out of tensorlite's malloc options, whether or not
    `import tensorlite` sets them; every other arm runs in the user's environment."""
    return {"TENSORLITE_KEEP_MALLOC": "1"} if framework == "tensorlite-glibc-malloc" else {}


def summarize(runs: list, tokens_per_step: int, flops_per_step, peak_gflops) -> dict:
    """Per-process medians -> median (min-max) over processes, and the derived figures."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"], "runs": runs}
    medians = [1e3 * statistics.median(r["step_s"]) for r in ok]
    median_s = statistics.median(medians) / 1e3
    out = {"median_ms": 1e3 * median_s, "min_ms": min(medians), "max_ms": max(medians),
           "process_medians_ms": medians, "processes": len(ok),
           "noise_pct": 100 * (max(medians) - min(medians)) / (1e3 * median_s),
           "tokens_per_s": tokens_per_step / median_s,
           "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in ok),
           "peak_rss_mb_max": max(r["peak_rss_mb"] for r in ok),
           "first_step_s": statistics.median(r["first_step_s"] for r in ok),
           "first_step_s_first_process": ok[0]["first_step_s"],
           "minor_faults_per_step": statistics.median(r["minor_faults_per_step"] for r in ok),
           "sys_ms_per_step": statistics.median(r["sys_ms_per_step"] for r in ok),
           "steal_pct": _median_or_none([r.get("steal_pct") for r in ok]),
           "first_loss": ok[0]["first_loss"], "info": ok[0]["info"], "runs": runs}
    if flops_per_step and peak_gflops:
        out["gflops"] = flops_per_step / median_s / 1e9
        out["mfu"] = out["gflops"] / peak_gflops
    return out


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def benchmark_config(name: str, frameworks: list, rounds: int, steps: int, warmup: int,
                     threads, peak_gflops: float) -> dict:
    _, batch_size, _ = CONFIGS[name]
    runs = {fw: [] for fw in frameworks}
    for round_index in range(rounds):
        for fw in frameworks:  # alternate: tl, torch, jax, tl, torch, jax, ...
            worker_args = [fw, "--config", name, "--steps", str(steps), "--warmup", str(warmup)]
            if threads:
                worker_args += ["--threads", str(threads)]
            result = run_worker(*worker_args, env_extra=arm_environment(fw))
            runs[fw].append(result)
            status = result.get("error") or f"{1e3 * statistics.median(result['step_s']):.1f} ms/step"
            print(f"  {name} round {round_index + 1}/{rounds} {fw}: {status}", file=sys.stderr, flush=True)
    flops = next((r["flops_per_step"] for rs in runs.values() for r in rs if r.get("flops_per_step")), None)
    tokens = batch_size * model_settings(name)["block_size"]
    entry = {"batch_size": batch_size, "tokens_per_step": tokens, "flops_per_step": flops,
             "steps_per_process": steps, "warmup": warmup,
             "floor_ms": 1e3 * flops / (peak_gflops * 1e9) if flops else None,
             "frameworks": {fw: summarize(rs, tokens, flops, peak_gflops) for fw, rs in runs.items()}}
    subject = entry["frameworks"][frameworks[0]]
    for fw, summary in entry["frameworks"].items():
        if fw != frameworks[0] and "median_ms" in summary and "median_ms" in subject:
            summary["ratio_subject_over_this"] = subject["median_ms"] / summary["median_ms"]
    return entry


def available_frameworks(requested: list) -> tuple:
    known = {**FRAMEWORKS, **ALLOCATOR_ARMS}
    unknown = [fw for fw in requested if fw not in known]
    if unknown:
        raise ValueError(f"unknown framework(s) {unknown}; choose from {list(known)}")
    present = [fw for fw in requested if importlib.util.find_spec(known[fw]) is not None]
    return present, [fw for fw in requested if fw not in present]


def gemm_peak(samples: int = 2) -> dict:
    """Best of `samples` fresh-process measurements (the machine may be busy for one)."""
    runs = [run_worker("gemm-peak") for _ in range(samples)]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        raise RuntimeError(f"GEMM peak measurement failed: {runs[-1]['error']}")
    best = max(ok, key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "samples_gflops": [r["gflops"] for r in ok], "runtime": best["runtime"]}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def header_lines(results: dict) -> list:
    h = results["header"]
    cpu = h["cpu"]
    lines = [f"# bench_train {h['date']}, {h['method']}",
             f"# CPU: {cpu['model']}, family {cpu['family']} model {cpu.get('model_number')}, "
             f"{h['cpu_count']} logical cores, "
             f"avx512f={cpu['flags_avx512f']}",
             f"# tensorlite BLAS/kernels: {h['runtime']}",
             f"# float32 GEMM peak (1024^3, separate process, best of "
             f"{len(results['gemm_peak']['samples_gflops'])}): {results['gemm_peak']['gflops']:.0f} GFLOP/s"]
    for fw, info in h.get("frameworks", {}).items():  # the runtime line is already above
        lines.append(f"# {fw}: {', '.join(f'{k}={v}' for k, v in info.items() if k != 'runtime')}")
    return lines


def _format_steal(pct) -> str:
    return "n/a" if pct is None else f"{pct:.1f}"


def fmt_ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def markdown_table(results: dict) -> str:
    subject = results["header"]["subject"]
    lines = [f"| config | framework | ms/step median (min-max) | {subject} / this | tokens/s | MFU | "
             "peak RSS MB | first step s | page faults/step | sys ms/step | steal % |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in results["configs"].items():
        for fw, s in entry["frameworks"].items():
            if "error" in s:
                lines.append(f"| {name} | {fw} | failed: {s['error'][:60]} | | | | | | | | |")
                continue
            ratio = f"{s['ratio_subject_over_this']:.2f}" if "ratio_subject_over_this" in s else ""
            mfu = f"{100 * s['mfu']:.0f}%" if "mfu" in s else "n/a"
            lines.append(f"| {name} | {fw} | {fmt_ms(s['median_ms'])} ({fmt_ms(s['min_ms'])}-"
                         f"{fmt_ms(s['max_ms'])}) | {ratio} | {s['tokens_per_s']:,.0f} | {mfu} | "
                         f"{s['peak_rss_mb']:.0f} | {s['first_step_s']:.1f} | "
                         f"{s['minor_faults_per_step']:.0f} | {s['sys_ms_per_step']:.1f} | "
                         f"{_format_steal(s.get('steal_pct'))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Other modes: the per-op profile, and the old in-process interleaved timing.
# ---------------------------------------------------------------------------------------------

def profile_step(config_name: str, steps: int = 10):
    from tensorlite.profiler import profile
    _, batch_size, _ = CONFIGS[config_name]
    runner = TensorliteRunner(model_settings(config_name), batch_size)
    for _ in range(3):
        runner.step()
    with profile() as profiler:
        for _ in range(steps):
            runner.step()
    return profiler, steps


def time_interleaved(runners, steps: int, warmup: int, block: int = 5) -> dict:
    """Steps of each runner in alternating blocks, in this one process."""
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


def interleaved_main(names: list, use_torch: bool, steps_override, warmup: int) -> int:
    """The previous method, kept for comparison: ONE process, GEMM warm-up first."""
    import tensorlite as tl
    from tensorlite.models.gpt import measure_peak_flops
    peak = measure_peak_flops(n=1024, repeats=15)  # frees 4 MB blocks: raises glibc's mmap threshold
    print("# IN-PROCESS INTERLEAVED mode (one process, after a GEMM warm-up): not what a fresh "
          "process gets")
    print(f"# {tl.kernels.format_runtime_info()}; GEMM peak {peak / 1e9:.0f} GFLOP/s")
    print("| config | tensorlite ms/step (min-max) | torch ms/step (min-max) | ratio |")
    print("|---|---|---|---:|")
    for name in names:
        _, batch_size, default_steps = CONFIGS[name]
        runners = [TensorliteRunner(model_settings(name), batch_size)]
        if use_torch:
            runners.append(TorchRunner(model_settings(name), batch_size))
        steps = steps_override or default_steps
        times = time_interleaved(runners, steps, warmup, block=5 if steps >= 10 else 1)
        cells = []
        for r in runners:
            ms = [1e3 * s for s in times[r.name]]
            cells.append(f"{fmt_ms(statistics.median(ms))} ({fmt_ms(min(ms))}-{fmt_ms(max(ms))})")
        ratio = (f"{statistics.median(times['tensorlite']) / statistics.median(times['torch']):.2f}"
                 if use_torch else "n/a")
        print(f"| {name} | {cells[0]} | {cells[1] if use_torch else 'n/a'} | {ratio} |")
    return 0


# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,shakespeare-cpu,gpt-mini",
                        help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--frameworks", default="tensorlite,torch,torch-compile,jax",
                        help="comma-separated; the first is compared against the others; those "
                             "not installed are skipped")
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per framework and config")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process (default per config)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing, the first included")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice, as a user gets)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny and shakespeare-cpu, 2 rounds of 10 steps (checks the script runs)")
    parser.add_argument("--allocator-ab", action="store_true",
                        help="compare tensorlite with and without tensorlite.allocator (and torch)")
    parser.add_argument("--no-generate", action="store_true", help="skip the gpt-mini generation run")
    parser.add_argument("--profile-only", action="store_true",
                        help="print the per-op profile (tensorlite.profiler) of a shakespeare-cpu step, "
                             "or of each --configs, in this process, and exit")
    parser.add_argument("--interleaved", action="store_true",
                        help="old mode: tensorlite and torch in one process (labelled as such)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "train.json"))
    # internal: worker processes
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="tensorlite", help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def fail(message):
        print(f"bench_train.py: error: {message}", file=sys.stderr)
        sys.exit(2)

    for option in ("rounds", "warmup"):
        if getattr(args, option) < 1:
            fail(f"--{option} must be >= 1, got {getattr(args, option)}")
    if args.steps is not None and args.steps < 1:
        fail(f"--steps must be >= 1, got {args.steps}")
    args.configs_given = args.configs != parser.get_default("configs")
    if args.quick:
        if not args.configs_given:
            args.configs = "tiny,shakespeare-cpu"
        args.rounds, args.warmup = 2, 2
        args.no_generate = True
    if args.allocator_ab and args.frameworks == parser.get_default("frameworks"):
        args.frameworks = "tensorlite-glibc-malloc,tensorlite-allocator,torch"
    args.names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in CONFIGS]
    if unknown or not args.names:
        fail(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    try:
        args.present, args.missing = available_frameworks(
            [f.strip() for f in args.frameworks.split(",") if f.strip()])
    except ValueError as error:
        fail(str(error))
    if args.worker is None and not args.present:
        fail(f"none of the frameworks {args.frameworks} is importable")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.profile_only:  # shakespeare-cpu unless --configs names others
        import tensorlite as tl
        for name in args.names if args.configs_given else ["shakespeare-cpu"]:
            profiler, steps = profile_step(name)
            print(f"# {tl.kernels.format_runtime_info()}")
            print(f"\n## Profile of one {name} step (mean over {steps} steps)\n")
            print(profiler.table(scale=steps))
        return 0
    if args.interleaved:
        return interleaved_main(args.names, "torch" in args.present, args.steps, args.warmup)

    frameworks = args.present
    if args.missing:
        print(f"# not installed, skipped: {', '.join(args.missing)} (pip install -e '.[bench]')",
              file=sys.stderr)
    peak = gemm_peak()
    results = {"header": {"date": datetime.date.today().isoformat(),
                          "method": f"fresh process per framework, {args.rounds} alternating rounds, "
                                    "medians of per-process medians",
                          "cpu": cpu_info(), "cpu_count": os.cpu_count(), "runtime": peak["runtime"],
                          "subject": frameworks[0], "frameworks": {}},
               "gemm_peak": peak, "configs": {}}
    for name in args.names:
        steps = args.steps or (min(10, CONFIGS[name][2]) if args.quick else CONFIGS[name][2])
        entry = benchmark_config(name, frameworks, args.rounds, steps, args.warmup, args.threads,
                                 peak["gflops"])
        results["configs"][name] = entry
        for fw, summary in entry["frameworks"].items():
            if "info" in summary:
                results["header"]["frameworks"][fw] = summary["info"]
                if "runtime" in summary["info"]:  # after training: Numba's pool started, SciPy loaded
                    results["header"]["runtime"] = summary["info"]["runtime"]

    if not args.no_generate and "gpt-mini" in args.names:
        results["generation_gpt_mini_tokens_per_s"] = {
            fw: run_worker("generate", "--framework", fw) for fw in frameworks
            if fw in ("tensorlite", "torch")}

    print("\n".join(header_lines(results)))
    print()
    print(markdown_table(results))
    for fw, g in results.get("generation_gpt_mini_tokens_per_s", {}).items():
        print(f"\nGeneration, gpt-mini, 256 new tokens, {fw}: "
              f"{g.get('tokens_per_s', float('nan')):.1f} tokens/s {g.get('error', '')}")

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
