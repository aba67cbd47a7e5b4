"""Worked example: pretrain a tiny GPT on raw text, then teach it 2-digit addition by SFT.

    python benchmarks/sft_addition/run.py                      # everything, into out-sft-addition/
    python benchmarks/sft_addition/run.py --pretrain-iters 200 --sft-iters 200   # a quick smoke run

Steps:

1. Pretrain: ``tensorlite-train --preset tiny`` on the default corpus (Python's help text), a
   char-level model of 2 layers, 64 wide, block 32. It learns English and Python, not sums.
2. Data: every "a+b=" -> "a+b" with a, b in 10..99 (8100 problems). A fixed random 500 are held
   out as the test set and never trained on; the rest are written to ``train.jsonl``
   ({"prompt": "12+34=", "completion": "46"} per line) for models/sft.py.
3. Accuracy before: greedy decoding (temperature 0) of each held-out prompt, answer = the text up
   to the first newline; exact match against the true sum.
4. SFT: fresh AdamW and a warmup + cosine schedule, starting from the pretrained weights; the loss
   counts only completion tokens (prompt targets are ignore_index), examples are packed into the
   32-token rows, each followed by the end marker "\\n".
5. Accuracy after, on the same held-out prompts.

``qa.jsonl`` beside this file is a small sample of the same data for the README's fine-tuning
example (``--data benchmarks/sft_addition/qa.jsonl``): the first 300 training problems of the
default seed, none of them from the held-out test set, written by ``run.py --write-qa PATH``.

It writes ``results.json``, ``pretrain/metrics.jsonl`` and ``sft/metrics.jsonl`` (plot both with
``tensorlite-plot``), and ``sft/ckpt.npz`` for ``tensorlite-sample --prompt "12+34="``.

The SFT step is a plain loop over the library (GPT, AdamW, models/sft.py). With the trainer's
``--init-from`` and ``--data-format sft`` the same run is::

    tensorlite-train --preset tiny --out-dir out-sft-addition/pretrain
    tensorlite-train --init-from out-sft-addition/pretrain/ckpt.npz --data-format sft \\
        --data out-sft-addition/sft/train.jsonl --out-dir out-sft-addition/sft-cli \\
        --max-iters 3000 --lr 1e-3 --min-lr 1e-4 --warmup-iters 100 --batch-size 32
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import tensorlite as tl  # noqa: E402  (tensorlite before NumPy-heavy work, as the entry points do)
from tensorlite import functional as F  # noqa: E402
from tensorlite.models import checkpoint as ckpt_io  # noqa: E402
from tensorlite.models.finetune import init_from_checkpoint  # noqa: E402
from tensorlite.models.sft import IGNORE_INDEX, SFTDataset, load_sft_file  # noqa: E402


def addition_problems(seed, n_test):
    """(train, test) lists of (prompt, completion) over all a+b with a, b in 10..99."""
    problems = [(f"{a}+{b}=", str(a + b)) for a in range(10, 100) for b in range(10, 100)]
    order = np.random.default_rng(seed).permutation(len(problems))
    test = [problems[i] for i in order[:n_test]]
    train = [problems[i] for i in order[n_test:]]
    return train, test


QA_SAMPLE_SIZE = 300  # lines of qa.jsonl: enough to see the SFT loss fall, small to ship


def write_jsonl(path, pairs):
    with open(path, "w", encoding="utf-8") as f:
        for prompt, completion in pairs:
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")


@tl.no_grad()
def exact_match(model, tokenizer, pairs, max_new_tokens=4, batch_size=250):
    """Fraction of prompts whose greedy answer (up to the first newline) equals the completion."""
    correct, examples = 0, []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        # All prompts "ab+cd=" have 6 characters, so they form one (B, 6) batch.
        idx = np.asarray([tokenizer.encode(p) for p, _ in chunk], dtype=np.int64)
        out = model.generate(idx, max_new_tokens, temperature=0.0)
        for (prompt, answer), row in zip(chunk, out):
            text = tokenizer.decode(row[idx.shape[1]:].tolist()).split("\n")[0]
            correct += text == answer
            if len(examples) < 5:
                examples.append(f"{prompt}{text}  (expected {answer})")
    return correct / len(pairs), examples


@tl.no_grad()
def sft_loss(model, data, split, batch_size, block_size, rng, batches):
    model.eval()
    losses = []
    for _ in range(batches):
        x, y = data.get_batch(split, batch_size, block_size, rng)
        logits, _ = model(x)
        losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                      ignore_index=IGNORE_INDEX).item())
    model.train()
    return float(np.mean(losses))


def fine_tune(model, data, args, metrics_path):
    """The SFT loop: nanoGPT's training step with the loss masked to completion tokens."""
    block_size = model.config.block_size
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=args.lr, betas=(0.9, 0.99))
    schedule = tl.optim.CosineWarmupSchedule(max_lr=args.lr, min_lr=args.lr / 10, warmup_iters=100,
                                             lr_decay_iters=args.sft_iters)
    params = list(model.parameters())
    rng = np.random.default_rng([args.seed, 1])
    tokens_per_iter = args.batch_size * block_size
    model.train()
    with open(metrics_path, "w", encoding="utf-8") as metrics:
        def write(**record):
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

        t0, window = time.perf_counter(), []
        for it in range(args.sft_iters + 1):
            lr = schedule.apply(optimizer, it)
            if it % args.eval_interval == 0 or it == args.sft_iters:
                eval_rng = np.random.default_rng([args.seed, 2, it])
                losses = {split: sft_loss(model, data, split, args.batch_size, block_size, eval_rng, 10)
                          for split in ("train", "val")}
                print(f"sft step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
                write(event="eval", iter=it, train_loss=losses["train"], val_loss=losses["val"], lr=lr,
                      tokens=it * tokens_per_iter)
            if it == args.sft_iters:
                break
            x, y = data.get_batch("train", args.batch_size, block_size, rng)
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)
            loss.backward()
            tl.optim.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.item())
            if (it + 1) % 50 == 0:
                dt = time.perf_counter() - t0
                write(event="train", iter=it + 1, loss=window[-1], mean_loss=float(np.mean(window)), lr=lr,
                      ms_per_iter=1000 * dt / len(window), tokens=(it + 1) * tokens_per_iter)
                t0, window = time.perf_counter(), []
    return optimizer


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="out-sft-addition")
    p.add_argument("--pretrain-iters", type=int, default=2000, help="iterations of the tiny preset (2000)")
    p.add_argument("--sft-iters", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--reuse-pretrain", action="store_true", help="keep an existing pretrain/ckpt.npz")
    p.add_argument("--write-qa", metavar="PATH",
                   help=f"only write the first {QA_SAMPLE_SIZE} training problems to PATH (qa.jsonl) and exit")
    args = p.parse_args()
    if args.write_qa:
        write_jsonl(args.write_qa, addition_problems(args.seed, args.n_test)[0][:QA_SAMPLE_SIZE])
        return

    pre_dir, sft_dir = os.path.join(args.out_dir, "pretrain"), os.path.join(args.out_dir, "sft")
    os.makedirs(sft_dir, exist_ok=True)
    pre_ckpt = os.path.join(pre_dir, "ckpt.npz")

    # 1. pretraining, with the ordinary trainer
    if not (args.reuse_pretrain and os.path.exists(pre_ckpt)):
        command = [sys.executable, "-m", "tensorlite.models.train", "--preset", "tiny", "--out-dir", pre_dir,
                   "--max-iters", str(args.pretrain_iters), "--lr-decay-iters", str(args.pretrain_iters),
                   "--sample-tokens", "0", "--no-progress", "--seed", str(args.seed)]
        print("$ " + " ".join(command[2:]), flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        subprocess.run(command, check=True, env=env)

    # 2. data
    train_pairs, test_pairs = addition_problems(args.seed, args.n_test)
    train_path = os.path.join(sft_dir, "train.jsonl")
    write_jsonl(train_path, train_pairs)
    write_jsonl(os.path.join(sft_dir, "test.jsonl"), test_pairs)
    examples = load_sft_file(train_path)
    model, tokenizer = init_from_checkpoint(pre_ckpt, text="".join(e.prompt + e.completion for e in examples) + "\n",
                                            data_name=train_path)
    data = SFTDataset(examples, tokenizer, val_fraction=0.05, name=train_path)

    # 3. before
    tl.manual_seed(args.seed)
    before, before_examples = exact_match(model, tokenizer, test_pairs)
    print(f"held-out exact match before SFT: {before:.1%}  e.g. {before_examples[:3]}", flush=True)

    # 4. SFT
    t0 = time.perf_counter()
    optimizer = fine_tune(model, data, args, os.path.join(sft_dir, "metrics.jsonl"))
    sft_seconds = time.perf_counter() - t0

    # 5. after
    after, after_examples = exact_match(model, tokenizer, test_pairs)
    print(f"held-out exact match after SFT:  {after:.1%}  e.g. {after_examples[:3]}", flush=True)

    ckpt_io.save(os.path.join(sft_dir, "ckpt.npz"), model, optimizer, model.config, tokenizer,
                 rng_state=None, iteration=args.sft_iters, extra={"init_from": pre_ckpt})
    results = {
        "task": "2-digit addition a+b=, a, b in 10..99; greedy decoding; exact match",
        "n_train_problems": len(train_pairs), "n_test_problems": len(test_pairs),
        "pretrain_iters": args.pretrain_iters, "sft_iters": args.sft_iters, "batch_size": args.batch_size,
        "lr": args.lr, "sft_seconds": round(sft_seconds, 1),
        "exact_match_before": before, "exact_match_after": after,
        "examples_before": before_examples, "examples_after": after_examples,
    }
    with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(json.dumps({k: results[k] for k in ("exact_match_before", "exact_match_after")}))
    print(f"plot: tensorlite-plot {pre_dir}/metrics.jsonl {sft_dir}/metrics.jsonl --sequential "
          f"--labels pretrain sft -o {args.out_dir}/loss.png")
    print(f"try:  tensorlite-sample --checkpoint {sft_dir}/ckpt.npz --prompt 12+34= --num-tokens 3 --temperature 0")


if __name__ == "__main__":
    main()
