"""The training run behind ``tensorlite-train`` (models/train.py, whose docstring describes the
loop, the files it writes and how resuming stays exact): the checks made before anything is
allocated or written, and ``Run``, which builds the model and trains it."""

import hashlib
import math
import os
import sys
import time

import numpy as np

import tensorlite as tl
from tensorlite.nn.parallel import DistributedDataParallel
from . import checkpoint as ckpt_io
from . import distributed_training as distributed
from . import finetune
from . import run_control
from .checkpoint import CheckpointError
from .data import DataError, TokenDataset, encode_corpus, load_text, read_text_file
from .metrics_writer import MetricsWriter
from .run_control import RunStopped
from .sft import IGNORE_INDEX, SFTDataset, parse_sft_lines, unencodable_characters
from .train_settings import (BEST_NAME, CKPT_NAME, DEFAULTS, MODEL_KEYS, NOT_RESUMED_KEYS, PRESETS, TOKENIZER_KEYS,
                             UsageError, flag, resolve_settings, validate_settings)


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite (exit code 3)."""


# ----------------------------------------------------------------------------------------
# Random generators. Three independent streams, all derived from the seed:
#   tl.manual_seed(seed)       parameter initialisation and dropout (the library generator)
#   data generator             which training windows each step sees
#   eval generator             fresh per evaluation from (seed, iteration, split): evaluating
#                              consumes nothing that training uses, so resume stays exact

_DATA_STREAM, _EVAL_STREAM, _SAMPLE_STREAM, _EXTEND_VOCAB_STREAM = 1, 2, 3, 4


def make_data_rng(seed):
    return np.random.default_rng([seed, _DATA_STREAM])


def make_eval_rng(seed, iteration, split_index):
    return np.random.default_rng([seed, _EVAL_STREAM, iteration, split_index])


def make_sample_rng(seed):
    return np.random.default_rng([seed, _SAMPLE_STREAM])


# ----------------------------------------------------------------------------------------
# Pieces of the training run


def build_tokenizer(kind, text, bpe_vocab_size):
    from . import tokenizer as tok

    if kind == "char":
        return tok.CharTokenizer(text)
    return tok.BPETokenizer().train(text, vocab_size=bpe_vocab_size)


def tokenizer_from_dict(d):
    from . import tokenizer as tok

    return tok.tokenizer_from_dict(d)


def fingerprint(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def all_finite(model):
    return all(np.isfinite(p.data).all() for p in model.parameters())


# The kernel modules a GPT training step runs (tensorlite/kernels/numba/*.py). Their first call
# compiles for 10-20 s, after which Numba's on-disk cache (cache=True) makes it instant.
_TRAINING_KERNEL_MODULES = ("_gemm", "adamw", "attention", "cross_entropy", "embedding", "gelu",
                            "layer_norm", "matmul")


def cold_kernel_cache():
    """The directory of the Numba kernels' on-disk cache when it is cold (the kernels a
    training step runs will be compiled first), else None.

    Numba decides the directory per source file: $NUMBA_CACHE_DIR when set, else __pycache__
    next to the kernel files, else a user-wide cache directory when that one is not writable.
    Each compiled function leaves an index file (.nbi) there, stamped with a hash of its source;
    the cache counts as cold when most of the training kernels have no index that matches their
    source. Only reads those small files; None for the numpy kernel set, or whenever Numba's
    cache cannot be inspected (then nothing is said rather than something wrong)."""
    if tl.kernels.active() != "numba":
        return None
    try:
        from numba.core.dispatcher import Dispatcher

        caches = []
        for module_name in _TRAINING_KERNEL_MODULES:
            module = sys.modules.get(f"tensorlite.kernels.numba.{module_name}")
            for value in vars(module).values() if module is not None else ():
                if isinstance(value, Dispatcher) and getattr(value, "_cache", None) is not None:
                    caches.append(value._cache)
        indexed = [cache for cache in caches if cache._cache_file._load_index()]
        if not caches or len(indexed) * 2 > len(caches):
            return None
        return caches[0]._cache_path
    except Exception:  # noqa: BLE001 (Numba's internals moved: say nothing rather than crash)
        return None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (exit code 1); the previous file is intact."""


# ----------------------------------------------------------------------------------------
# Checks made before a run allocates or writes anything


def load_checkpoint_for_resume(path):
    """Load ``path`` and check every part of it that resuming uses (CheckpointError otherwise)."""
    checkpoint = ckpt_io.load(path)
    _, _, dtype = ckpt_io.check_gpt(checkpoint, path)
    ckpt_io.check_training_state(checkpoint, path, dtype)
    return checkpoint


def saved_settings(checkpoint, path):
    """The settings stored in a checkpoint, type- and range-checked, with the architecture and
    tokenizer kind taken from the checkpoint itself and the per-invocation keys left out."""
    saved = dict(checkpoint.extra.get("settings") or {})
    saved.update({k: v for k, v in checkpoint.config.items() if k in MODEL_KEYS + ("dropout",)})
    saved["tokenizer"] = checkpoint.tokenizer["type"]
    saved["dtype"] = str(checkpoint.model_state["transformer.wte.weight"].dtype)
    for key in NOT_RESUMED_KEYS:
        saved.pop(key, None)
    try:
        validate_settings(resolve_settings({}, None, saved), name=lambda key: f"settings.{key}")
    except UsageError as error:
        raise CheckpointError(f"invalid checkpoint {path}: {error}") from None
    return saved


def load_init_checkpoint(path, explicit, preset):
    """--init-from: the checkpoint (every array checked) and the settings its weights fix (the
    model's shape, the tokenizer kind, the dtype). A flag or preset asking for another value is
    an error naming the flag; dropout is not fixed."""
    checkpoint = finetune.load_init_checkpoint(path)
    config, tokenizer, dtype = ckpt_io.check_gpt(checkpoint, path)
    requested = {k: v for k, v in explicit.items() if k in MODEL_KEYS}
    finetune.check_model_flags(checkpoint, requested, path)
    for key, value in (PRESETS[preset] if preset else {}).items():
        if key in MODEL_KEYS and key not in requested and value != getattr(config, key):
            raise finetune.FinetuneError(f"--preset {preset} sets {flag(key)} {value}, but {path} has {key} = "
                                         f"{getattr(config, key)}; give {flag(key)} {getattr(config, key)} "
                                         f"or drop --preset")
    fixed = {key: getattr(config, key) for key in MODEL_KEYS}
    fixed.update(tokenizer=checkpoint.tokenizer["type"], dtype=str(dtype))
    if fixed["tokenizer"] == "bpe":
        fixed["bpe_vocab_size"] = tokenizer.vocab_size
    for key in ("tokenizer", "dtype"):
        if key in explicit and explicit[key] != fixed[key]:
            raise finetune.FinetuneError(f"{flag(key)} {explicit[key]} does not match {path}, which has {key} = "
                                         f"{fixed[key]}; omit {flag(key)} to take the checkpoint's")
    return checkpoint, fixed


def check_out_dir(settings, resume, overwrite):
    """A new run must not destroy a previous one: refuse an out dir holding a run's files."""
    out_dir = settings["out_dir"]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out-dir {out_dir} exists and is not a directory")
    if resume or overwrite:
        return
    # (isfile: metrics sent to /dev/null are no run to protect)
    previous = [path for path in (os.path.join(out_dir, CKPT_NAME), os.path.join(out_dir, BEST_NAME),
                                  settings["metrics"]) if os.path.isfile(path)]
    if previous:
        raise UsageError(f"{out_dir} holds a previous run ({', '.join(previous)}); continue it with --resume, "
                         f"replace it with --overwrite, or choose another --out-dir")


def check_training_memory(config, settings):
    """Refuse a run whose model, optimizer and activations would not fit in memory."""
    from .gpt_config import available_memory, estimate_memory, format_bytes

    needed = estimate_memory(config, settings["batch_size"], dtype=settings["dtype"], training=True)
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"training this model needs about {format_bytes(needed)} (n_layer {config.n_layer}, n_embd "
            f"{config.n_embd}, block_size {config.block_size}, batch_size {settings['batch_size']}), more than "
            f"the {format_bytes(available)} of available memory; choose smaller sizes")


def schedule_warnings(settings, saved, explicit):
    """The documented resume caveat: a run resumed past its decay horizon, or with a changed
    horizon, does not follow the schedule of one uninterrupted run."""
    decay, max_iters = settings["lr_decay_iters"], settings["max_iters"]
    if "lr_decay_iters" in explicit and saved.get("lr_decay_iters") not in (None, decay):
        return [f"--lr-decay-iters {decay} changes the schedule of the resumed run (it had "
                f"{saved['lr_decay_iters']}): the learning rate jumps, and the result differs from one "
                f"uninterrupted run"]
    # (a run that was set up to end past its decay horizon knew what it asked for)
    if "lr_decay_iters" not in explicit and saved.get("max_iters", 0) <= decay < max_iters:
        return [f"--max-iters {max_iters} goes past the resumed run's --lr-decay-iters {decay}: the learning "
                f"rate stays at --min-lr {settings['min_lr']:g} after iteration {decay}; give --lr-decay-iters "
                f"to decay over the longer run"]
    return []


# ----------------------------------------------------------------------------------------
# The run


class Run:
    """Everything a training run needs, prepared and checked before anything is written.

    ``Run(explicit, preset, resume, overwrite, extend_vocab=...)`` validates and builds (settings,
    data, tokenizer, model, optimizer, restored state or --init-from weights); ``start``
    prepares the out dir and opens the metrics; ``train`` runs the loop; ``save`` writes a
    checkpoint.
    """

    def __init__(self, explicit, preset, resume, overwrite=False, world=distributed.World(), extend_vocab=False):
        self.world = world
        if resume and overwrite:
            raise UsageError("--resume continues the run in --out-dir and --overwrite replaces it; give one of them")
        init_path = explicit.get("init_from")
        if init_path is not None and resume:
            raise UsageError("--init-from starts a new run from a checkpoint's weights and --resume continues the "
                             "run in --out-dir; give one of them")
        if extend_vocab and init_path is None:
            raise UsageError("--extend-vocab grows the vocabulary of the --init-from checkpoint; give --init-from")
        out_dir = explicit.get("out_dir", DEFAULTS["out_dir"])
        self.ckpt_path = os.path.join(out_dir, CKPT_NAME)  # latest state, for --resume
        self.best_path = os.path.join(out_dir, BEST_NAME)  # lowest validation loss
        replaced = {os.path.abspath(self.ckpt_path), os.path.abspath(self.best_path)}
        if init_path is not None and os.path.abspath(init_path) in replaced:
            raise UsageError(f"--init-from {init_path} is a file this run would replace; copy it elsewhere or "
                             f"choose another --out-dir")
        self.overwrite = overwrite
        self.checkpoint = None       # the checkpoint resumed (--resume)
        self.init_checkpoint = None  # the checkpoint fine-tuned from (--init-from)
        self.warnings = []
        saved = None
        if resume:
            self.checkpoint = load_checkpoint_for_resume(self.ckpt_path)
            saved = saved_settings(self.checkpoint, self.ckpt_path)
            self._check_against_checkpoint(explicit, preset)
        elif init_path is not None:
            self.init_checkpoint, saved = load_init_checkpoint(init_path, explicit, preset)
        self.settings = s = resolve_settings(explicit, preset, saved)
        validate_settings(s)
        try:
            distributed.local_micro_steps(s["grad_accum"], world)
        except ValueError as error:
            raise UsageError(error) from None
        check_out_dir(s, resume, overwrite)
        if resume:
            self.warnings += schedule_warnings(s, saved, explicit)
        # global, over all ranks (SFT rows count their padding too)
        self.tokens_per_iter = s["batch_size"] * s["grad_accum"] * s["block_size"]

        self._load_data_and_tokenizer(extend_vocab)
        from .gpt import GPT, GPTConfig

        self.config = GPTConfig(
            vocab_size=self.tokenizer.vocab_size, block_size=s["block_size"], n_layer=s["n_layer"],
            n_head=s["n_head"], n_embd=s["n_embd"], dropout=s["dropout"], bias=s["bias"],
        )
        source_path, source_vocab = self._source_vocab_size()
        if source_vocab is not None and source_vocab != self.config.vocab_size:
            raise CheckpointError(
                f"{source_path} has vocab_size {source_vocab} but its tokenizer has {self.config.vocab_size} tokens")
        check_training_memory(self.config, s)
        self._encode_data()

        # Model. Seed first: parameter initialisation draws from the library generator.
        tl.manual_seed(s["seed"])
        if self.init_checkpoint is not None:
            self.model = finetune.model_from_state(self.config.to_dict(), self.init_state)
            del self.init_state
        else:
            self.model = GPT(self.config, dtype=np.dtype(s["dtype"]))
        if s["gradient_checkpointing"]:
            self.model.gradient_checkpointing_enable()
        self.optimizer = self.model.configure_optimizers(
            weight_decay=s["weight_decay"], learning_rate=s["lr"], betas=(s["beta1"], s["beta2"]))
        self.data_rng = make_data_rng(s["seed"])
        self.iteration = 0
        self.best_val_loss = math.inf
        self.saved_iteration = None  # the iteration ckpt.npz holds, once there is one
        if self.checkpoint is not None:
            self._restore()
        self.ddp = None  # set by distribute(), once every rank has been built

    def distribute(self):
        """Under MPI: rank 0's weights everywhere, gradients averaged after backward. A
        collective, so it runs only after every rank agreed that its setup succeeded."""
        if self.world.size > 1:
            self.ddp = DistributedDataParallel(self.model)

    def _source_vocab_size(self):
        """(path, number of embedding rows) of the checkpoint the weights come from, or (None, None)."""
        if self.checkpoint is not None:
            return self.ckpt_path, self.checkpoint.config.get("vocab_size")
        if self.init_checkpoint is not None:
            return self.settings["init_from"], int(self.init_state["transformer.wte.weight"].shape[0])
        return None, None

    def _load_data_and_tokenizer(self, extend_vocab):
        """Read the data; take the tokenizer from the checkpoint (checking that it can encode
        the data) or build it from the data."""
        s = self.settings
        if s["data_format"] == "sft":
            raw = read_text_file(s["data"])
            self.data_name = os.fspath(s["data"])
            self.examples = parse_sft_lines(raw.split("\n"), name=self.data_name)
            # What the tokenizer must encode: every prompt and completion, and the end marker.
            self.text = "".join(ex.prompt + ex.completion for ex in self.examples) + "\n"
        else:
            raw, self.data_name = load_text(s["data"])
            self.text = raw
        self.data_fingerprint = fingerprint(raw)
        self.extended_chars = []
        if self.init_checkpoint is not None:
            self._tokenizer_from_init_checkpoint(extend_vocab)
        elif self.checkpoint is None:
            self.tokenizer = build_tokenizer(s["tokenizer"], self.text, s["bpe_vocab_size"])
        else:
            self.tokenizer = tokenizer_from_dict(self.checkpoint.tokenizer)  # checked by load_checkpoint_for_resume
            if s["init_from"] is not None or s["data_format"] == "sft":
                # A fine-tuning run: its vocabulary need only cover the data.
                error = finetune.unencodable_error(self.tokenizer, self.text, self.data_name, self.ckpt_path,
                                                   extendable=False)
                if error is not None:
                    raise error
            elif s["tokenizer"] == "char":
                # A char vocabulary is the set of characters of the corpus: it must be identical.
                fresh = build_tokenizer("char", self.text, s["bpe_vocab_size"])
                if fresh.to_dict() != self.checkpoint.tokenizer:
                    raise CheckpointError(
                        f"{self.ckpt_path} was trained on a different character vocabulary "
                        f"({self.tokenizer.vocab_size} characters) than {self.data_name} ({fresh.vocab_size} characters)")

    def _tokenizer_from_init_checkpoint(self, extend_vocab):
        """--init-from: the checkpoint's tokenizer and weights (self.init_state), the vocabulary
        grown by the data's new characters with --extend-vocab."""
        s, path = self.settings, self.settings["init_from"]
        self.tokenizer = tokenizer_from_dict(self.init_checkpoint.tokenizer)  # checked by check_gpt
        self.init_state = self.init_checkpoint.model_state
        if extend_vocab:
            self.extended_chars = unencodable_characters(self.tokenizer, self.text)
            self.tokenizer, self.init_state = finetune.extend_char_vocab(
                self.tokenizer, self.init_state, self.text,
                rng=np.random.default_rng([s["seed"], _EXTEND_VOCAB_STREAM]))
        else:
            error = finetune.unencodable_error(self.tokenizer, self.text, self.data_name, path)
            if error is not None:
                raise error

    def _encode_data(self):
        block_size = self.settings["block_size"]
        if self.settings["data_format"] == "sft":
            self.dataset = SFTDataset(self.examples, self.tokenizer, val_fraction=0.1, name=self.data_name)
            del self.examples, self.text
            self.dataset.check_block_size(block_size)
            self.truncated = self.dataset.truncated(block_size)  # builds the rows now
            return
        try:
            tokens = encode_corpus(self.text, self.tokenizer)
        except (KeyError, ValueError) as error:
            raise DataError(f"{self.data_name} cannot be encoded with the checkpoint's vocabulary: {error}") from None
        del self.text  # the token array is all the loop needs
        self.dataset = TokenDataset(tokens, val_fraction=0.1, name=self.data_name)
        self.dataset.check_block_size(block_size)

    def describe_data(self):
        """Log lines about the data: its size and, for SFT, what is scored and what was cut."""
        if self.settings["data_format"] != "sft":
            return [f"data: {self.data_name}: {len(self.dataset.train):,} train / {len(self.dataset.val):,} val tokens"]
        block_size = self.settings["block_size"]
        splits = self.dataset.example_splits
        rows = {split: self.dataset.rows(split, block_size) for split in splits}
        scored = {split: int((y != IGNORE_INDEX).sum()) for split, (_, y) in rows.items()}
        lines = [f"data: {self.data_name} (sft): {len(splits['train']):,} train / {len(splits['val']):,} val examples "
                 f"packed into {len(rows['train'][0]):,} / {len(rows['val'][0]):,} rows of {block_size} tokens; "
                 f"loss on {scored['train']:,} / {scored['val']:,} completion tokens"]
        if self.truncated:
            lines.append(f"note: {self.truncated} example(s) longer than --block-size + 1 = {block_size + 1} tokens "
                         f"were truncated (the prompt from the left, then the completion from the right)")
        return lines

    def _restore(self):
        """Take on the checkpoint's state; the settings of this invocation win over the
        hyperparameters the optimizer's state_dict carries (lr, betas, weight decay)."""
        hyperparameters = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.model.load_state_dict(self.checkpoint.model_state)
            self.optimizer.load_state_dict(self.checkpoint.optimizer_state)
            self.data_rng.bit_generator.state = self.checkpoint.rng_state["data"]
            tl.rng().bit_generator.state = self.checkpoint.rng_state["tensorlite"]
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            message = " ".join(str(error).split())
            raise CheckpointError(f"{self.ckpt_path} does not fit the model: {message}") from None
        for group, values in zip(self.optimizer.param_groups, hyperparameters):
            group.update(values)
        self.iteration = self.saved_iteration = self.checkpoint.iteration
        self.best_val_loss = float(self.checkpoint.extra.get("best_val_loss", math.inf))

    def _check_against_checkpoint(self, explicit, preset):
        """Flags or a preset that ask for a different model than the checkpoint holds -> error."""
        saved = self.checkpoint.extra.get("settings") or {}
        requested = {k: v for k, v in (PRESETS[preset] if preset else {}).items()}
        requested.update(explicit)
        differences = []
        for key in MODEL_KEYS + TOKENIZER_KEYS:
            if key not in requested:
                continue
            have = self.checkpoint.config.get(key, saved.get(key)) if key in MODEL_KEYS else saved.get(key)
            if have is not None and have != requested[key]:
                differences.append(f"--{key.replace('_', '-')} {requested[key]} (checkpoint has {have})")
        if differences:
            raise CheckpointError(
                f"{self.ckpt_path} does not match the requested settings: " + ", ".join(differences)
                + "; drop these flags to resume, or train into a new --out-dir")

    # -- files ---------------------------------------------------------------------------------

    def start(self, console, warn):
        """Prepare the out dir (after every check passed) and open the metrics file."""
        os.makedirs(self.settings["out_dir"], exist_ok=True)
        for path in (self.ckpt_path, self.best_path):
            removed = ckpt_io.remove_stale_temp_files(path)
            if removed:
                console.log(f"removed {len(removed)} temporary file(s) left by an interrupted save of {path}")
            if self.overwrite and os.path.exists(path):
                os.unlink(path)  # --overwrite: never leave the old run's files beside the new run's
        return MetricsWriter(self.settings["metrics"], append=self.checkpoint is not None, warn=warn)

    def save(self, path):
        """Checkpoint the current state to ``path``; refuses (returns False) if any parameter is
        not finite. CheckpointWriteError if the file cannot be written."""
        if not all_finite(self.model):
            return False
        if not self.world.is_main:  # every rank holds the same state; rank 0 writes it
            if path == self.ckpt_path:
                self.saved_iteration = self.iteration
            return True
        try:
            ckpt_io.save(
                path, self.model, self.optimizer, self.config, self.tokenizer,
                rng_state={"data": self.data_rng.bit_generator.state, "tensorlite": tl.rng().bit_generator.state},
                iteration=self.iteration,
                extra={"best_val_loss": self.best_val_loss, "settings": dict(self.settings),
                       "data_fingerprint": self.data_fingerprint},
            )
        except OSError as error:
            raise CheckpointWriteError(f"cannot write the checkpoint {path}: {error.strerror or error}; "
                                       f"{self.checkpoint_status()}") from None
        if path == self.ckpt_path:
            self.saved_iteration = self.iteration
        return True

    def checkpoint_status(self):
        """Where a stopped run can continue from, for messages."""
        if self.saved_iteration is None:
            return "no checkpoint was written"
        return f"{self.ckpt_path} holds iteration {self.saved_iteration} (continue with --resume)"

    # -- training ----------------------------------------------------------------------------

    def train(self, console, metrics, control=None):
        """Train to --max-iters. When ``control`` is asked to stop (a signal, a closed stdout), stop
        after the step in progress, with the checkpoint saved: RunStopped."""
        control = control if control is not None else run_control.RunControl()
        with control.deferred():
            self._train(console, metrics, control)

    def _train(self, console, metrics, control):
        s = self.settings
        model, optimizer, dataset = self.model, self.optimizer, self.dataset
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sequences_per_iter = s["batch_size"] * s["grad_accum"]  # global, over all ranks
        tokens_per_iter = self.tokens_per_iter
        model.train()

        window_losses, window_time, window_iters = [], 0.0, 0
        # Every checkpoint is written right after an evaluation at its iteration, if one was
        # due, so a resumed run need not repeat that one.
        evaluated_at = self.iteration if self.checkpoint is not None else None
        schedule = tl.optim.CosineWarmupSchedule(max_lr=s["lr"], min_lr=s["min_lr"],
                                                 warmup_iters=s["warmup_iters"],
                                                 lr_decay_iters=s["lr_decay_iters"])
        # A request made during setup (stdout closed) stops the run before its first step.
        stop = control.agreed(distributed.global_sum(control.requests(), self.world))
        while True:
            it = self.iteration
            lr = schedule.apply(optimizer, it)

            if (it % s["eval_interval"] == 0 or it >= s["max_iters"]) and it != evaluated_at:
                self.evaluate(console, metrics, it, lr)
            if it >= s["max_iters"]:
                break
            if stop is not None:  # every rank agreed on it after the same step
                console.clear_progress()
                if it > 0 and self.saved_iteration != it and not self.save(self.ckpt_path):
                    raise NonFiniteLossError(f"parameters are not finite at iteration {it}")
                raise RunStopped(stop)

            t0 = time.perf_counter()
            loss_sum = 0.0
            # This rank's share of the step's micro-batches (all of them in one process).
            batches = distributed.draw_micro_batches(dataset, s["batch_size"], s["block_size"], self.data_rng,
                                            s["grad_accum"], self.world)
            for micro_step, x, y in batches:
                distributed.seed_dropout(s["seed"], it, micro_step)
                _, loss = model(x, y)
                loss_sum += loss.item()
                # Average the gradient over the micro-batches (the loss of one big batch);
                # DistributedDataParallel then averages over the ranks.
                (loss / len(batches)).backward()
            if self.ddp is not None:
                self.ddp.sync_gradients()
            # A NaN on any rank stops all; so does a stop request (a signal, a closed stdout).
            [loss_sum, *requests] = distributed.global_sum([loss_sum, *control.requests()], self.world)
            stop = control.agreed(requests)
            if not math.isfinite(loss_sum):
                raise NonFiniteLossError(f"the training loss became {loss_sum} at iteration {it}")
            if s["grad_clip"] > 0:
                grad_norm = tl.optim.clip_grad_norm_(params, s["grad_clip"])
                if not math.isfinite(grad_norm):
                    raise NonFiniteLossError(f"the gradient norm became {grad_norm} at iteration {it}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0

            self.iteration = it + 1
            train_loss = loss_sum / s["grad_accum"]
            window_losses.append(train_loss)
            window_time += dt
            window_iters += 1
            console.progress(f"iter {self.iteration}/{s['max_iters']}  loss {train_loss:.4f}  {dt * 1000:.0f} ms")
            if self.iteration % s["log_interval"] == 0 or self.iteration == s["max_iters"]:
                ms_per_iter = 1000.0 * window_time / window_iters
                tokens_per_s = tokens_per_iter * window_iters / window_time
                mfu = model.estimate_mfu(sequences_per_iter * window_iters, window_time, peak_flops=self.peak_flops)
                console.log(
                    f"iter {self.iteration}: loss {train_loss:.4f}, lr {lr:.3e}, {ms_per_iter:.1f} ms/iter, "
                    f"{tokens_per_s:,.0f} tokens/s, mfu {100 * mfu:.1f}%")
                metrics.write(event="train", iter=self.iteration, tokens=self.iteration * tokens_per_iter,
                              loss=train_loss, mean_loss=float(np.mean(window_losses)), lr=lr,
                              ms_per_iter=ms_per_iter, tokens_per_s=tokens_per_s, mfu=mfu)
                window_losses, window_time, window_iters = [], 0.0, 0

        console.clear_progress()
        # The final state is always saved (unless the last evaluation just did): it is where a
        # later --resume continues.
        if self.saved_iteration != self.iteration:
            if not self.save(self.ckpt_path):
                raise NonFiniteLossError(f"parameters are not finite at iteration {self.iteration}")
            console.log(f"saved checkpoint at iteration {self.iteration} to {self.ckpt_path}")

    def evaluate(self, console, metrics, it, lr):
        """Estimate the losses; save the latest state to ckpt.npz and, if validation improved,
        to best.npz (iteration 0, the untrained model, is not worth a file)."""
        s = self.settings
        losses = distributed.estimate_loss(self.model, self.dataset, s["batch_size"], s["block_size"], s["eval_iters"],
                                  lambda split_index: make_eval_rng(s["seed"], it, split_index), self.world)
        if not (math.isfinite(losses["train"]) and math.isfinite(losses["val"])):
            raise NonFiniteLossError(
                f"the evaluation loss became train {losses['train']}, val {losses['val']} at iteration {it}")
        console.log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        metrics.write(event="eval", iter=it, tokens=it * self.tokens_per_iter, train_loss=losses["train"],
                      val_loss=losses["val"], lr=lr)
        improved = losses["val"] < self.best_val_loss
        if improved:
            self.best_val_loss = losses["val"]
        if it == 0 or not self.save(self.ckpt_path):
            return
        if improved and self.save(self.best_path):
            console.log(f"saved checkpoint at iteration {it} to {self.ckpt_path} and, best val loss "
                        f"{losses['val']:.4f}, to {self.best_path}")
        else:
            console.log(f"saved checkpoint at iteration {it} to {self.ckpt_path}")

    def sample(self, console, num_tokens):
        """Print a sample from the trained model, started from a newline."""
        try:
            start = list(self.tokenizer.encode("\n"))
        except (KeyError, ValueError):  # a corpus without newlines
            start = [0]
        idx = np.asarray([start], dtype=np.int64)  # (1, t)
        self.model.eval()
        with tl.no_grad():
            out = self.model.generate(idx, num_tokens, temperature=0.8, top_k=None,
                                      rng=make_sample_rng(self.settings["seed"]))
        self.model.train()
        text = self.tokenizer.decode(np.asarray(out)[0, len(start):].tolist())
        console.log("sample:\n" + text)

