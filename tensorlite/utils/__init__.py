"""Utilities under torch's paths: ``tensorlite.utils.data`` (datasets, samplers and
``DataLoader``, as ``torch.utils.data``), and any other submodule of this package, loaded on
first access (``tl.utils.<name>``) so that each stays independent of the others."""

import importlib
import importlib.util

from tensorlite.utils import data

__all__ = ["data"]


def __getattr__(name):
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
