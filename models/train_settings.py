"""The settings of ``tensorlite-train``: built-in defaults, presets, and the checks every
setting passes, whether it came from a flag, a preset or a checkpoint."""

import math
import os

# Settings: built-in defaults, presets, command-line flags.
#
# Precedence, lowest first: DEFAULTS < the checkpoint's saved settings (with --resume)
# < --preset < flags given explicitly on the command line.

DEFAULTS = dict(
    # data
    data=None,  # None: the built-in pydoc_data.topics corpus
    data_format="text",  # text, or sft: JSON lines of prompt/completion pairs
    init_from=None,  # a checkpoint whose weights and tokenizer start the run
    tokenizer="char",
    bpe_vocab_size=512,
    # model (GPTConfig; vocab_size comes from the tokenizer)
    n_layer=4,
    n_head=4,
    n_embd=128,
    block_size=64,
    dropout=0.0,
    bias=True,
    # optimisation
    batch_size=12,
    grad_accum=1,
    max_iters=2000,
    lr=1e-3,
    min_lr=1e-4,
    warmup_iters=100,
    lr_decay_iters=None,  # None: max_iters of the first run (at least warmup_iters)
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.99,
    grad_clip=1.0,
    # evaluation, logging, output
    eval_interval=250,
    eval_iters=200,
    log_interval=10,
    seed=1337,
    out_dir="out",
    metrics=None,  # None: <out_dir>/metrics.jsonl
    sample_tokens=0,
    kernels=None,  # None: keep the kernel set chosen by TENSORLITE_KERNELS
    dtype="float32",
    # recompute each block's activations in backward (tl.utils.checkpoint): less memory, the
    # same numbers, about one more forward per step
    gradient_checkpointing=False,
)

# No preset sets lr_decay_iters: the decay follows the run's --max-iters (see resolve_settings),
# so `--preset tiny --max-iters 60` decays over 60 steps, not over the preset's 2000.
PRESETS = {
    # Small enough to train in well under a minute on two CPU cores (about 25 s with the
    # Numba kernels), big enough to see the loss fall from ln(vocab) ~ 4.6 to about 1.6 on
    # the built-in corpus and to print text with real words in it.
    "tiny": dict(
        n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=0.0,
        batch_size=16, max_iters=2000, lr=3e-3, min_lr=3e-4, warmup_iters=50,
        weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
        eval_interval=250, eval_iters=20, log_interval=100, sample_tokens=300,
    ),
    # nanoGPT's shakespeare-char settings scaled down for a CPU.
    "shakespeare-cpu": dict(
        n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
        batch_size=12, max_iters=2000, lr=1e-3, min_lr=1e-4, warmup_iters=100,
        weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
        eval_interval=250, eval_iters=200, log_interval=10,
    ),
}

# The type of every setting (checked for flags and for the settings saved in a checkpoint).
INT_SETTINGS = ("bpe_vocab_size", "n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                "max_iters", "warmup_iters", "lr_decay_iters", "eval_interval", "eval_iters", "log_interval",
                "seed", "sample_tokens")
FLOAT_SETTINGS = ("dropout", "lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip")
# (a "gpt2" tokenizer comes only from a checkpoint: --init-from a converted GPT-2, then --resume)
CHOICE_SETTINGS = {"tokenizer": ("char", "bpe", "gpt2"), "dtype": ("float32", "float64"), "bias": (True, False),
                   "data_format": ("text", "sft"), "gradient_checkpointing": (True, False)}
PATH_SETTINGS = ("data", "out_dir", "metrics", "init_from")  # a string, or None where DEFAULTS has None

CKPT_NAME, BEST_NAME, METRICS_NAME = "ckpt.npz", "best.npz", "metrics.jsonl"

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias")  # fixed by the checkpoint
TOKENIZER_KEYS = ("tokenizer", "bpe_vocab_size", "dtype")  # also fixed by the checkpoint
# taken from the resuming command line: where to write and how to compute, not what
NOT_RESUMED_KEYS = ("out_dir", "metrics", "kernels", "gradient_checkpointing")


class UsageError(ValueError):
    """A setting that cannot work (exit code 2)."""


def resolve_settings(explicit, preset=None, saved=None):
    """Merge the layers of settings into one dict (see the precedence note above)."""
    settings = dict(DEFAULTS)
    if saved:
        settings.update({k: v for k, v in saved.items() if k in DEFAULTS})
    if preset:
        settings.update(PRESETS[preset])
    settings.update(explicit)
    if settings["lr_decay_iters"] is None:
        # The decay ends with the run (a short run with a long warmup only warms up).
        settings["lr_decay_iters"] = max(settings["max_iters"], settings["warmup_iters"])
    if settings["metrics"] is None:
        settings["metrics"] = os.path.join(settings["out_dir"], METRICS_NAME)
    return settings


def flag(key):
    """The command-line flag of a setting: lr_decay_iters -> --lr-decay-iters."""
    return "--" + key.replace("_", "-")


def check_setting_types(s, name=flag):
    """UsageError naming the setting (``name(key)``) whose value has the wrong type."""
    for key in INT_SETTINGS:
        if isinstance(s[key], bool) or not isinstance(s[key], int):
            raise UsageError(f"{name(key)} must be an integer, got {s[key]!r}")
    for key in FLOAT_SETTINGS:
        if isinstance(s[key], bool) or not isinstance(s[key], (int, float)):
            raise UsageError(f"{name(key)} must be a number, got {s[key]!r}")
    for key, choices in CHOICE_SETTINGS.items():
        if s[key] not in choices or type(s[key]) is not type(choices[0]):
            raise UsageError(f"{name(key)} must be one of {', '.join(map(str, choices))}, got {s[key]!r}")
    for key in PATH_SETTINGS:
        if not (isinstance(s[key], str) or (s[key] is None and DEFAULTS[key] is None)):
            raise UsageError(f"{name(key)} must be a path, got {s[key]!r}")


def validate_settings(s, name=flag):
    """Raise UsageError (one line, naming the setting as ``name(key)``) for any value the run
    cannot use."""
    check_setting_types(s, name)
    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                "eval_interval", "eval_iters", "log_interval"):
        if s[key] <= 0:
            raise UsageError(f"{name(key)} must be a positive integer, got {s[key]}")
    for key in ("max_iters", "warmup_iters", "lr_decay_iters", "sample_tokens"):
        if s[key] < 0:
            raise UsageError(f"{name(key)} must be zero or positive, got {s[key]}")
    if s["tokenizer"] == "bpe" and s["bpe_vocab_size"] < 256:
        raise UsageError(f"{name('bpe_vocab_size')} must be at least 256 (the byte tokens), got {s['bpe_vocab_size']}")
    if s["n_embd"] % s["n_head"] != 0:
        raise UsageError(f"{name('n_embd')} ({s['n_embd']}) must be divisible by {name('n_head')} ({s['n_head']})")
    for key in ("lr", "min_lr", "weight_decay", "grad_clip"):
        if not math.isfinite(s[key]) or s[key] < 0:
            raise UsageError(f"{name(key)} must be a finite number >= 0, got {s[key]}")
    if s["lr"] == 0:
        raise UsageError(f"{name('lr')} must be greater than 0")
    for key in ("beta1", "beta2"):
        if not 0.0 <= s[key] < 1.0:
            raise UsageError(f"{name(key)} must be in [0, 1), got {s[key]}")
    if not 0.0 <= s["dropout"] < 1.0:
        raise UsageError(f"{name('dropout')} must be in [0, 1), got {s['dropout']}")
    if s["lr_decay_iters"] < s["warmup_iters"]:
        raise UsageError(
            f"{name('lr_decay_iters')} ({s['lr_decay_iters']}) must be >= {name('warmup_iters')} ({s['warmup_iters']})")
    if not 0 <= s["seed"] < 2 ** 63:
        raise UsageError(f"{name('seed')} must be in [0, 2**63), got {s['seed']}")
    if s["data_format"] == "sft" and s["data"] is None:
        raise UsageError(f"{name('data_format')} sft needs {name('data')} FILE: JSON lines of prompt/completion pairs")
