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
``optim/...`` entry. Because nothing is pickled, ``load`` uses ``allow_pickle=False``
and a checkpoint can be inspected with nothing but NumPy and ``json``.

Saving is atomic: the archive is written to a temporary file in the target's
directory, flushed and fsync'ed, then moved over the target with ``os.replace``
(an atomic rename on POSIX and Windows), and finally the directory itself is
fsync'ed so the rename survives a power cut. A crash at any point leaves either the
old checkpoint or the new one, never a torn file.
"""

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

from tensorlite.serialization import decode, encode

__all__ = ["CheckpointError", "Checkpoint", "save", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "tensorlite-checkpoint"
FORMAT_VERSION = 1
META_KEY = "meta.json"


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

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates the file 0600; give the checkpoint the permissions of a normal file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        # Whatever went wrong (disk full, Ctrl-C), the old checkpoint is untouched;
        # only the half-written temporary file has to go.
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable. Not every platform can open a directory (Windows cannot)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------------------
# load


def load(path):
    """Read a checkpoint written by ``save``; any problem raises ``CheckpointError`` (one line)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"checkpoint is truncated or corrupt ({error}): {path}") from None
    except (ValueError, OSError):
        # np.load falls back to pickle for anything that is neither .npy nor .npz;
        # with allow_pickle=False that is a ValueError: the file is something else entirely.
        raise CheckpointError(f"not a tensorlite checkpoint (not a NumPy .npz archive): {path}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"not a tensorlite checkpoint (a single .npy array, not an .npz archive): {path}")
    try:
        # Read every member now: a damaged member (bad CRC, cut short) fails here, not later.
        arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise CheckpointError(f"checkpoint is truncated or corrupt ({error}): {path}") from None
    finally:
        archive.close()
    if META_KEY not in arrays:
        raise CheckpointError(f"not a tensorlite checkpoint (no {META_KEY} entry): {path}")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata is damaged ({error}): {path}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"not a tensorlite checkpoint (format is {meta.get('format') if isinstance(meta, dict) else None!r}): {path}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported checkpoint format version {meta.get('version')!r} (this version reads {FORMAT_VERSION}): {path}"
        )
    try:
        model_state = {name: arrays[f"model/{name}"] for name in meta["model_keys"]}
        return Checkpoint(
            model_state=model_state,
            optimizer_state=decode(meta["optimizer"], arrays),
            config=meta["config"],
            tokenizer=meta["tokenizer"],
            rng_state=decode(meta["rng_state"], arrays),
            iteration=int(meta["iteration"]),
            extra=decode(meta["extra"], arrays),
            meta=meta,
        )
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint is incomplete (missing entry {error}): {path}") from None

