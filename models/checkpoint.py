"""Training checkpoints: one ``.npz`` file, no pickle, written atomically.

Layout of the file (an ordinary NumPy ``.npz`` zip archive)::

    model/<parameter name>   one array per entry of model.state_dict()
    optim/<path>             every array inside optimizer.state_dict() (moments, flat buffers, ...)
    extra/<name>             arrays passed in ``extra`` (anything else in ``extra`` goes to meta.json)
    meta.json                a UTF-8 JSON document stored as a uint8 array

``meta.json`` holds everything that is not an array: the format name and version, the
model config, the tokenizer (``tokenizer.to_dict()``), the iteration, the state of the
data-sampling random generator (``Generator.bit_generator.state`` is a dict of ints),
and the optimizer's state dict with each array replaced by a reference to its
``optim/...`` entry. Nothing is pickled, so a checkpoint can be inspected with nothing but
NumPy and ``json``. ``load`` does not use ``np.load``, which trusts each member's ``.npy``
header: it reads the archive with ``tensorlite.npz.read_npz``, which checks every member's
CRC and header against its size, so a flipped bit is an error, never a shifted array.

Saving is atomic: the archive is written to a temporary file in the target's
directory, flushed and fsync'ed, then moved over the target with ``os.replace``
(an atomic rename on POSIX and Windows), and finally the directory itself is
fsync'ed so the rename survives a power cut. A crash at any point leaves either the
old checkpoint or the new one, never a torn file. A crash can leave the temporary file
behind (``.<name>.<random>.tmp``); ``remove_stale_temp_files`` clears those at the start of
the next run.

Nothing in a checkpoint is trusted: ``load`` checks the type of every metadata field, and
``check_gpt`` / ``check_training_state`` check the arrays against the config (shapes, dtypes,
finite values), the tokenizer against the vocabulary and the model's size against the
available memory, all before a model is built. Each problem is one ``CheckpointError`` line
naming the field.
"""

import glob
import json
import math
import numbers
import os
from dataclasses import dataclass, field

import numpy as np

from tensorlite.npz import (NotAFileError, NotAnArchiveError, NpzError, TooLargeError, UnsupportedDtypeError,
                            read_npz)
from tensorlite.serialization import atomic_write, decode, encode

from .jsonio import load_json_text

__all__ = ["CheckpointError", "Checkpoint", "save", "load", "remove_stale_temp_files", "check_gpt",
           "check_training_state", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "tensorlite-checkpoint"
FORMAT_VERSION = 1
META_KEY = "meta.json"
# What tensorlite-train writes in --out-dir: the latest state, and the best one beside it.
LATEST_NAME, BEST_NAME = "ckpt.npz", "best.npz"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign, or does not fit the requested run."""


@dataclass
class Checkpoint:
    """Everything ``load`` reads back from a checkpoint file."""

    model_state: dict  # parameter name -> np.ndarray
    optimizer_state: object  # the optimizer's state_dict(), arrays restored
    config: dict  # GPTConfig.to_dict()
    tokenizer: dict  # tokenizer.to_dict()
    rng_state: object  # np.random.Generator.bit_generator.state (or None)
    iteration: int
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# save


def _to_plain(obj):
    """Config / tokenizer dicts: accept objects with ``to_dict()`` as well as dicts."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, dict):
        return dict(obj)
    raise TypeError(f"expected a dict or an object with to_dict(), got {type(obj).__name__}")


def _state_dict_of(obj):
    if obj is None:
        return None
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    return obj


def save(path, model, optimizer, config, tokenizer, rng_state, iteration, extra=None):
    """Write a checkpoint to ``path`` atomically.

    ``model`` and ``optimizer`` may be objects with ``state_dict()`` or the state dicts
    themselves; ``config`` and ``tokenizer`` objects with ``to_dict()`` or dicts;
    ``rng_state`` is ``Generator.bit_generator.state``; ``extra`` is a dict of anything
    JSON-able plus arrays (best validation loss, run arguments, ...).
    """
    path = os.fspath(path)
    arrays = {}
    model_state = _state_dict_of(model)
    for name, value in model_state.items():
        arrays[f"model/{name}"] = np.asarray(value)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "iteration": int(iteration),
        "config": _to_plain(config),
        "tokenizer": _to_plain(tokenizer),
        "rng_state": encode(rng_state, "rng", arrays),
        "model_keys": list(model_state.keys()),
        "optimizer": encode(_state_dict_of(optimizer), "optim", arrays),
        "extra": encode(dict(extra or {}), "extra", arrays),
    }
    meta_bytes = json.dumps(meta, sort_keys=False).encode("utf-8")
    arrays[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Whatever goes wrong (disk full, Ctrl-C), the old checkpoint is untouched and the
    # half-written temporary file .<name>.<random>.tmp is removed (remove_stale_temp_files
    # cleans up after a killed process).
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _temp_prefix(path):
    # atomic_write's temporary files are named .<name>.<random>.tmp
    return "." + os.path.basename(path) + "."


def remove_stale_temp_files(path):
    """Delete the temporary files that saves of ``path`` killed midway left behind; return their paths.

    Call it when no other process is saving to ``path`` (at the start of a run).
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    pattern = os.path.join(glob.escape(directory), glob.escape(_temp_prefix(os.fspath(path))) + "*.tmp")
    removed = []
    for stale in sorted(glob.glob(pattern)):
        try:
            os.unlink(stale)
            removed.append(stale)
        except OSError:
            pass
    return removed


# ----------------------------------------------------------------------------------------
# load


def load(path):
    """Read a checkpoint written by ``save``; any problem raises ``CheckpointError`` (one line).

    When the file is damaged and is a ``ckpt.npz`` with a ``best.npz`` beside it (what
    tensorlite-train writes), the message also says whether that ``best.npz`` can be used instead.
    """
    path = os.fspath(path)
    try:
        return _load(path)
    except _DamagedCheckpoint as error:
        raise CheckpointError(f"{error}{_sibling_note(path)}") from None


class _DamagedCheckpoint(CheckpointError):
    """The file is damaged (cut short, a flipped bit, unreadable metadata), as opposed to
    missing, foreign or not fitting the run."""


def _sibling_note(path):
    """'; .../best.npz beside it is intact (iteration N): ...' for a damaged ckpt.npz, or ''."""
    if os.path.basename(path) != LATEST_NAME:
        return ""
    best = os.path.join(os.path.dirname(path), BEST_NAME)
    if not os.path.isfile(best):
        return ""
    try:
        iteration = _load(best).iteration
    except _DamagedCheckpoint:
        return f"; {best} beside it is damaged too"
    except CheckpointError as error:
        return f"; {best} beside it cannot be loaded either ({error})"
    return (f"; {best} beside it is intact (iteration {iteration}): use it instead (to --resume "
            f"from it, copy it over {path})")


def _read_arrays(path):
    """Every array of the archive at ``path``, each member verified (tensorlite/npz.py)."""
    from .gpt_config import available_memory, format_bytes

    try:
        return read_npz(path, memory=available_memory)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    except NotAFileError as error:
        raise CheckpointError(f"checkpoint path is not a regular file (it {error.reason}): {path}") from None
    except NotAnArchiveError as error:
        if error.single_array:
            raise CheckpointError(f"not a tensorlite checkpoint (a single .npy array, not an .npz "
                                  f"archive): {path}") from None
        raise CheckpointError(f"not a tensorlite checkpoint (not a NumPy .npz archive): {path}") from None
    except TooLargeError as error:
        raise CheckpointError(f"checkpoint {path} holds {format_bytes(error.needed)} of arrays, more than "
                              f"the {format_bytes(error.available)} of available memory") from None
    except UnsupportedDtypeError as error:
        raise CheckpointError(f"invalid checkpoint {path}: {error}") from None
    except NpzError as error:
        raise _DamagedCheckpoint(f"checkpoint is truncated or corrupt ({error}): {path}") from None


def _load(path):
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint path is not a regular file: {path}")
    if os.path.getsize(path) == 0:
        raise _DamagedCheckpoint(f"checkpoint file is empty: {path}")
    arrays = _read_arrays(path)
    if META_KEY not in arrays:
        raise CheckpointError(f"not a tensorlite checkpoint (no {META_KEY} entry): {path}")
    try:
        text = arrays.pop(META_KEY).tobytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise _DamagedCheckpoint(f"checkpoint metadata is damaged ({error}): {path}") from None
    # jsonio also refuses deep nesting, integers past Python's digit limit and lone surrogates
    meta = load_json_text(text, f"checkpoint metadata of {path}", error=_DamagedCheckpoint)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"not a tensorlite checkpoint (format is {meta.get('format') if isinstance(meta, dict) else None!r}): {path}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported checkpoint format version {meta.get('version')!r} (this version reads {FORMAT_VERSION}): {path}"
        )
    for key in ("iteration", "config", "tokenizer", "model_keys", "optimizer", "rng_state", "extra"):
        if key not in meta:
            raise _DamagedCheckpoint(f"checkpoint is incomplete (missing entry {key!r}): {path}")
    iteration = meta["iteration"]
    if type(iteration) is not int or iteration < 0:
        raise _field_error(path, "iteration", "must be an integer >= 0", iteration)
    for key in ("config", "tokenizer"):
        if not isinstance(meta[key], dict):
            raise _field_error(path, key, "must be a JSON object", meta[key])
    keys = meta["model_keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise _field_error(path, "model_keys", "must be a list of distinct names", keys)
    try:
        model_state = {name: arrays[f"model/{name}"] for name in keys}
        parts = {key: decode(meta[key], arrays) for key in ("optimizer", "rng_state", "extra")}
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise _DamagedCheckpoint(f"checkpoint is incomplete (missing entry {error}): {path}") from None
    if not isinstance(parts["extra"], dict):
        raise _field_error(path, "extra", "must be a JSON object", parts["extra"])
    return Checkpoint(model_state=model_state, optimizer_state=parts["optimizer"], config=meta["config"],
                      tokenizer=meta["tokenizer"], rng_state=parts["rng_state"], iteration=iteration,
                      extra=parts["extra"], meta=meta)


def _field_error(path, name, requirement, value):
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CheckpointError(f"invalid checkpoint {path}: {name} {requirement}, got {shown}")


# ----------------------------------------------------------------------------------------
# checks of a loaded checkpoint against the GPT it describes


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_gpt(checkpoint, path):
    """Check everything needed to rebuild the GPT, before building it; return (config, tokenizer, dtype).

    The config's fields, the memory the model needs for inference, the tokenizer (it must
    cover every id the model can produce), and every array of the state dict: present, of the
    shape the config implies, one floating dtype for all, finite.
    """
    from .gpt_config import (GPTConfig, available_memory, count_state_entries, estimate_memory,
                             format_bytes, state_shapes)
    from .tokenizer import tokenizer_from_dict

    try:
        config = GPTConfig.from_dict(checkpoint.config)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"invalid checkpoint {path}: config: {' '.join(str(error).split())}") from None
    names = {"transformer.wte.weight", "lm_head.weight"}
    dtypes = {np.asarray(checkpoint.model_state[name]).dtype for name in names & set(checkpoint.model_state)}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    if dtype not in (np.float32, np.float64):
        raise _field_error(path, "model/transformer.wte.weight", "must be float32 or float64", str(dtype))
    needed, available = estimate_memory(config, batch_size=1, dtype=dtype, training=False), available_memory()
    if available is not None and needed > available:
        raise CheckpointError(
            f"invalid checkpoint {path}: config (n_layer {config.n_layer}, n_embd {config.n_embd}, block_size "
            f"{config.block_size}, vocab_size {config.vocab_size}) needs about {format_bytes(needed)}, more than "
            f"the {format_bytes(available)} of available memory")
    try:
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"invalid checkpoint {path}: tokenizer: {' '.join(str(error).split())}") from None
    if tokenizer.vocab_size < config.vocab_size:
        raise CheckpointError(f"invalid checkpoint {path}: tokenizer has {tokenizer.vocab_size} tokens, fewer "
                              f"than config.vocab_size {config.vocab_size}: sampled ids could not be decoded")
    state = checkpoint.model_state
    n_expected = count_state_entries(config)
    if len(state) != n_expected:  # before listing the expected names: a config may ask for millions
        raise CheckpointError(f"invalid checkpoint {path}: holds {len(state)} model arrays, config "
                              f"(n_layer {config.n_layer}) implies {n_expected}")
    expected = state_shapes(config)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        problem = f"lacks model/{missing[0]}" if missing else f"has an unexpected array model/{unexpected[0]}"
        raise CheckpointError(f"invalid checkpoint {path}: {problem} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected for this config)")
    for name, shape in expected.items():
        value = state[name]
        if value.shape != shape:
            raise CheckpointError(f"invalid checkpoint {path}: model/{name} has shape {value.shape}, "
                                  f"config implies {shape}")
        if value.dtype != dtype:
            raise _field_error(path, f"model/{name}", f"must have the model's dtype {dtype}", str(value.dtype))
        if not np.isfinite(value).all():
            raise CheckpointError(f"invalid checkpoint {path}: model/{name} holds NaN or infinite values")
    return config, tokenizer, dtype


def check_training_state(checkpoint, path, dtype):
    """Check what resuming needs beyond the model: optimizer moments and steps, generator
    states, best validation loss and saved settings (their values are checked by the trainer)."""
    optimizer = checkpoint.optimizer_state
    if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
            or not isinstance(optimizer.get("param_groups"), list)):
        raise _field_error(path, "optimizer", "must hold 'state' and 'param_groups'", type(optimizer).__name__)
    for index, param_state in optimizer["state"].items():
        where = f"optimizer.state.{index}"
        if not isinstance(param_state, dict):
            raise _field_error(path, where, "must be a JSON object", param_state)
        if "step" in param_state and (not _is_int(param_state["step"]) or param_state["step"] < 0):
            raise _field_error(path, f"{where}.step", "must be an integer >= 0", param_state["step"])
        for name, value in param_state.items():
            if isinstance(value, np.ndarray):
                if value.dtype != dtype:
                    raise _field_error(path, f"{where}.{name}", f"must have the model's dtype {dtype}", str(value.dtype))
                if not np.isfinite(value).all():
                    raise CheckpointError(f"invalid checkpoint {path}: {where}.{name} holds NaN or infinite values")
                if name == "exp_avg_sq" and (value < 0).any():
                    raise CheckpointError(f"invalid checkpoint {path}: {where}.{name} holds negative values")
    rng_state = checkpoint.rng_state
    if not isinstance(rng_state, dict):
        raise _field_error(path, "rng_state", "must hold 'data' and 'tensorlite'", rng_state)
    for name in ("data", "tensorlite"):
        try:
            np.random.default_rng().bit_generator.state = rng_state[name]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise _field_error(path, f"rng_state.{name}", "must be a NumPy bit generator state",
                               rng_state.get(name)) from None
    extra = checkpoint.extra
    best = extra.get("best_val_loss", math.inf)
    if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best) or best < 0:
        raise _field_error(path, "extra.best_val_loss", "must be a number >= 0", best)
    if not isinstance(extra.get("settings", {}), dict):
        raise _field_error(path, "extra.settings", "must be a JSON object", extra.get("settings"))
    if not isinstance(extra.get("data_fingerprint", ""), (str, type(None))):
        raise _field_error(path, "extra.data_fingerprint", "must be a string", extra.get("data_fingerprint"))

