"""Saving nested state (state dicts, optimizer state, RNG states) without pickle.

`split_arrays(obj)` turns a nest of dicts, lists, tuples, numbers, strings, NumPy arrays and
Tensors into (arrays, tree): the arrays for `np.savez`, and a JSON-able tree that names them.
`join_arrays(arrays, tree)` rebuilds the original, exact to the bit. Loading then needs only
the arrays and `json.loads`, which cannot run code from a file; `load` reads the arrays with
`tensorlite.npz.read_npz`, which checks every byte (CRCs, .npy headers, sizes, dtypes) instead
of trusting the file as `np.load` does.

`save(obj, path)` and `load(path)` (exported as `tl.save` / `tl.load`) put the two parts in one
`.npz` file: every array under its path in the nest, plus `tree.json`, the tree as UTF-8 JSON
stored as a uint8 array. Writing is atomic (`atomic_write`): a crash leaves the old file or the
new one, never a torn one.

    tl.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}, "ckpt.npz")
    state = tl.load("ckpt.npz")
"""

import json
import os
import tempfile

import numpy as np

from tensorlite.npz import (NotAFileError, NotAnArchiveError, NpzError, READABLE_KINDS, TooLargeError,
                            UnsupportedDtypeError, read_npz)
from tensorlite.tensor import Tensor

__all__ = ["save", "load", "SerializationError", "atomic_write", "fsync_directory", "split_arrays",
           "join_arrays", "encode", "decode"]

FORMAT_NAME = "tensorlite-save"
FORMAT_VERSION = 1
TREE_KEY = "tree.json"


class SerializationError(ValueError):
    """A file given to `load` is damaged, or is not a file written by `save`."""

# JSON cannot hold arrays, tuples, non-string dict keys or NumPy scalars, so those are
# written as small tagged objects: {"__array__": key}, {"__scalar__": key} (a 0-d array,
# which keeps the exact dtype, e.g. a float32 step size), {"__tuple__": [...]} and
# {"__items__": [[key, value], ...]} for a dict whose keys are not all plain strings, and
# {"__tensor__": key, "requires_grad": bool, "parameter": bool} for a Tensor (or Parameter).
# Python floats survive JSON exactly (repr round-trips), so no precision is lost.

_TAGS = ("__array__", "__scalar__", "__tuple__", "__items__", "__tensor__")


def _store(arrays, prefix, array):
    """Put `array` in `arrays` under `prefix`, or under a variant if a dict key containing '/'
    already produced the same path (e.g. keys "a/b" and "a" -> "b")."""
    key, n = prefix, 1
    while key in arrays:
        key, n = f"{prefix}~{n}", n + 1
    arrays[key] = array
    return key


def _check_readable(dtype, what, prefix):
    """`load` reads back only bool, integer and floating arrays in native byte order (see
    tensorlite/npz.py); refuse anything else here, before a file that cannot be read is written."""
    if dtype.hasobject:
        raise TypeError(f"cannot save {what} at {prefix!r} without pickle")
    if dtype.kind not in READABLE_KINDS or not dtype.isnative:
        raise TypeError(f"cannot save {what} of dtype {dtype.str} at {prefix!r}: only bool, integer "
                        f"and floating dtypes in native byte order can be loaded back")


def encode(obj, prefix, arrays):
    """The JSON-able tree for `obj`; its arrays go into `arrays`, keyed by path under `prefix`."""
    if isinstance(obj, np.ndarray):
        _check_readable(obj.dtype, "an object array" if obj.dtype.hasobject else "an array", prefix)
        return {"__array__": _store(arrays, prefix, obj)}
    if isinstance(obj, np.generic):
        _check_readable(obj.dtype, "a NumPy object scalar" if obj.dtype.hasobject else "a NumPy scalar",
                        prefix)
        return {"__scalar__": _store(arrays, prefix, np.asarray(obj))}
    if isinstance(obj, Tensor):
        _check_readable(obj.data.dtype, "an object-dtype Tensor" if obj.data.dtype.hasobject else "a Tensor",
                        prefix)
        return {"__tensor__": _store(arrays, prefix, obj.data), "requires_grad": obj.requires_grad,
                "parameter": type(obj).__name__ == "Parameter"}
    if isinstance(obj, dict):
        plain_keys = all(isinstance(k, str) and k not in _TAGS for k in obj)
        if plain_keys:
            return {k: encode(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
        return {
            "__items__": [
                [encode(k, f"{prefix}/key{i}", arrays), encode(v, f"{prefix}/{i}", arrays)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save a value of type {type(obj).__name__} at {prefix!r}: only dicts, "
                    f"lists, tuples, NumPy arrays, Tensors, numbers, strings and None can be saved")


def decode(obj, arrays):
    """Rebuild what `encode` turned into the tree `obj`, taking arrays from `arrays`."""
    if isinstance(obj, list):
        return [decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__scalar__" in obj:
            return arrays[obj["__scalar__"]][()]
        if "__tensor__" in obj:
            return _tensor(arrays[obj["__tensor__"]], obj.get("requires_grad", False),
                           obj.get("parameter", False))
        if "__tuple__" in obj:
            return tuple(decode(v, arrays) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(decode(k, arrays)): decode(v, arrays) for k, v in obj["__items__"]}
        return {k: decode(v, arrays) for k, v in obj.items()}
    return obj


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _tensor(array, requires_grad, parameter):
    if parameter:
        from tensorlite.nn import Parameter  # here: nn imports much of the library
        return Parameter(array, dtype=array.dtype)
    return Tensor(array, requires_grad=bool(requires_grad), dtype=array.dtype)


def split_arrays(obj, prefix=""):
    """(arrays, tree): every array in `obj` moved to `arrays` under its path, the rest as JSON."""
    arrays = {}
    return arrays, encode(obj, prefix, arrays)


def join_arrays(arrays, tree):
    """The inverse of `split_arrays`."""
    return decode(tree, arrays)


# --------------------------------------------------------------------------------------------
# One file: tl.save / tl.load
# --------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call `write(file)` on a temporary file beside `path`, flush and fsync it, then rename it
    over `path` (atomic on POSIX and Windows) and fsync the directory. On any error, including
    Ctrl-C, the temporary file is removed and an existing `path` is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                    dir=directory)
    try:
        umask = os.umask(0)  # mkstemp makes the file 0600; give it a normal file's permissions
        os.umask(umask)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    fsync_directory(directory)  # make the rename durable


def fsync_directory(path):
    """fsync the directory `path`, so that renames and new entries in it survive a power cut.
    Best effort: not every platform can open or fsync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj, f):
    """Save a nest of dicts, lists and tuples holding NumPy arrays, Tensors, numbers, strings
    and None to `f` (a path, written atomically, or a binary file object), without pickle.

    Anything else raises TypeError naming where it sits, e.g. ``'obj/layers/0'``, and its
    type; nothing is written then. `load` gives back the same structure: Tensors as Tensors
    (with requires_grad, Parameters as Parameters), arrays as arrays, tuples as tuples.
    """
    arrays = {}
    tree = encode(obj, "obj", arrays)
    document = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": tree}
    arrays[TREE_KEY] = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)
    if hasattr(f, "write"):
        np.savez(f, **arrays)
    else:
        atomic_write(f, lambda file: np.savez(file, **arrays))


def load(f):
    """Read what `save` wrote to `f` (a path or a binary file object). Never unpickles: a
    damaged file, or one not written by `save`, raises SerializationError saying so in one line.

    Every byte is checked before anything is returned (see tensorlite/npz.py): each member's CRC
    and .npy header, sizes against the available memory, and the dtypes (bool, integer and
    floating arrays only). A path that is not a regular file (a FIFO, a device, a directory) is
    refused without reading it; a missing or unreadable one raises the usual OSError.
    """
    name = getattr(f, "name", f) if hasattr(f, "read") else os.fspath(f)
    try:
        arrays = read_npz(f)
    except NotAFileError as error:
        raise SerializationError(f"cannot load {name!r}: it {error.reason}") from None
    except NotAnArchiveError as error:
        if error.single_array:
            raise SerializationError(f"cannot load {name!r}: it holds a single .npy array, not a "
                                     f"file written by tl.save (use np.load for it)") from None
        raise SerializationError(f"cannot load {name!r}: not a file written by tl.save, or a "
                                 f"damaged one ({error.reason})") from None
    except (TooLargeError, UnsupportedDtypeError) as error:
        raise SerializationError(f"cannot load {name!r}: {error}") from None
    except NpzError as error:
        raise SerializationError(f"cannot load {name!r}: the file is damaged: {error}") from None
    try:
        if TREE_KEY not in arrays:
            raise SerializationError(f"cannot load {name!r}: it has no {TREE_KEY}, so it was not "
                                     f"written by tl.save")
        document = json.loads(arrays.pop(TREE_KEY).tobytes().decode("utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise SerializationError(f"cannot load {name!r}: not a {FORMAT_NAME} file")
        if document.get("version") != FORMAT_VERSION:
            raise SerializationError(f"cannot load {name!r}: format version "
                                     f"{document.get('version')!r} is not supported (this "
                                     f"tensorlite reads version {FORMAT_VERSION})")
        return decode(document["tree"], arrays)
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError,
            UnicodeDecodeError) as error:
        raise SerializationError(f"cannot load {name!r}: the file is damaged "
                                 f"({type(error).__name__}: {' '.join(str(error).split())})") from None
