"""Convert between tensorlite checkpoints and Hugging Face GPT-2 directories: ``tensorlite-convert``.

Examples::

    tensorlite-convert --from-hf gpt2-dir --out gpt2.npz                   # HF -> checkpoint
    tensorlite-convert --from-hf gpt2-dir --out gpt2.npz --gpt2-tokenizer  # with GPT-2's BPE
    tensorlite-convert --checkpoint out/ckpt.npz --to-hf hf-dir            # checkpoint -> HF

A converted checkpoint holds the model and the tokenizer (iteration 0, no optimizer state), so
``tensorlite-sample --checkpoint gpt2.npz`` and ``tensorlite-train --init-from gpt2.npz`` take it.
The tokenizer comes from ``tensorlite_tokenizer.json`` in the directory (written by ``--to-hf``),
or, with ``--gpt2-tokenizer``, from GPT-2's ``vocab.json`` + ``merges.txt``.

Nothing is overwritten without ``--overwrite``. ``--to-hf DIR --overwrite`` replaces the whole
directory: the export is built in a temporary directory beside it and swapped in at once, so
``DIR`` holds the complete old export or the complete new one even if the command is killed, and
files of the old export never stay beside the new weights (models/atomic_dir.py). While it
runs, ``DIR.lock`` keeps a second conversion into ``DIR`` out. Exit codes: 0 success; 2 bad input
or ``DIR`` in use (one line on stderr naming the file and the tensor or field); 1 the output
could not be written.
"""

import argparse
import os
import sys

PROG = "tensorlite-convert"
EXIT_OK, EXIT_IO, EXIT_USAGE = 0, 1, 2


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Convert GPT-2 weights between Hugging Face "
                                "safetensors directories and tensorlite checkpoints.")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="DIR", help="Hugging Face GPT-2 directory to read")
    direction.add_argument("--checkpoint", metavar="PATH", help="tensorlite checkpoint to read")
    p.add_argument("--out", metavar="PATH", help="checkpoint to write (with --from-hf)")
    p.add_argument("--to-hf", metavar="DIR", help="directory to write (with --checkpoint)")
    p.add_argument("--gpt2-tokenizer", action="store_true",
                   help="use GPT-2's byte-level BPE from the directory's vocab.json + merges.txt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (with --to-hf: the whole directory)")
    return p


def _check_args(args, parser):
    if args.from_hf is not None and (args.out is None or args.to_hf is not None):
        parser.error("--from-hf needs --out PATH (and no --to-hf)")
    if args.checkpoint is not None and (args.to_hf is None or args.out is not None):
        parser.error("--checkpoint needs --to-hf DIR (and no --out)")
    if args.checkpoint is not None and args.gpt2_tokenizer:
        parser.error("--gpt2-tokenizer applies to --from-hf only")


def _refuse_existing(args):
    """The message to print when the output may not be replaced (it exists and --overwrite was
    not given, or --to-hf names something that is not a directory), else None."""
    from .hf import CONFIG_NAME, WEIGHTS_NAME

    if args.to_hf is not None and os.path.islink(args.to_hf):
        # The export swaps directories by name; swapping a link would leave its target stale.
        return f"{args.to_hf} is a symbolic link; give the directory it points to"
    if args.to_hf is not None and os.path.exists(args.to_hf) and not os.path.isdir(args.to_hf):
        return f"{args.to_hf} exists and is not a directory"
    if args.overwrite:
        return None
    if args.out is not None and os.path.exists(args.out):
        return f"{args.out} already exists; pass --overwrite to replace it"
    if args.to_hf is not None and os.path.isdir(args.to_hf):
        taken = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if os.path.exists(os.path.join(args.to_hf, n))]
        if taken:
            return f"{os.path.join(args.to_hf, taken[0])} already exists; pass --overwrite to replace it"
        if os.listdir(args.to_hf):
            return f"{args.to_hf} is not empty; pass --overwrite to replace it and everything in it"
    return None


def main(argv=None):
    """Entry point of ``tensorlite-convert``; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_args(args, parser)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE

    from .atomic_dir import TargetExistsError
    from .checkpoint import CheckpointError
    from .hf import HFFormatError, checkpoint_from_hf, hf_from_checkpoint
    from .run_lock import RunLockError

    try:
        refusal = _refuse_existing(args)
        if refusal:
            return _error(refusal, EXIT_USAGE)
        if args.from_hf is not None:
            checkpoint_from_hf(args.from_hf, args.out, gpt2_tokenizer=args.gpt2_tokenizer)
            print(f"wrote {args.out}")
        else:
            for note in hf_from_checkpoint(args.checkpoint, args.to_hf, overwrite=args.overwrite):
                print(note)
            print(f"wrote {args.to_hf}")
    except (HFFormatError, CheckpointError, RunLockError) as error:
        return _error(error, EXIT_USAGE)
    except TargetExistsError as error:
        return _error(f"{error}; pass --overwrite to replace it" if error.replaceable else error, EXIT_USAGE)
    except OSError as error:
        return _error(f"cannot write the output: {error.strerror or error}", EXIT_IO)
    return EXIT_OK


def _error(message, code):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
