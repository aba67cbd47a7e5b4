"""Generate text from a trained checkpoint: ``tensorlite-sample`` (or ``python -m models.sample``).

Example::

    tensorlite-sample --checkpoint out/ckpt.npz --prompt "ROMEO:" --num-tokens 300 --top-k 40

The model, its config and its tokenizer all come from the checkpoint, so nothing
else is needed. The output is the prompt followed by the sampled continuation.
Sampling draws from a generator seeded with ``--seed``: the same command prints the
same text.

Exit codes: 0 success; 2 bad input (a one-line message on stderr: missing, damaged or
foreign checkpoint; a prompt with characters the vocabulary does not have; an
impossible sampling setting).
"""

import argparse
import math
import os
import sys

import numpy as np

import tensorlite as tl
from models import checkpoint as ckpt_io
from models.checkpoint import CheckpointError

PROG = "tensorlite-sample"
EXIT_OK, EXIT_USAGE = 0, 2


class UsageError(ValueError):
    """A setting or prompt that cannot be used (exit code 2)."""


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Sample text from a tensorlite GPT checkpoint.")
    p.add_argument("--checkpoint", default="out/ckpt.npz", metavar="PATH",
                   help="checkpoint written by tensorlite-train (out/ckpt.npz)")
    p.add_argument("--prompt", default=None, metavar="TEXT", help="text to continue (default: a newline)")
    p.add_argument("--num-tokens", type=int, default=500, metavar="N", help="tokens to generate (500)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T",
                   help="divide the logits by T; lower is more conservative, 0 is greedy (0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample only among the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="sample only among the most likely tokens whose probabilities add up to P")
    p.add_argument("--seed", type=int, default=1337, help="random seed (1337)")
    p.add_argument("--kernels", choices=("numba", "numpy"), default=None, help="kernel set")
    return p


def validate(args):
    if args.num_tokens < 0:
        raise UsageError(f"--num-tokens must be zero or positive, got {args.num_tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.seed < 0:
        raise UsageError(f"--seed must be zero or positive, got {args.seed}")
    if args.prompt == "":
        raise UsageError("--prompt is empty; give at least one character to start from")


def load_model(path):
    """Rebuild (model, tokenizer) from a checkpoint file; CheckpointError if it does not fit."""
    from models.gpt import GPT, GPTConfig
    from models.tokenizer import tokenizer_from_dict

    checkpoint = ckpt_io.load(path)
    try:
        config = GPTConfig.from_dict(checkpoint.config)
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
        dtype = checkpoint.model_state["transformer.wte.weight"].dtype
        model = GPT(config, dtype=dtype)
        model.load_state_dict(checkpoint.model_state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        message = " ".join(str(error).split())
        raise CheckpointError(f"{path} cannot be loaded as a GPT: {message}") from None
    model.eval()
    return model, tokenizer


def encode_prompt(tokenizer, prompt):
    """Token ids of the prompt; UsageError naming the characters the vocabulary lacks."""
    try:
        return list(tokenizer.encode(prompt))
    except (KeyError, ValueError) as error:
        vocabulary = getattr(tokenizer, "stoi", None)
        if isinstance(vocabulary, dict):
            unknown = sorted({c for c in prompt if c not in vocabulary})
            shown = " ".join(repr(c) for c in unknown[:10])
            raise UsageError(
                f"the prompt has {len(unknown)} character(s) not in the checkpoint's vocabulary: {shown}") from None
        raise UsageError(f"the prompt cannot be encoded with the checkpoint's tokenizer: {error}") from None


def main(argv=None):
    """Entry point of ``tensorlite-sample``; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    try:
        validate(args)
        if args.kernels:
            tl.kernels.use(args.kernels)
        model, tokenizer = load_model(args.checkpoint)
        if args.prompt is None:
            # Start a fresh line, or from token 0 if the corpus had no newlines.
            try:
                prompt_ids = list(tokenizer.encode("\n"))
            except (KeyError, ValueError):
                prompt_ids = [0]
        else:
            prompt_ids = encode_prompt(tokenizer, args.prompt)
    except (CheckpointError, UsageError) as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return EXIT_USAGE

    idx = np.asarray([prompt_ids], dtype=np.int64)  # (1, T)
    rng = np.random.default_rng(args.seed)
    try:
        out = model.generate(idx, args.num_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, rng=rng)
        text = tokenizer.decode(np.asarray(out)[0].tolist())
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
