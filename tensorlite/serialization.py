"""Saving nested state (state dicts, optimizer state, RNG states) without pickle.

`split_arrays(obj)` turns a nest of dicts, lists, tuples, numbers, strings and NumPy arrays
into (arrays, tree): the arrays for `np.savez`, and a JSON-able tree that names them.
`join_arrays(arrays, tree)` rebuilds the original, exact to the bit. Loading then needs only
`np.load(..., allow_pickle=False)` and `json.loads`, which cannot run code from a file.
"""

import numpy as np

# JSON cannot hold arrays, tuples, non-string dict keys or NumPy scalars, so those are
# written as small tagged objects: {"__array__": key}, {"__scalar__": key} (a 0-d array,
# which keeps the exact dtype, e.g. a float32 step size), {"__tuple__": [...]} and
# {"__items__": [[key, value], ...]} for a dict whose keys are not all plain strings.
# Python floats survive JSON exactly (repr round-trips), so no precision is lost.

_TAGS = ("__array__", "__scalar__", "__tuple__", "__items__")


def encode(obj, prefix, arrays):
    """The JSON-able tree for `obj`; its arrays go into `arrays`, keyed by path under `prefix`."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"cannot store an object array at {prefix!r} without pickle")
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        arrays[prefix] = np.asarray(obj)
        return {"__scalar__": prefix}
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
    raise TypeError(f"cannot store a value of type {type(obj).__name__} at {prefix!r} in a checkpoint")


def decode(obj, arrays):
    """Rebuild what `encode` turned into the tree `obj`, taking arrays from `arrays`."""
    if isinstance(obj, list):
        return [decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__scalar__" in obj:
            return arrays[obj["__scalar__"]][()]
        if "__tuple__" in obj:
            return tuple(decode(v, arrays) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(decode(k, arrays)): decode(v, arrays) for k, v in obj["__items__"]}
        return {k: decode(v, arrays) for k, v in obj.items()}
    return obj


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def split_arrays(obj, prefix=""):
    """(arrays, tree): every array in `obj` moved to `arrays` under its path, the rest as JSON."""
    arrays = {}
    return arrays, encode(obj, prefix, arrays)


def join_arrays(arrays, tree):
    """The inverse of `split_arrays`."""
    return decode(tree, arrays)
