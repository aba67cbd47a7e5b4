"""The environment variables that choose and configure the kernels, checked before use.

``TENSORLITE_KERNELS`` is read when tensorlite is imported, and so are Numba's own
``NUMBA_NUM_THREADS`` and ``NUMBA_THREADING_LAYER`` when that import loads Numba. Numba
reports a bad value of its variables with an error that does not name the variable (or only
at the first parallel kernel), so tensorlite checks them first and raises
:class:`EnvironmentVariableError`, which names the variable and what it may hold.

This module imports nothing but the standard library, so ``tensorlite/runtime.py`` can use it
before NumPy loads, and the console scripts (``_tensorlite_launch.py``) recognise its error even
though the import of tensorlite that raised it failed.
"""

import os

__all__ = ["EnvironmentVariableError", "check_numba_variables"]

# The names Numba's threading-layer selection accepts (numba.np.ufunc.parallel, compared in
# lower case): a layer, or a property that picks one.
NUMBA_THREADING_LAYERS = ("default", "omp", "tbb", "workqueue", "safe", "threadsafe",
                          "forksafe")


class EnvironmentVariableError(ValueError):
    """An environment variable that tensorlite reads holds a value it cannot use.

    A ValueError whose message names the variable, its value and the values allowed;
    ``variable`` and ``value`` hold the first two.
    """

    def __init__(self, variable, value, problem):
        super().__init__(f"{variable}={value!r} {problem}")
        self.variable = variable
        self.value = value


def _choices(names):
    return ", ".join(map(repr, names))


def kernel_set_from_environment(kernel_sets):
    """The kernel set named by TENSORLITE_KERNELS (any case; unset or blank: 'numba')."""
    value = os.environ.get("TENSORLITE_KERNELS", "")
    name = value.strip().lower() or "numba"
    if name not in kernel_sets:
        raise EnvironmentVariableError("TENSORLITE_KERNELS", value,
                                       f"is not a kernel set: choose one of "
                                       f"{_choices(kernel_sets)}")
    return name


def check_numba_variables():
    """Raise EnvironmentVariableError for a NUMBA_NUM_THREADS or NUMBA_THREADING_LAYER that
    Numba would reject. Numba reads them once, on import: call this before importing it."""
    threads = os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and threads.strip():  # blank: Numba's default, as when unset
        try:
            valid = int(threads) >= 1
        except ValueError:
            valid = False
        if not valid:
            raise EnvironmentVariableError(
                "NUMBA_NUM_THREADS", threads,
                "is not a thread count: set a positive integer, or unset it for one thread "
                "per core")
    layer = os.environ.get("NUMBA_THREADING_LAYER")
    if layer is not None and layer.lower() not in NUMBA_THREADING_LAYERS:
        raise EnvironmentVariableError(
            "NUMBA_THREADING_LAYER", layer,
            f"is not a Numba threading layer: choose one of {_choices(NUMBA_THREADING_LAYERS)}, "
            f"or unset it")
