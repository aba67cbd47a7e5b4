"""Study task: a small LeNet-style CNN on scikit-learn's 8x8 handwritten digits, written as a
PyTorch user would write it, with tensorlite in place of torch.

    python benchmarks/digits_cnn/train.py                     # seeds 0 1 2, figures in out/
    python benchmarks/digits_cnn/train.py --seeds 0 --out /tmp/digits --epochs 20

The data is scikit-learn's bundled copy of the UCI digits (1,797 grey 8x8 images, values 0-16;
read from the installed package, no download), scaled to [0, 1]. The held-out set is a
stratified 25% split with a fixed seed (``train_test_split(..., test_size=0.25, stratify=y,
random_state=0)``: 1,347 training and 450 held-out images), the same for every training seed;
the training seed sets the initial weights, the batch order and dropout.

For each seed it prints one row per epoch (mean training loss, held-out accuracy, seconds), then
the accuracy per seed, their median and the wall time, and draws two figures into ``--out``
(default ``benchmarks/digits_cnn/out``) for the seed with the median accuracy: the learned
first-layer filters and the held-out confusion matrix (matplotlib, the ``[plot]`` extra).
Without scikit-learn it says how to install it (``pip install '.[data]'`` from a tensorlite checkout) and exits 2.

``train(seed)`` is importable (tests/test_digits_cnn.py calls it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # run from a checkout, too

import tensorlite as tl  # noqa: E402
import tensorlite.nn as nn  # noqa: E402
import tensorlite.nn.functional as F  # noqa: E402
from tensorlite.utils.data import DataLoader, TensorDataset  # noqa: E402

EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
DEFAULT_OUT = os.path.join(HERE, "out")


class SklearnMissing(RuntimeError):
    """scikit-learn, which holds the digits data, is not installed."""


def load_split():
    """(x_train, x_test, y_train, y_test): images (N, 1, 8, 8) float32 in [0, 1], labels int64,
    split 75/25 stratified with random_state=0."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SklearnMissing("the digits study task needs scikit-learn: "
                             "pip install '.[data]' from a tensorlite checkout") from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)


class DigitsNet(nn.Module):
    """LeNet's pattern at 8x8: two conv-BN-ReLU-pool stages (8x8 -> 4x4 -> 2x2), then two
    fully connected layers with dropout between them."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # (N, 16, 4, 4)
        x = self.pool(F.relu(self.bn2(self.conv2(x))))  # (N, 32, 2, 2)
        x = x.flatten(1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def evaluate(model, loader):
    """(accuracy, predictions) of the model in eval mode over the loader's batches."""
    model.eval()
    predictions = []
    with tl.no_grad():
        for xb, _ in loader:
            predictions.append(model(xb).argmax(1).numpy())
    predictions = np.concatenate(predictions)
    labels = np.concatenate([yb.numpy() for _, yb in loader])
    return float((predictions == labels).mean()), predictions


def train(seed=0, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LEARNING_RATE, log=print, split=None):
    """Train DigitsNet with one seed; returns a dict with the final held-out ``accuracy``, the
    per-epoch ``history`` (epoch, train loss, accuracy, seconds), ``seconds`` in all, the
    ``model``, and the held-out ``labels`` and ``predictions``. ``log`` gets the table rows
    (None: silent)."""
    log = log or (lambda *args: None)
    x_train, x_test, y_train, y_test = split if split is not None else load_split()
    tl.manual_seed(seed)
    generator = np.random.default_rng(seed)
    train_loader = DataLoader(TensorDataset(tl.tensor(x_train), tl.tensor(y_train)),
                              batch_size=batch_size, shuffle=True, generator=generator)
    test_loader = DataLoader(TensorDataset(tl.tensor(x_test), tl.tensor(y_test)),
                             batch_size=256)

    model = DigitsNet()
    optimizer = tl.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    scheduler = tl.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    log(f"seed {seed}: {len(x_train)} training / {len(x_test)} held-out images, "
        f"{model.num_parameters():,} parameters")
    log("| epoch | train loss | held-out acc | seconds |")
    log("|---:|---:|---:|---:|")
    history, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            count += len(yb)
        scheduler.step()
        accuracy, predictions = evaluate(model, test_loader)
        seconds = time.perf_counter() - epoch_start
        history.append((epoch, total / count, accuracy, seconds))
        log(f"| {epoch} | {total / count:.4f} | {100 * accuracy:.2f}% | {seconds:.2f} |")
    return dict(seed=seed, accuracy=accuracy, history=history, model=model,
                seconds=time.perf_counter() - start, labels=y_test, predictions=predictions)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def save_figures(result, out_dir):
    """first_layer_filters.png and confusion_matrix.png in out_dir; the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    weights = result["model"].conv1.weight.numpy()[:, 0]  # (16, 3, 3)
    columns = 8
    rows = -(-len(weights) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9 + 0.5))
    limit = np.abs(weights).max()
    for ax, kernel in zip(axes.flat, weights):
        ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"conv1 filters (3x3), seed {result['seed']}")
    filters_path = os.path.join(out_dir, "first_layer_filters.png")
    fig.savefig(filters_path, dpi=80, bbox_inches="tight")
    plt.close(fig)

    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (result["labels"], result["predictions"]), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"held-out confusion matrix, seed {result['seed']} "
                 f"({100 * result['accuracy']:.2f}%)")
    confusion_path = os.path.join(out_dir, "confusion_matrix.png")
    fig.savefig(confusion_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return [filters_path, confusion_path]


def cpu_description():
    """'model name (family F model M)' from /proc/cpuinfo, or the platform's processor."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                if not line.strip() and info:
                    break
    except OSError:
        pass
    if "model name" not in info:
        return platform.processor() or platform.machine()
    return f"{info['model name']} (family {info.get('cpu family')} model {info.get('model')})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for the figures")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs")
    args = parser.parse_args(argv)

    try:
        split = load_split()
    except SklearnMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(f"CPU: {cpu_description()}, {os.cpu_count()} cores; tensorlite {tl.__version__}, "
          f"kernels {tl.kernels.active()}")
    wall_start = time.perf_counter()
    results = []
    for seed in args.seeds:
        results.append(train(seed, epochs=args.epochs, split=split))
        print()
    wall = time.perf_counter() - wall_start

    accuracies = [r["accuracy"] for r in results]
    median = statistics.median(accuracies)
    print("| seed | held-out accuracy | train seconds |")
    print("|---:|---:|---:|")
    for r in results:
        print(f"| {r['seed']} | {100 * r['accuracy']:.2f}% | {r['seconds']:.1f} |")
    print(f"median held-out accuracy {100 * median:.2f}% over {len(results)} seed(s); "
          f"wall time {wall:.1f} s (with data loading and the first step's compile)")

    if not args.no_figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("figures skipped: matplotlib is not installed (pip install '.[plot]' from a tensorlite checkout)")
        else:
            chosen = sorted(results, key=lambda r: r["accuracy"])[(len(results) - 1) // 2]
            for path in save_figures(chosen, args.out):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
