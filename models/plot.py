"""Plot training curves from metrics.jsonl files: ``tensorlite-plot`` (or ``python -m tensorlite.models.plot``).

Examples::

    tensorlite-plot out/metrics.jsonl -o loss.png
    tensorlite-plot out-pretrain/metrics.jsonl out-sft/metrics.jsonl --labels pretrain sft -o runs.png
    tensorlite-plot out/metrics.jsonl --x tokens --tokens-per-iter 512 -o loss-tokens.png

For every run: the training loss logged every --log-interval steps (thin line), the train and
val loss of each evaluation (markers), and the learning rate on a second y axis (dotted). Runs
are overlaid in different colours, labelled by --labels or by the name of the directory that
holds their metrics file. With ``--sequential`` each run starts where the previous one ended
(pretraining, then fine-tuning, on one axis).

The x axis is the iteration, or with ``--x tokens`` the number of training tokens seen. Tokens
come from the records' ``tokens`` field when the trainer wrote one, else from
``--tokens-per-iter``; with ``--x iter`` and a known token count a second x axis on top shows
tokens too.

matplotlib is the optional extra ``.[plot]`` (from a tensorlite checkout); without it, or with an unreadable
metrics file, the command prints one line and exits with code 2.
"""

import argparse
import math
import os
import sys

from .jsonio import load_json_text
from tensorlite.serialization import atomic_write

PROG = "tensorlite-plot"
EXIT_OK, EXIT_USAGE = 0, 2


class PlotError(ValueError):
    """Bad input to the plot (exit code 2)."""


def read_metrics(path):
    """(train records, eval records) of a metrics.jsonl file, each sorted by iteration.

    A resumed run appends to the file, so an iteration can appear twice (logged before a crash
    and again after the resume); the later record wins.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise PlotError(f"metrics file not found: {path}") from None
    except IsADirectoryError:
        raise PlotError(f"metrics path is a directory: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlotError(f"cannot read {path}: {error}") from None
    records = {"train": {}, "eval": {}}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = load_json_text(line, f"{path} line {number}", error=PlotError)
        if not isinstance(record, dict) or not _is_iteration(record.get("iter")):
            raise PlotError(f"{path} line {number}: not a metrics record (no integer \"iter\" from 0 to {MAX_ITER})")
        if record.get("event") in records:
            records[record["event"]][record["iter"]] = record
    if not records["train"] and not records["eval"]:
        raise PlotError(f"{path} has no train or eval records")
    return [sorted(records[kind].values(), key=lambda r: r["iter"]) for kind in ("train", "eval")]


# Iterations are plotted as floats; beyond 2**53 they would lose their order, and a JSON integer
# of a thousand digits would not convert at all.
MAX_ITER = 2 ** 53


def _is_iteration(value):
    return type(value) is int and 0 <= value <= MAX_ITER


def _finite(value):
    """``value`` as a finite float, or None (not a number, NaN, infinite, or an integer too large
    for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _tokens_per_iter(records, given):
    """Tokens per iteration from the records' "tokens" fields, else ``given`` (may be None)."""
    for r in records:
        tokens = _finite(r.get("tokens"))
        if tokens is not None and r["iter"] > 0:
            return tokens / r["iter"]
    return given


def _values(records, key):
    """(iterations, values) of the records that have a finite number under ``key``."""
    pairs = [(r["iter"], _finite(r.get(key))) for r in records]
    pairs = [p for p in pairs if p[1] is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def default_label(path):
    """The name of the directory that holds the metrics file (out-shakespeare/metrics.jsonl -> out-shakespeare)."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent or os.path.basename(path)


def plot_runs(paths, output, labels=None, x_axis="iter", tokens_per_iter=None, sequential=False,
              title=None, log_y=False):
    """Draw the runs of ``paths`` into ``output`` (a PNG, or any format matplotlib knows by suffix)."""
    runs = [read_metrics(p) for p in paths]  # read everything before importing or writing anything
    if labels is None:
        labels = [default_label(p) for p in paths]
    if len(labels) != len(paths):
        raise PlotError(f"--labels has {len(labels)} label(s) for {len(paths)} metrics file(s)")
    per_run_tokens = [_tokens_per_iter(train + evals, tokens_per_iter) for train, evals in runs]
    if x_axis == "tokens" and None in per_run_tokens:
        missing = paths[per_run_tokens.index(None)]
        raise PlotError(f"{missing} has no \"tokens\" field; pass --tokens-per-iter N (batch size x "
                        "grad accum x block size) or use --x iter")

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    ax_lr = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offset = 0
    for i, ((train, evals), label, tpi) in enumerate(zip(runs, labels, per_run_tokens)):
        color = colors[i % len(colors)]
        scale = tpi if x_axis == "tokens" else 1

        def xs(iters):
            return [(it + offset) * scale for it in iters]

        it, loss = _values(train, "loss")
        if it:
            ax.plot(xs(it), loss, color=color, alpha=0.35, linewidth=1, label=f"{label} train (step)")
        it, loss = _values(evals, "train_loss")
        if it:
            ax.plot(xs(it), loss, color=color, linestyle="--", marker="o", markersize=3, label=f"{label} train")
        it, loss = _values(evals, "val_loss")
        if it:
            ax.plot(xs(it), loss, color=color, linestyle="-", marker="s", markersize=3, label=f"{label} val")
        it, lr = _values(sorted(train + evals, key=lambda r: r["iter"]), "lr")
        if it:
            ax_lr.plot(xs(it), lr, color=color, linestyle=":", linewidth=1, label=f"{label} lr")
        if sequential:
            offset += max([r["iter"] for r in train + evals])

    ax.set_xlabel("tokens" if x_axis == "tokens" else "iteration")
    ax.set_ylabel("loss (cross-entropy, nats)")
    ax_lr.set_ylabel("learning rate (dotted)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    known = {t for t in per_run_tokens if t is not None}
    if x_axis == "iter" and len(known) == 1 and None not in per_run_tokens:
        tpi = known.pop()
        top = ax.secondary_xaxis("top", functions=(lambda x: x * tpi, lambda t: t / tpi))
        top.set_xlabel("tokens")
    handles, names = ax.get_legend_handles_labels()
    lr_handles, lr_names = ax_lr.get_legend_handles_labels()
    ax.legend(handles + lr_handles, names + lr_names, fontsize="small", loc="upper right")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    _save_figure(fig, output)
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install '.[plot]' from a tensorlite checkout") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, output):
    """Write the figure atomically (format from the file name's suffix, PNG without one)."""
    fmt = os.path.splitext(os.fspath(output))[1].lstrip(".") or "png"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_write(output, lambda f: fig.savefig(f, format=fmt))


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Plot train/val loss and learning rate from metrics.jsonl files.")
    p.add_argument("metrics", nargs="+", metavar="METRICS.jsonl", help="metrics files written by tensorlite-train")
    p.add_argument("-o", "--output", default="loss.png", metavar="PNG", help="image to write (loss.png)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="one label per metrics file (default: the name of its directory)")
    p.add_argument("--x", dest="x_axis", choices=("iter", "tokens"), default="iter", help="x axis (iter)")
    p.add_argument("--tokens-per-iter", type=int, default=None, metavar="N",
                   help="tokens per iteration, for files without a \"tokens\" field")
    p.add_argument("--sequential", action="store_true", help="start each run where the previous one ended")
    p.add_argument("--log-y", action="store_true", help="logarithmic loss axis")
    p.add_argument("--title", default=None, help="plot title")
    return p


def main(argv=None):
    """Entry point of ``tensorlite-plot``; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    try:
        if args.tokens_per_iter is not None and args.tokens_per_iter <= 0:
            raise PlotError(f"--tokens-per-iter must be positive, got {args.tokens_per_iter}")
        plot_runs(args.metrics, args.output, labels=args.labels, x_axis=args.x_axis,
                  tokens_per_iter=args.tokens_per_iter, sequential=args.sequential,
                  title=args.title, log_y=args.log_y)
    except PlotError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except OSError as error:
        print(f"{PROG}: error: cannot write {args.output}: {error.strerror or error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    print(f"wrote {args.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
