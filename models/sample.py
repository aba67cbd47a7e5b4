"""Generate text from a trained checkpoint: ``tensorlite-sample`` (or ``python -m tensorlite.models.sample``).

Example::

    tensorlite-sample --checkpoint out/best.npz --prompt "ROMEO:" --num-tokens 300 --top-k 40

The model, its config and its tokenizer all come from the checkpoint, so nothing
else is needed. Without --checkpoint it loads out/best.npz, the state with the lowest
validation loss that tensorlite-train saved, or out/ckpt.npz (the latest state) when the
run saved no best. The whole checkpoint is checked before the model is built (see
models/checkpoint.py), and so is the memory the requested number of tokens needs. The output is the prompt followed by the sampled continuation.
Sampling draws from a generator seeded with ``--seed``: the same command prints the
same text.

Exit codes: 0 success; 2 bad input (a one-line message on stderr: missing, damaged or
foreign checkpoint; a prompt with characters the vocabulary does not have; an
impossible sampling setting; more tokens than fit in memory).
"""

import argparse
import math
import os
import sys

import numpy as np

import tensorlite as tl
from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError

PROG = "tensorlite-sample"
EXIT_OK, EXIT_USAGE = 0, 2
DEFAULT_CHECKPOINTS = (os.path.join("out", "best.npz"), os.path.join("out", "ckpt.npz"))


class UsageError(ValueError):
    """A setting or prompt that cannot be used (exit code 2)."""


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Sample text from a tensorlite GPT checkpoint.")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint written by tensorlite-train (default: out/best.npz, the lowest validation "
                        "loss, or out/ckpt.npz, the latest, when there is no best.npz)")
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
    tiny = np.finfo(np.float64).tiny
    if 0 < args.temperature < tiny:
        raise UsageError(f"--temperature {args.temperature} is below {tiny:.3g}, the smallest normal float64, "
                         f"where dividing by it loses precision; use 0 for greedy sampling")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.seed < 0:
        raise UsageError(f"--seed must be zero or positive, got {args.seed}")
    if args.prompt == "":
        raise UsageError("--prompt is empty; give at least one character to start from")


def default_checkpoint():
    """out/best.npz if tensorlite-train saved one, else out/ckpt.npz."""
    best, latest = DEFAULT_CHECKPOINTS
    return best if os.path.exists(best) else latest


def load_model(path):
    """Rebuild (model, tokenizer) from a checkpoint file; CheckpointError if it does not fit.

    Every part of the checkpoint is checked (``checkpoint.check_gpt``) before the model is built.
    """
    from .gpt import GPT

    checkpoint = ckpt_io.load(path)
    config, tokenizer, dtype = ckpt_io.check_gpt(checkpoint, path)
    try:
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


def check_generation_memory(model, prompt_length, num_tokens):
    """Refuse a number of tokens whose output array and model work would not fit in memory."""
    from .gpt_config import available_memory, estimate_memory, format_bytes

    dtype = model.transformer.wte.weight.dtype
    needed = 8 * (prompt_length + num_tokens) + estimate_memory(model.config, 1, dtype=dtype, training=False)
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(f"--num-tokens {num_tokens} needs about {format_bytes(needed)}, more than the "
                         f"{format_bytes(available)} of available memory")


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
        model, tokenizer = load_model(args.checkpoint or default_checkpoint())
        if args.prompt is None:
            # Start a fresh line, or from token 0 if the corpus had no newlines.
            try:
                prompt_ids = list(tokenizer.encode("\n"))
            except (KeyError, ValueError):
                prompt_ids = [0]
        else:
            prompt_ids = encode_prompt(tokenizer, args.prompt)
        if max(prompt_ids) >= model.config.vocab_size:
            raise UsageError(f"the prompt encodes to token {max(prompt_ids)}, beyond the model's vocabulary "
                             f"of {model.config.vocab_size}")
        check_generation_memory(model, len(prompt_ids), args.num_tokens)
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
