"""Benchmark every kernel: Numba set against its NumPy reference, on the GPT's shapes.

The shapes are those of the small character-level GPT in models/ (batch 12, block 64,
n_embd 128, 4 heads of 32, MLP 512, vocab 65), so 768 token rows per step.

Each implementation runs under its own threading policy (tensorlite.kernels.use sets
it): the NumPy reference with BLAS on all cores, the Numba set with BLAS on one thread
and Numba's pool doing the parallel work. The two are timed in alternation, repeat
after repeat, so that a noisy neighbour slows both rather than one; after each switch
the benchmark pauses (--settle) until the other set's idle workers have stopped
spinning, so that neither is timed while the other's thread pool still holds a core.

    python benchmarks/bench_kernels.py [--repeats 15] [--json PATH] [--only NAME ...]

Prints the runtime (BLAS kernel set and threads), then a markdown table of median
(min-max) times and the speedup, and writes the same numbers as JSON.

    python benchmarks/bench_kernels.py --against REV [--repeats 41] [--only NAME ...]

compares the Numba kernels of this tree with those of git revision REV instead (an
A/B of a kernel change): REV's Numba kernels are loaded beside this tree's under another
package name, both run under the Numba policy, alternating call batch by call batch, and the
table gives each side's min and median and the ratio new/old of both (compare the
mins on a loaded machine).

    python benchmarks/bench_kernels.py --linear [--repeats 15]

times a linear layer's forward and backward (the GPT's four weight shapes, at the
shakespeare-cpu and gpt-mini sizes) two ways in alternation: as separate kernels (a
matmul with weight.T, the bias added in a second pass; two matmul launches and a
column sum backward) and with the fused linear / linear_backward kernels.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tensorlite import kernels  # noqa: E402
from tensorlite.kernels import numba as jitted, numpy as reference  # noqa: E402

B, T, C, N_HEAD, VOCAB = 12, 64, 128, 4, 65
ROWS = B * T  # 768 token rows
HEAD = C // N_HEAD  # 32
BH = B * N_HEAD  # 48 (batch x heads)
N_PARAMS = 800_000


def cases(dtype, rng):
    """(name, shape note, make_args) for each benchmark; make_args() -> tuple."""
    def randn(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def probs(*shape):
        return reference.softmax(randn(*shape))

    def targets():
        return rng.integers(0, VOCAB, ROWS)

    logits = randn(ROWS, VOCAB)
    logits_lse = reference.cross_entropy(logits, targets(), -100)[1]
    adam_state = [randn(N_PARAMS), randn(N_PARAMS), randn(N_PARAMS), np.abs(randn(N_PARAMS))]
    x_ln = randn(ROWS, C)
    _, ln_mean, ln_rstd = reference.layer_norm(x_ln, randn(C), randn(C), 1e-5)
    # q, k, v as a GPT hands them over: heads of one packed (B, T, 3, nh, hs) projection
    packed = randn(B, T, 3, N_HEAD, HEAD)
    q, k, v = (packed[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    attention_lse = reference.attention(q, k, v, HEAD ** -0.5, True)[1]
    return [
        ("matmul", "(768,128)@(128,512)", lambda: (randn(ROWS, C), randn(C, 4 * C))),
        ("matmul", "(768,512)@(512,128)", lambda: (randn(ROWS, 4 * C), randn(4 * C, C))),
        ("matmul", "(768,128)@(384,128).T", lambda: (randn(ROWS, C), randn(3 * C, C).T)),
        ("matmul", "(48,64,32)@(48,32,64)", lambda: (randn(BH, T, HEAD), randn(BH, HEAD, T))),
        ("matmul", "(48,64,64)@(48,64,32)", lambda: (randn(BH, T, T), randn(BH, T, HEAD))),
        ("matmul_backward", "(768,128)@(128,512)",
         lambda: (randn(ROWS, 4 * C), randn(ROWS, C), randn(C, 4 * C))),
        ("matmul_backward", "(768,512)@(512,128)",
         lambda: (randn(ROWS, C), randn(ROWS, 4 * C), randn(4 * C, C))),
        ("matmul_backward", "(48,64,32)@(48,32,64)",
         lambda: (randn(BH, T, T), randn(BH, T, HEAD), randn(BH, HEAD, T))),
        ("matmul_backward", "(48,64,64)@(48,64,32)",
         lambda: (randn(BH, T, HEAD), randn(BH, T, T), randn(BH, T, HEAD))),
        ("softmax", "(48,64,64)", lambda: (randn(BH, T, T),)),
        ("softmax_backward", "(48,64,64)", lambda: (probs(BH, T, T), randn(BH, T, T))),
        ("softmax", "(768,65)", lambda: (randn(ROWS, VOCAB),)),
        ("softmax_backward", "(768,65)", lambda: (probs(ROWS, VOCAB), randn(ROWS, VOCAB))),
        ("log_softmax", "(768,65)", lambda: (randn(ROWS, VOCAB),)),
        ("attention", "causal (12,4,64,32)", lambda: (q, k, v, HEAD ** -0.5, True)),
        ("attention_backward", "causal (12,4,64,32)",
         lambda: (randn(B, N_HEAD, T, HEAD), q, k, v, attention_lse, HEAD ** -0.5, True)),
        ("linear", "(768,128)@(512,128).T+b", lambda: (randn(ROWS, C), randn(4 * C, C),
                                                       randn(4 * C))),
        ("linear_backward", "(768,128)@(512,128).T",
         lambda: (randn(ROWS, 4 * C), randn(ROWS, C), randn(4 * C, C))),
        ("layer_norm", "(768,128)", lambda: (x_ln, randn(C), randn(C), 1e-5)),
        ("layer_norm_backward", "(768,128)",
         lambda: (randn(ROWS, C), x_ln, randn(C), ln_mean, ln_rstd)),
        ("gelu", "(768,512)", lambda: (randn(ROWS, 4 * C),)),
        ("gelu_backward", "(768,512)", lambda: (randn(ROWS, 4 * C), randn(ROWS, 4 * C))),
        ("cross_entropy", "(768,65)", lambda: (logits, targets(), -100)),
        ("cross_entropy_backward", "(768,65)",
         lambda: (logits, targets(), logits_lse, -100, 1.0)),
        ("embedding_backward", "(12,64)->(65,128)",
         lambda: (rng.integers(0, VOCAB, (B, T)), randn(B, T, C), VOCAB)),
        ("adamw_step", f"{N_PARAMS} params", lambda: tuple(adam_state) + (
            1e-3, 0.9, 0.95, 1e-8, 0.1, 10)),
    ]


def time_call(fn, args, budget=0.02):
    """Seconds per call: run fn(*args) enough times to fill ~budget seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn(*args)
        elapsed = time.perf_counter() - start
        if elapsed >= budget or number >= 1 << 16:
            return elapsed / number, number
        number *= max(2, int(budget / max(elapsed, 1e-7)))


def measure(name, make_args, repeats, settle):
    """Median/min/max seconds per call for both kernel sets, timed in alternation."""
    args = make_args()
    sets = {"numpy": reference, "numba": jitted}
    numbers = {}
    for set_name, module in sets.items():  # warm up (compile) and size the inner loop
        kernels.use(set_name)
        getattr(module, name)(*args)
        numbers[set_name] = time_call(getattr(module, name), args)[1]
    samples = {set_name: [] for set_name in sets}
    for _ in range(repeats):
        for set_name, module in sets.items():
            kernels.use(set_name)
            fn = getattr(module, name)
            time.sleep(settle)  # let the other set's idle threads stop spinning
            warm_until = time.perf_counter() + 0.01
            while time.perf_counter() < warm_until:  # wake this set's threads
                fn(*args)
            start = time.perf_counter()
            for _ in range(numbers[set_name]):
                fn(*args)
            samples[set_name].append((time.perf_counter() - start) / numbers[set_name])
    kernels.use("numba")
    return {set_name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                       "samples": len(s), "calls_per_sample": numbers[set_name]}
            for set_name, s in samples.items()}


def load_jitted_at(revision):
    """The Numba kernel set as of git revision `revision`, imported beside this tree's.

    Its source (the package tensorlite/kernels/numba/, or the single module jitted.py of
    revisions before the kernels were split by topic) is extracted into a folder named after
    the revision's tree hash, so Numba's cache for it stays valid between runs, and imported as
    tensorlite.kernels.numba_<hash>, which keeps its relative imports (`from ..numpy import`,
    `from .. import`) pointing at this tree's kernels package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True).stdout

    split = subprocess.run(["git", "cat-file", "-e", f"{revision}:tensorlite/kernels/numba/__init__.py"],
                           cwd=root, capture_output=True).returncode == 0
    where = "tensorlite/kernels/numba" if split else "tensorlite/kernels/jitted.py"
    digest = git("rev-parse", f"{revision}:{where}").decode().strip()[:10]
    parent = os.path.join(tempfile.gettempdir(), "tensorlite_bench_kernels")
    folder = os.path.join(parent, digest)
    if not os.path.isdir(folder):
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent)
        if split:
            for name in git("ls-tree", "--name-only", f"{revision}:{where}").decode().split():
                if name.endswith(".py"):
                    with open(os.path.join(staging, name), "wb") as f:
                        f.write(git("show", f"{revision}:{where}/{name}"))
        else:
            with open(os.path.join(staging, "jitted.py"), "wb") as f:
                f.write(git("show", f"{revision}:{where}"))
        try:
            os.rename(staging, folder)
        except OSError:  # another run extracted the same revision first
            shutil.rmtree(staging, ignore_errors=True)
    name = f"tensorlite.kernels.numba_{digest}"
    if split:  # a package: its relative imports start one level down
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
    else:  # a plain module whose `from . import reference` means tensorlite.kernels
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "jitted.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def measure_ab_calls(calls, repeats, budget=0.003):
    """Seconds per call of each zero-argument callable in `calls`, alternating samples."""
    numbers = {}
    for side, fn in calls.items():
        fn()  # compile (or load from the cache)
        numbers[side] = time_call(fn, (), budget)[1]
    samples = {side: [] for side in calls}
    for _ in range(repeats):
        for side, fn in calls.items():
            start = time.perf_counter()
            for _ in range(numbers[side]):
                fn()
            samples[side].append((time.perf_counter() - start) / numbers[side])
    return {side: {"median_s": statistics.median(s), "min_s": min(s), "samples": len(s)}
            for side, s in samples.items()}


def measure_ab(name, make_args, old, new, repeats, budget=0.003):
    """Seconds per call of kernel `name` in modules old and new, alternating samples."""
    args = make_args()
    return measure_ab_calls({side: (lambda fn=getattr(module, name): fn(*args))
                             for side, module in (("old", old), ("new", new))},
                            repeats, budget)


def main_ab(args):
    kernels.use("numba")
    old = load_jitted_at(args.against)
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))  # load BLAS
    print("runtime:", kernels.format_runtime_info())
    print(f"A/B: old = the Numba kernels at {args.against}, new = this tree; {args.dtype}, "
          f"{args.repeats} alternating samples each")
    print()
    print("| kernel | shape | old min us | new min us | new/old min | old median us "
          "| new median us | new/old median |")
    print("|" + "---|" * 8)
    rows = []
    for name, shape, make_args in cases(np.dtype(args.dtype), np.random.default_rng(0)):
        if args.only and name not in args.only:
            continue
        result = measure_ab(name, make_args, old, jitted, args.repeats)
        o, n = result["old"], result["new"]
        rows.append({"kernel": name, "shape": shape, "dtype": args.dtype, **result})
        print(f"| {name} | {shape} | {fmt_us(o['min_s'])} | {fmt_us(n['min_s'])} | "
              f"{n['min_s'] / o['min_s']:.3f} | {fmt_us(o['median_s'])} | "
              f"{fmt_us(n['median_s'])} | {n['median_s'] / o['median_s']:.3f} |", flush=True)
    return rows


LINEAR_CONFIGS = {  # rows of x, n_embd: the four weights are (3C, C), (C, C), (4C, C), (C, 4C)
    "shakespeare-cpu": (12 * 64, 128),
    "gpt-mini": (32 * 512, 384),
}


def linear_separate(module, x, weight, bias, grad):
    """Forward and backward of a linear layer from matmul kernels, bias in a second pass."""
    out = module.matmul(x, weight.T)
    out += bias
    return out, module.matmul(grad, weight), module.matmul(grad.T, x), grad.sum(axis=0)


def linear_fused(module, x, weight, bias, grad):
    """Forward and backward of a linear layer from the fused linear kernels."""
    return (module.linear(x, weight, bias),) + module.linear_backward(grad, x, weight)


def main_linear(args):
    kernels.use("numba")
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))  # load BLAS
    print("runtime:", kernels.format_runtime_info())
    print(f"linear forward + backward, {args.dtype}: separate kernels (matmul, bias pass, "
          "two matmuls, column sum) against fused linear / linear_backward")
    print()
    print("| config | x | weight | separate min ms | fused min ms | fused/separate min "
          "| separate median ms | fused median ms | fused/separate median |")
    print("|" + "---|" * 9)
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    for config, (rows, width) in LINEAR_CONFIGS.items():
        for n_out, n_in in ((3 * width, width), (width, width), (4 * width, width),
                            (width, 4 * width)):
            x = rng.standard_normal((rows, n_in)).astype(dtype)
            weight = rng.standard_normal((n_out, n_in)).astype(dtype)
            bias = rng.standard_normal(n_out).astype(dtype)
            grad = rng.standard_normal((rows, n_out)).astype(dtype)
            sides = {"separate": linear_separate, "fused": linear_fused}
            result = measure_ab_calls(
                {side: (lambda fn=fn: fn(jitted, x, weight, bias, grad))
                 for side, fn in sides.items()}, args.repeats)
            a, b = result["separate"], result["fused"]
            print(f"| {config} | {x.shape} | {weight.shape} | {a['min_s'] * 1e3:.3f} | "
                  f"{b['min_s'] * 1e3:.3f} | {b['min_s'] / a['min_s']:.3f} | "
                  f"{a['median_s'] * 1e3:.3f} | {b['median_s'] * 1e3:.3f} | "
                  f"{b['median_s'] / a['median_s']:.3f} |", flush=True)


def fmt_us(seconds):
    return f"{seconds * 1e6:,.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed samples per kernel set")
    parser.add_argument("--settle", type=float, default=0.12,
                        help="seconds to pause after switching kernel sets: idle OpenBLAS "
                             "workers spin for ~0.1 s before sleeping")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--only", nargs="*", help="kernel names to run (default: all)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "results", "kernels.json"))
    parser.add_argument("--against", metavar="REV",
                        help="compare with the Numba kernels of git revision REV instead "
                             "of the NumPy reference (writes no JSON)")
    parser.add_argument("--linear", action="store_true",
                        help="time a linear layer's forward + backward, separate kernels "
                             "against the fused linear kernels (writes no JSON)")
    args = parser.parse_args(argv)
    if args.linear:
        main_linear(args)
        return
    if args.against:
        main_ab(args)
        return

    kernels.use("numba")
    jitted.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))  # load BLAS
    info = kernels.runtime_info()
    print("runtime:", kernels.format_runtime_info(info))
    print("policy: numpy = reference with BLAS on all cores; "
          "numba = jitted, BLAS 1 thread + Numba threads")
    print()

    rng = np.random.default_rng(0)
    rows = []
    header = ("| kernel | shape | numpy median us (min-max) | numba median us (min-max) "
              "| speedup |")
    print(header)
    print("|" + "---|" * 5)
    for name, shape, make_args in cases(np.dtype(args.dtype), rng):
        if args.only and name not in args.only:
            continue
        result = measure(name, make_args, args.repeats, args.settle)
        ref, fast = result["numpy"], result["numba"]
        speedup = ref["median_s"] / fast["median_s"]
        rows.append({"kernel": name, "shape": shape, "dtype": args.dtype, "numpy": ref,
                     "numba": fast, "speedup": speedup})
        print(f"| {name} | {shape} | {fmt_us(ref['median_s'])} ({fmt_us(ref['min_s'])}-"
              f"{fmt_us(ref['max_s'])}) | {fmt_us(fast['median_s'])} ({fmt_us(fast['min_s'])}-"
              f"{fmt_us(fast['max_s'])}) | {speedup:.2f}x |", flush=True)

    kernels.use("numba")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"runtime": kernels.runtime_info(), "repeats": args.repeats,
                   "results": rows}, f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
