"""Train a GPT on a text file: ``tensorlite-train`` (or ``python -m tensorlite.models.train``).

The loop is nanoGPT's ``train.py``, step for step:

    for each iteration:
        set the learning rate (linear warmup, then cosine decay)
        every eval_interval iterations: estimate train and val loss, save a checkpoint if val improved
        grad_accum times: forward a batch, backward (loss / grad_accum)
        clip the gradient norm, optimizer step, zero the gradients
        every log_interval iterations: print loss, lr, ms/iter, tokens/s, MFU

Examples::

    tensorlite-train --preset tiny                          # about half a minute on two cores
    tensorlite-train --preset shakespeare-cpu --data input.txt --out-dir out-shakespeare
    tensorlite-train --out-dir out-shakespeare --resume --max-iters 3000
    tensorlite-train --init-from out/ckpt.npz --data-format sft \
        --data benchmarks/sft_addition/qa.jsonl --out-dir out-sft     # 300 "a+b=" -> "sum" pairs

Fine-tuning: ``--init-from CKPT`` takes the weights and the tokenizer of a checkpoint (a run of
this trainer, or a Hugging Face GPT-2 converted by ``tensorlite-convert``) and nothing else: the
optimizer, the learning-rate schedule, the iteration count and the best validation loss start
afresh on the new ``--data``. Shape flags (--n-layer, --n-head, --n-embd, --block-size, --bias)
must match the checkpoint or be omitted; --dropout may change. Text the tokenizer cannot encode
is an error naming the characters, unless ``--extend-vocab`` grows a char vocabulary (and the
embedding rows with it, see models/finetune.py).

``--data-format sft`` reads JSON lines of {"prompt": ..., "completion": ...} (models/sft.py):
the loss counts only the completion tokens (and the end marker, a newline for char and byte
tokenizers); prompt and padding positions get the target -100, which the loss ignores. Examples
are packed whole into rows of --block-size positions; a longer example loses the left of its
prompt, then the tail of its completion (the run says how many were truncated). The last 10 %
of the examples are the validation split. Each micro-batch's loss is the mean over its scored
tokens.

Resuming is exact (with the same kernel set and thread count: parallel kernels sum
in an order that depends on the number of threads): the checkpoint holds the model,
the optimizer moments and step counts, the iteration, the best validation loss, and the states of both random
generators (the one that picks training batches and the library generator behind
dropout). Evaluation draws its batches from its own generator, seeded from the run's
seed and the iteration, so evaluating never disturbs training. Hence running
100 iterations, resuming and running 100 more gives bit for bit the parameters of
200 iterations in one go (with the same learning-rate schedule, i.e. the same
--lr-decay-iters).

Files in --out-dir: ``ckpt.npz`` is the latest state (written at every evaluation and at the
end; ``--resume`` continues from it), ``best.npz`` the state with the lowest validation loss
so far (what ``tensorlite-sample`` loads by default), ``metrics.jsonl`` one JSON object per
log line. A previous run is never destroyed: without ``--resume`` an out dir that holds any
of these is refused unless ``--overwrite`` is given.

Before anything is allocated or written, every setting, the data file (a regular file small
enough for memory), the checkpoint (every field, see models/checkpoint.py) and the memory
the model, optimizer and activations need are checked.

One run per out dir: a run holds ``<out-dir>/run.lock`` while it reads and writes there; a second
run into the same directory is refused (exit code 2, naming the holder's pid). Ctrl-C, SIGTERM
or a closed stdout (``| head``) during training stop the run after the current step with its
checkpoint saved and one line saying how to continue (models/run_control.py); a second Ctrl-C
interrupts at once.

Exit codes: 0 success; 1 the checkpoint could not be written (disk full, ...); 2 bad input (a
one-line message on stderr: unusable data file, impossible model sizes, not enough memory, a
checkpoint that is damaged or does not match, an out dir holding a previous run or in use by
another); 3 the loss became NaN or infinite (training stops, the last good checkpoint is kept);
130 Ctrl-C (SIGINT), 141 stdout closed, 143 SIGTERM. A metrics file that cannot be written
(disk full) costs a warning, not the run.

This module is the command line; the settings and their checks are in models/train_settings.py,
the run itself (the checks before it, the loop, the checkpoints) in models/trainer.py.
"""

import argparse
import os
import sys

import tensorlite as tl
from . import distributed_training as distributed
from . import run_control
from .checkpoint import CheckpointError
from .data import DataError
from .metrics_writer import MetricsWriter
from .run_control import Console, RunStopped
from .sft import describe_characters
from .train_settings import DEFAULTS, PRESETS, UsageError, resolve_settings, validate_settings
from .trainer import (CheckpointWriteError, NonFiniteLossError, Run, check_out_dir, cold_kernel_cache,
                      make_eval_rng)

# Besides the command: the settings and pieces of a run that callers (tests, benchmarks) take
# from here.
__all__ = ["main", "build_parser", "PROG", "EXIT_OK", "EXIT_IO", "EXIT_USAGE", "EXIT_NONFINITE",
           "EXIT_INTERRUPTED", "DEFAULTS", "PRESETS", "UsageError", "resolve_settings", "validate_settings",
           "MetricsWriter", "make_eval_rng", "Run"]

PROG = "tensorlite-train"

EXIT_OK, EXIT_IO, EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a GPT language model with tensorlite (nanoGPT's training loop on NumPy).",
        epilog="Explicit flags override --preset values. Exit codes: 0 ok, 1 checkpoint not written, 2 bad input, "
               "3 NaN/inf loss, 130 Ctrl-C, 141 stdout closed, 143 SIGTERM (saved, continue with --resume).",
    )
    # Every default is None so we can tell "given on the command line" from "not given".
    S = argparse.SUPPRESS
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named set of settings")

    g = p.add_argument_group("data")
    g.add_argument("--data", default=S, metavar="PATH",
                   help="UTF-8 text file (default: Python's built-in help text, pydoc_data.topics)")
    g.add_argument("--data-format", choices=("text", "sft"), default=S,
                   help="text (default), or sft: JSON lines of {\"prompt\": ..., \"completion\": ...}, "
                        "loss on the completions only (needs --data)")
    g.add_argument("--tokenizer", choices=("char", "bpe"), default=S, help="char (default) or bpe")
    g.add_argument("--bpe-vocab-size", type=int, default=S, metavar="N", help="vocabulary size of --tokenizer bpe (512)")

    g = p.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=S, metavar="N", help="transformer blocks (4)")
    g.add_argument("--n-head", type=int, default=S, metavar="N", help="attention heads (4)")
    g.add_argument("--n-embd", type=int, default=S, metavar="N", help="embedding width (128)")
    g.add_argument("--block-size", type=int, default=S, metavar="N", help="context length in tokens (64)")
    g.add_argument("--dropout", type=float, default=S, metavar="P", help="dropout probability (0.0)")
    g.add_argument("--bias", dest="bias", action="store_true", default=S, help="biases in Linear and LayerNorm (default)")
    g.add_argument("--no-bias", dest="bias", action="store_false", default=S, help="no biases")
    g.add_argument("--dtype", choices=("float32", "float64"), default=S, help="parameter dtype (float32)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=S, metavar="N", help="sequences per micro-batch (12)")
    g.add_argument("--grad-accum", type=int, default=S, metavar="N", help="micro-batches per step (1)")
    g.add_argument("--max-iters", type=int, default=S, metavar="N", help="optimizer steps in total (2000)")
    g.add_argument("--lr", type=float, default=S, help="peak learning rate (1e-3)")
    g.add_argument("--min-lr", type=float, default=S, help="final learning rate of the cosine decay (1e-4)")
    g.add_argument("--warmup-iters", type=int, default=S, metavar="N", help="linear warmup steps (100)")
    g.add_argument("--lr-decay-iters", type=int, default=S, metavar="N", help="step where the decay reaches --min-lr (= --max-iters)")
    g.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay of the matrices (0.1)")
    g.add_argument("--beta1", type=float, default=S, help="AdamW beta1 (0.9)")
    g.add_argument("--beta2", type=float, default=S, help="AdamW beta2 (0.99)")
    g.add_argument("--grad-clip", type=float, default=S, help="clip the gradient norm to this; 0 disables (1.0)")

    g = p.add_argument_group("evaluation and output")
    g.add_argument("--eval-interval", type=int, default=S, metavar="N", help="evaluate every N steps (250)")
    g.add_argument("--eval-iters", type=int, default=S, metavar="N", help="batches per loss estimate (200)")
    g.add_argument("--log-interval", type=int, default=S, metavar="N", help="log every N steps (10)")
    g.add_argument("--seed", type=int, default=S, help="random seed (1337)")
    g.add_argument("--out-dir", default=S, metavar="DIR", help="where ckpt.npz and metrics.jsonl go (out)")
    g.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.npz")
    g.add_argument("--init-from", default=S, metavar="CKPT",
                   help="fine-tune: start from this checkpoint's weights and tokenizer, with a fresh "
                        "optimizer, schedule and iteration count")
    g.add_argument("--extend-vocab", action="store_true",
                   help="with --init-from and a char tokenizer: add the data's new characters to the "
                        "vocabulary (new embedding rows drawn as at initialisation)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an out dir that holds a previous run (its files are replaced)")
    g.add_argument("--metrics", default=S, metavar="PATH", help="JSON-lines metrics file (<out-dir>/metrics.jsonl)")
    g.add_argument("--sample-tokens", type=int, default=S, metavar="N", help="print N sampled tokens at the end (0)")
    g.add_argument("--kernels", choices=("numba", "numpy"), default=S, help="kernel set (default: $TENSORLITE_KERNELS or numba)")
    g.add_argument("--no-progress", action="store_true", help="no live progress line")
    g.add_argument("--gradient-checkpointing", action="store_true", default=S,
                   help="keep only each block's input and recompute its activations in backward: "
                        "less memory for about one more forward per step")
    return p


def _explicit_settings(args):
    """The settings given on the command line (argparse left the others out)."""
    return {k: v for k, v in vars(args).items() if k in DEFAULTS}


def _one_line(error):
    return " ".join(str(error).split())


def main(argv=None):
    """Entry point of ``tensorlite-train``; returns the process exit code.

    Under ``mpiexec -n W`` every process runs this; they find each other through MPI.
    """
    parser = build_parser()
    try:
        try:
            with distributed.quiet_unless_main(stderr=True):  # every rank parses; rank 0 reports
                args = parser.parse_args(argv)
        except SystemExit as exit_request:  # --help, or argparse's own usage error (code 2)
            return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
        world = distributed.init_world()
        control = run_control.RunControl(world)
        try:
            with control, distributed.quiet_unless_main(world):
                return _train_from_args(args, world, control)
        except KeyboardInterrupt as interrupt:
            stop = run_control.stop_of(interrupt)
            return distributed.fail(world, _error, stop.word, stop.code)
    except BrokenPipeError:  # stdout closed where no step boundary can stop the run (--help | head)
        run_control.silence(sys, "stdout")
        return run_control.CLOSED_STDOUT.code


def _error(message, code):
    run_control.say(f"{PROG}: error: {_one_line(message)}")
    return code


def _note(message, code):
    run_control.say(f"{PROG}: {_one_line(message)}")
    return code


def _warn(message):
    run_control.say(f"{PROG}: warning: {_one_line(message)}")


def _train_from_args(args, world, control):
    explicit = _explicit_settings(args)
    # Locked before the out dir's checkpoint is read (--resume) or its files checked.
    lock = run_control.OutDirLock(explicit.get("out_dir", DEFAULTS["out_dir"]), world)
    error = lock.acquire_if_exists()
    code, message = distributed.agree_on_setup(world, error, EXIT_USAGE if error else 0)
    if code:
        return _error(message, code) if message is not None else code
    try:
        return _locked_run(args, world, control, explicit, lock)
    finally:
        lock.release()


def _locked_run(args, world, control, explicit, lock):
    error, code, run = None, 0, None
    try:
        # Everything is loaded and checked before the first byte is written.
        if "kernels" in explicit:
            tl.kernels.use(explicit["kernels"])
        run = Run(explicit, args.preset, args.resume, overwrite=args.overwrite, world=world,
                  extend_vocab=args.extend_vocab)
    except (DataError, CheckpointError, UsageError) as failure:
        error, code = failure, EXIT_USAGE
    except MemoryError:
        error = "out of memory while preparing the run; choose smaller sizes or a smaller data file"
        code = EXIT_USAGE
    # Every rank must know whether any rank failed; the failure is reported once.
    code, message = distributed.agree_on_setup(world, error, code)
    if code:
        return _error(message, code) if message is not None else code
    run.distribute()
    threads = distributed.configure_threads(world)

    s = run.settings
    cache_dir = cold_kernel_cache() if world.is_main else None
    if cache_dir is not None:  # otherwise the first steps sit silent for 10-20 s
        _note(f"compiling kernels once (~20 s), cached in {cache_dir}", 0)
    console = Console(show_progress=not args.no_progress, on_closed=control.stdout_closed)
    for warning in run.warnings:
        _warn(warning)
    console.log(f"{world.describe(threads)}; " + tl.kernels.format_runtime_info())
    n_params = run.model.get_num_params()
    console.log(
        f"model: {n_params / 1e6:.3f}M parameters ({n_params:,}), {s['n_layer']} layers, {s['n_head']} heads, "
        f"{s['n_embd']} wide, block {s['block_size']}, vocab {run.config.vocab_size} ({s['tokenizer']}), {s['dtype']}")
    for line in run.describe_data():
        console.log(line)
    if run.init_checkpoint is not None:
        console.log(f"initialised from {s['init_from']} (iteration {run.init_checkpoint.iteration} of its run): "
                    f"its weights and tokenizer; fresh optimizer, schedule and iteration count")
    if run.extended_chars:
        console.log(f"extended the vocabulary by {describe_characters(run.extended_chars)} "
                    f"to {run.config.vocab_size} tokens")
    if run.checkpoint is not None:
        console.log(f"resuming from {run.ckpt_path} at iteration {run.iteration} "
                    f"(best val loss {run.best_val_loss:.4f})")
        if run.checkpoint.extra.get("data_fingerprint") not in (None, run.data_fingerprint):
            console.log("note: this data is not the text the checkpoint was trained on (same vocabulary)")
    from .gpt import measure_peak_flops

    # This machine's matmul FLOP/s, for MFU. All ranks measure at once, sharing their host's
    # cores as they do in training; the sum is the job's peak.
    [run.peak_flops] = distributed.global_sum([measure_peak_flops(dtype=s["dtype"])], world)

    error = None
    metrics = distributed.NullMetrics()
    if world.is_main:
        error = lock.acquire()
        try:
            if error is None and lock.acquired_late:  # another run may have filled it since setup
                check_out_dir(s, args.resume, args.overwrite)
            metrics = run.start(console, warn=_warn) if error is None else metrics
        except UsageError as failure:
            error = failure
        except OSError as failure:
            error = f"cannot write to {failure.filename or s['out_dir']}: {failure.strerror or failure}"
    code, message = distributed.agree_on_setup(world, error, EXIT_USAGE if error else 0)
    if code:
        return _error(message, code) if message is not None else code
    try:
        run.train(console, metrics, control)
        if s["sample_tokens"] > 0 and world.is_main:
            run.sample(console, s["sample_tokens"])
        console.log(f"plot: tensorlite-plot {s['metrics']} -o {os.path.join(s['out_dir'], 'loss.png')}")
    except NonFiniteLossError as error:
        console.clear_progress()
        kept = (f"the checkpoint {run.ckpt_path} was left untouched" if os.path.exists(run.ckpt_path)
                else "no checkpoint was written")
        return distributed.report(world, _error, f"{error}; training stopped and {kept}. Try a lower --lr or a --grad-clip.",
                         EXIT_NONFINITE)
    except RunStopped as stopped:
        message = run_control.stop_message(stopped.stop, run.iteration, run.ckpt_path, run.saved_iteration,
                                           run_control.resume_command(PROG, s["out_dir"], explicit))
        return distributed.report(world, _note, message, stopped.stop.code)
    except KeyboardInterrupt as interrupt:  # a second signal, or one outside the training loop
        console.clear_progress()
        stop = run_control.stop_of(interrupt)
        return distributed.fail(world, _error, f"{stop.word} at iteration {run.iteration}; {run.checkpoint_status()}",
                                stop.code)
    except CheckpointWriteError as error:
        console.clear_progress()
        return distributed.fail(world, _error, error, EXIT_IO)
    finally:
        metrics.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
