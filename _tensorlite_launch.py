"""Entry points of the console scripts (setup.cfg): ``tensorlite-train``, ``-sample``,
``-convert`` and ``-plot``.

Each imports its command's module (``tensorlite.models.<command>``) and runs its ``main()``.
A bad value in an environment variable that tensorlite reads (``TENSORLITE_KERNELS``, or
``NUMBA_NUM_THREADS`` and ``NUMBA_THREADING_LAYER`` when Numba loads) raises
``EnvironmentVariableError`` while tensorlite is imported, before any ``main()`` could catch it;
here it becomes the commands' usual one line, ``<prog>: error: ...``, and exit code 2 instead of
a traceback. The same holds when the error is raised later, by ``main()`` itself
(``--kernels numba`` loading Numba). Any other exception passes through untouched.

Why a top-level module beside the ``tensorlite`` package, not inside it: the script that pip
writes for an entry point imports the entry point's module first, and importing anything in
``tensorlite`` runs ``tensorlite/__init__.py``, which raises the error (as it should for a
program that imports the library) before a launcher inside the package could catch it. This
module imports only the standard library, so the import of tensorlite happens inside ``run``.
"""

import importlib
import sys

EXIT_USAGE = 2

# Where EnvironmentVariableError is defined: a module that imports only the standard library
# and is imported before anything can raise the error, so it stays in sys.modules even when
# the import of tensorlite that raised the error failed (tensorlite then cannot be imported
# to name the class).
_ENVIRONMENT_MODULE = "tensorlite.environment"


def is_environment_error(error):
    """True for tensorlite's EnvironmentVariableError, also when importing tensorlite failed."""
    module = sys.modules.get(_ENVIRONMENT_MODULE)
    return module is not None and isinstance(error, module.EnvironmentVariableError)


def run(prog, module_name, argv=None):
    """Run `module_name`.main(argv) as the command `prog`; return its exit code."""
    try:
        main = importlib.import_module(module_name).main
        return main(argv)
    except ValueError as error:
        if not is_environment_error(error):
            raise
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return EXIT_USAGE


def train():
    sys.exit(run("tensorlite-train", "tensorlite.models.train"))


def sample():
    sys.exit(run("tensorlite-sample", "tensorlite.models.sample"))


def convert():
    sys.exit(run("tensorlite-convert", "tensorlite.models.convert"))


def plot():
    sys.exit(run("tensorlite-plot", "tensorlite.models.plot"))
