"""Character LSTM against the `shakespeare-cpu` GPT: same data, same parameter budget, same
wall-clock training time on the same machine; validation loss against time, a plot, a sample.

    python benchmarks/char_lstm/train.py                  # 150 s of training for each model
    python benchmarks/char_lstm/train.py --seconds 30     # a quick look

Data: tiny Shakespeare from ../shared/data/tinyshakespeare.txt (relative to the project root)
when it exists, else the built-in corpus the GPT trainer uses; characters as tokens, the last
10% for validation (models/data.py's split).

The two models (float32, tensorlite, Numba kernels):
* GPT: the `shakespeare-cpu` preset (4 layers, 4 heads, n_embd 128, block 64, batch 12, AdamW
  lr 1e-3 -> 1e-4, betas 0.9/0.99, weight decay 0.1, clip 1.0, 100 warmup steps);
* LSTM: embedding 64, 2-layer LSTM of hidden size 256, linear head, about the same number of
  parameters; batch 32 x 64 characters (benchmarks/bench_lstm.py's shape), Adam lr 2e-3 ->
  2e-4 (char-rnn's usual rate), clip 1.0, 100 warmup steps.
Both decay their learning rate by the preset's cosine, stretched over the time budget (the
fraction of training time spent) instead of over a number of steps, as the budget is time.

Each model trains for `--seconds` of training time in its own fresh process (the GPT first);
every `--eval-every` seconds the clock stops while the validation loss is measured on the same
fixed windows for both (`--eval-batches` x 32 windows of 64 characters, each model reading
the window from a zero state). Writes results.json, loss_vs_time.png and samples.txt beside
this file (or to --out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, os.path.dirname(HERE)]

BLOCK = 64
EVAL_BATCH = 32
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")


def load_data():
    from models.data import TokenDataset, encode_corpus, load_text
    from models.tokenizer import CharTokenizer
    text, name = load_text(SHAKESPEARE if os.path.exists(SHAKESPEARE) else None)
    tokenizer = CharTokenizer(text)
    return TokenDataset(encode_corpus(text, tokenizer), 0.1, name), tokenizer, name


def lr_at(step, elapsed_fraction, max_lr, min_lr, warmup=100):
    """Linear warmup over `warmup` steps, then the preset's cosine over the elapsed time."""
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    ratio = min(max(elapsed_fraction, 0.0), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


class GPTModel:
    batch_size, max_lr, min_lr = 12, 1e-3, 1e-4

    def __init__(self, vocab_size):
        from models.gpt import GPT, GPTConfig
        from models.train_settings import PRESETS
        preset = PRESETS["shakespeare-cpu"]
        self.model = GPT(GPTConfig(vocab_size=vocab_size, block_size=preset["block_size"],
                                   n_layer=preset["n_layer"], n_head=preset["n_head"],
                                   n_embd=preset["n_embd"], dropout=preset["dropout"]))
        self.optimizer = self.model.configure_optimizers(
            preset["weight_decay"], preset["lr"], (preset["beta1"], preset["beta2"]))
        self.max_lr, self.min_lr = preset["lr"], preset["min_lr"]
        self.parameters = list(self.model.parameters())

    def loss(self, x, y):
        return self.model(x, y)[1]

    def sample(self, prompt, n, rng):
        import numpy as np
        out = self.model.generate(np.asarray(prompt)[None], n, temperature=0.8, rng=rng)
        return [int(i) for i in np.asarray(out.data if hasattr(out, "data") else out)[0]]


class LSTMModel:
    batch_size, max_lr, min_lr = 32, 2e-3, 2e-4

    def __init__(self, vocab_size):
        import tensorlite as tl
        from tensorlite.nn.rnn import LSTM
        self.tl = tl
        self.embedding = tl.nn.Embedding(vocab_size, 64)
        self.lstm = LSTM(64, 256, num_layers=2)
        self.head = tl.nn.Linear(256, vocab_size)
        self.parameters = [p for m in (self.embedding, self.lstm, self.head)
                           for p in m.parameters()]
        self.optimizer = tl.optim.Adam(self.parameters, lr=self.max_lr)

    def logits(self, x, state=None):
        output, state = self.lstm(self.embedding(x), state)  # x (T, B): output (T, B, 256)
        return self.head(output), state

    def loss(self, x, y):  # x, y (B, T) as the GPT's
        logits, _ = self.logits(x.T)
        return self.tl.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   y.T.reshape(-1))

    def sample(self, prompt, n, rng):
        import numpy as np
        tl = self.tl
        out = list(prompt)
        with tl.no_grad():
            logits, state = self.logits(np.asarray(prompt)[:, None])
            for _ in range(n):
                z = logits.data[-1, 0].astype(np.float64) / 0.8
                p = np.exp(z - z.max())
                token = int(rng.choice(len(p), p=p / p.sum()))
                out.append(token)
                logits, state = self.logits(np.array([[token]]), state)
        return out


def worker(kind, seconds, eval_every, eval_batches, seed):
    import numpy as np
    import tensorlite as tl
    tl.manual_seed(seed)
    data, tokenizer, name = load_data()
    model = (GPTModel if kind == "gpt" else LSTMModel)(tokenizer.vocab_size)
    n_params = sum(int(p.data.size) for p in model.parameters)
    eval_rng = np.random.default_rng(12345)  # the same windows for both models
    eval_set = [data.get_batch("val", EVAL_BATCH, BLOCK, eval_rng) for _ in range(eval_batches)]
    rng = np.random.default_rng(seed)

    def evaluate():
        with tl.no_grad():
            return float(np.mean([model.loss(x, y).item() for x, y in eval_set]))

    curve = [(0.0, 0, evaluate())]
    trained, step, next_eval = 0.0, 0, eval_every
    while trained < seconds:
        started = time.perf_counter()
        lr = lr_at(step, trained / seconds, model.max_lr, model.min_lr)
        for group in model.optimizer.param_groups:
            group["lr"] = lr
        x, y = data.get_batch("train", model.batch_size, BLOCK, rng)
        loss = model.loss(x, y)
        loss.backward()
        tl.optim.clip_grad_norm_(model.parameters, 1.0)
        model.optimizer.step()
        model.optimizer.zero_grad()
        step += 1
        trained += time.perf_counter() - started
        if trained >= next_eval or trained >= seconds:
            curve.append((trained, step, evaluate()))
            print(f"{kind}: {trained:6.1f} s  step {step:5d}  val loss {curve[-1][2]:.4f}",
                  flush=True)
            next_eval += eval_every
    try:
        prompt = list(tokenizer.encode("ROMEO:\n"))
    except (KeyError, ValueError):  # a corpus without those characters: its own first line
        prompt = [int(t) for t in data.val[:8]]
    sample = tokenizer.decode(model.sample(prompt, 400, np.random.default_rng(seed)))
    return {"kind": kind, "parameters": n_params, "steps": step, "curve": curve,
            "sample": sample, "corpus": name, "batch_size": model.batch_size,
            "tokens_per_step": model.batch_size * BLOCK}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in results:
        seconds, _, losses = zip(*r["curve"])
        ax.plot(seconds, losses, marker="o", markersize=3,
                label=f"{r['kind'].upper()} ({r['parameters'] / 1e6:.2f} M parameters)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_ylim(top=min(4.3, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--eval-every", type=float, default=15.0)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--worker", choices=["gpt", "lstm"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds, args.eval_every, args.eval_batches,
                                args.seed)))
        return
    from bench_train import cpu_info
    cpu = cpu_info()
    results = []
    for kind in ("gpt", "lstm"):
        command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--seconds",
                   str(args.seconds), "--eval-every", str(args.eval_every), "--eval-batches",
                   str(args.eval_batches), "--seed", str(args.seed)]
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        sys.stderr.write(done.stderr[-2000:])
        if done.returncode != 0:
            sys.exit(f"{kind} worker failed")
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:-1]))
        result = json.loads(lines[-1])
        result["load_average"] = [load_before, os.getloadavg()[0]]
        results.append(result)
    os.makedirs(args.out, exist_ok=True)
    summary = {"cpu": cpu, "seconds": args.seconds, "results": results}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot(results, os.path.join(args.out, "loss_vs_time.png"))
    with open(os.path.join(args.out, "samples.txt"), "w") as f:
        for r in results:
            f.write(f"=== {r['kind'].upper()} after {args.seconds:.0f} s ===\n{r['sample']}\n\n")
    print(f"\nCPU: {cpu['model']} (family {cpu['family']}, model {cpu['model_number']})")
    print("| time (s) | " + " | ".join(f"{r['kind'].upper()} val loss" for r in results) + " |")
    print("|---|---|---|")
    marks = [t for t, _, _ in results[0]["curve"]]
    for index, mark in enumerate(marks):
        row = [f"{mark:.0f}"]
        for r in results:
            curve = r["curve"]
            row.append(f"{curve[min(index, len(curve) - 1)][2]:.3f}")
        print("| " + " | ".join(row) + " |")
    for r in results:
        print(f"{r['kind']}: {r['parameters']} parameters, {r['steps']} steps, final val loss "
              f"{r['curve'][-1][2]:.4f}")


if __name__ == "__main__":
    main()
