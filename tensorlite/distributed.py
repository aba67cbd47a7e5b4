"""Data-parallel communication over MPI, with PyTorch's ``torch.distributed`` names.

    # launch W processes:  mpiexec -n W python train.py
    import tensorlite.distributed as dist

    dist.init_process_group()                 # backend="mpi", the only one
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.broadcast(array, src=0)              # rank 0's values everywhere, in place
    dist.all_reduce(array, op="sum")          # element-wise sum over ranks, in place

Every array is a NumPy array and every collective works in place on it, as the
tensor versions do in PyTorch. Collectives are blocking: each rank must call the
same collectives in the same order with arrays of the same shape and dtype.

MPI is an optional extra (``pip install '.[mpi]' from a tensorlite checkout``: mpi4py and MPICH, whose
wheel puts an ``mpiexec`` in the virtualenv). mpi4py is imported here only, and only
by ``init_process_group``: importing this module, or asking ``launched_by_mpiexec()``,
never loads MPI, so a plain single-process run is unaffected by whether MPI is installed.

Failures end the whole job. A rank that raises while others wait in a collective
would leave them waiting forever, so once the group is initialised with more than one
rank an uncaught exception prints its traceback and calls ``abort``, which is
``MPI_Abort``: the launcher then stops every rank and exits non-zero.
"""

import os
import sys
import time

import numpy as np

from tensorlite.environment import EnvironmentVariableError

__all__ = [
    "init_process_group", "is_initialized", "is_available", "launched_by_mpiexec",
    "launcher_rank", "launcher_world_size",
    "get_rank", "get_world_size", "get_local_world_size", "barrier", "all_reduce",
    "broadcast", "abort", "destroy_process_group", "Work",
]

INSTALL_HINT = "pip install '.[mpi]' from a tensorlite checkout  (mpi4py and MPICH)"
ABORT_GRACE_SECONDS = 0.2  # see abort()

# Environment variables that MPI launchers set in every process they start, as
# (rank variable, world-size variable) pairs: MPICH / Intel MPI (Hydra's PMI),
# Open MPI, PMIx launchers, MVAPICH2.
_LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMIX_RANK", None),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
)
# Processes of this job on this host (for dividing the host's cores among them).
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")

_OPS = ("sum", "avg", "max", "min")


class _Group:
    """The initialised world: the communicator and the mpi4py module it came from."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()


_group = None


# ----------------------------------------------------------------------------------------
# Finding out whether we run under MPI, without loading it


def launched_by_mpiexec(environ=None):
    """True when an MPI launcher (mpiexec, mpirun, srun with PMI) started this process.

    Reads environment variables only; mpi4py is not imported.
    """
    environ = os.environ if environ is None else environ
    return any(rank_var in environ for rank_var, _ in _LAUNCHER_VARIABLES)


def launcher_rank(environ=None):
    """This process's rank as the launcher announced it (0 when not launched by one).

    Lets a program keep quiet on ranks other than 0 before MPI is initialised, e.g.
    while parsing its command line.
    """
    environ = os.environ if environ is None else environ
    for rank_var, _ in _LAUNCHER_VARIABLES:
        if rank_var in environ:
            return _launcher_integer(environ, rank_var, minimum=0)
    return 0


def _launcher_integer(environ, name, minimum):
    """A launcher's variable as an int, or EnvironmentVariableError (one line from a command)."""
    value = environ[name]
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise EnvironmentVariableError(
            name, value, f"is not an integer >= {minimum} (it is set by MPI launchers; unset it "
            "when not running under mpiexec)")
    return number


def launcher_world_size(environ=None):
    """The world size the launcher announced (1 when not launched by one)."""
    environ = os.environ if environ is None else environ
    for _, size_var in _LAUNCHER_VARIABLES:
        if size_var and size_var in environ:
            return _launcher_integer(environ, size_var, minimum=1)
    return 1


def get_local_world_size(environ=None):
    """Processes of this job on this host: what the host's cores are shared among.

    Taken from the launcher's environment (MPICH's MPI_LOCALNRANKS, Open MPI's
    OMPI_COMM_WORLD_LOCAL_SIZE, ...); 1 when not launched by one.
    """
    environ = os.environ if environ is None else environ
    for name in _LOCAL_SIZE_VARIABLES:
        if name in environ:
            return _launcher_integer(environ, name, minimum=1)
    return launcher_world_size(environ)


def is_available():
    """True when mpi4py can be imported (an MPI library is installed)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


# ----------------------------------------------------------------------------------------
# The process group


def init_process_group(backend="mpi"):
    """Join the MPI world (``MPI_Init``); call once per process, before any collective.

    Only ``backend="mpi"`` exists. Without a launcher this is a world of one process.
    With more than one rank an uncaught exception on any rank aborts the whole job
    (see the module docstring). Calling it again is a no-op.
    """
    global _group
    if backend != "mpi":
        raise ValueError(f"init_process_group: unknown backend {backend!r}; tensorlite supports 'mpi' only")
    if _group is not None:
        return
    try:
        from mpi4py import MPI  # initialises MPI on import
    except ImportError as error:
        raise ImportError(f"tensorlite.distributed needs mpi4py and an MPI library: {INSTALL_HINT} "
                          f"({error})") from None
    _group = _Group(MPI)
    if _group.world_size > 1:
        _install_abort_on_uncaught_exception()


def is_initialized():
    """True after ``init_process_group()``."""
    return _group is not None


def destroy_process_group():
    """Forget the group (MPI itself is finalised by mpi4py when the process exits)."""
    global _group
    _group = None


def _require_group(name):
    if _group is None:
        raise RuntimeError(f"{name}: the process group is not initialised; "
                           "call tensorlite.distributed.init_process_group() first")
    return _group


def get_rank():
    """This process's index in the world, 0 .. world_size - 1 (0 when not initialised)."""
    return _group.rank if _group is not None else 0


def get_world_size():
    """Number of processes in the world (1 when not initialised)."""
    return _group.world_size if _group is not None else 1


def barrier():
    """Wait until every rank has reached this call."""
    _require_group("barrier").comm.Barrier()


# ----------------------------------------------------------------------------------------
# Collectives on NumPy arrays, in place


def _check_array(name, array):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(array).__name__} "
                        "(pass tensor.data for a Tensor)")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{name}: the array must be C-contiguous and writeable (it is changed in "
                         f"place); got shape {array.shape}, strides {array.strides}")


def all_reduce(array, op="sum", async_op=False):
    """Combine ``array`` element-wise over all ranks, in place; every rank gets the result.

    ``op``: "sum", "avg" (the sum divided by the world size), "max" or "min".
    Returns ``array``; with ``async_op=True`` returns at once a ``Work`` handle whose
    ``wait()`` finishes the reduction (``MPI_Iallreduce``), as in PyTorch. Whether the
    reduction advances before ``wait()`` is up to the MPI library (MPICH: only inside MPI
    calls, unless its progress thread is enabled).
    """
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, _OPS))}, got {op!r}")
    _check_array("all_reduce", array)
    group = _require_group("all_reduce")
    request = None
    if group.world_size > 1 and array.size > 0:
        MPI = group.MPI
        mpi_op = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        if async_op:
            request = group.comm.Iallreduce(MPI.IN_PLACE, array, op=mpi_op)
        else:
            group.comm.Allreduce(MPI.IN_PLACE, array, op=mpi_op)
    work = Work(request, array, group.world_size if op == "avg" else 1)
    if async_op:
        return work
    work.wait()
    return array


class Work:
    """A collective in flight (``all_reduce(..., async_op=True)``); ``wait()`` completes it."""

    def __init__(self, request, array, divide_by):
        self._request, self._array, self._divide_by = request, array, divide_by
        self._done = False

    def wait(self):
        """Block until the collective is complete; returns the array."""
        if not self._done:
            if self._request is not None:
                self._request.Wait()
            if self._divide_by > 1:
                if np.issubdtype(self._array.dtype, np.floating):
                    self._array /= self._array.dtype.type(self._divide_by)
                else:
                    self._array //= self._divide_by
            self._done = True
        return self._array

    def is_completed(self):
        return self._done


def broadcast(array, src=0):
    """Overwrite ``array`` on every rank with rank ``src``'s values, in place. Returns it."""
    _check_array("broadcast", array)
    group = _require_group("broadcast")
    if not 0 <= src < group.world_size:
        raise ValueError(f"broadcast: src must be a rank in [0, {group.world_size}), got {src}")
    if group.world_size > 1 and array.size > 0:
        group.comm.Bcast(array, root=src)
    return array


# ----------------------------------------------------------------------------------------
# Ending the job


def abort(message, code=1):
    """Print ``message`` as one line on stderr and end every rank of the job (``MPI_Abort``).

    Without an initialised group (or in a world of one) this is ``sys.exit(code)``.
    """
    rank = f"rank {_group.rank}: " if _group is not None and _group.world_size > 1 else ""
    print(f"{rank}{' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if _group is not None and _group.world_size > 1:
        # The launcher forwards each rank's output asynchronously, and MPI_Abort tears the job
        # down at once: give it a moment to pass the line on, or the reason could be lost.
        time.sleep(ABORT_GRACE_SECONDS)
        _group.comm.Abort(code)
    raise SystemExit(code)


def _install_abort_on_uncaught_exception():
    """An uncaught exception prints its traceback as usual, then aborts the job.

    Without this, a rank that dies leaves the others blocked in their next collective
    (what ``python -m mpi4py`` does for a script, done here for every entry point).
    """
    previous_hook = sys.excepthook

    def abort_hook(exc_type, exc, tb):
        previous_hook(exc_type, exc, tb)
        if issubclass(exc_type, KeyboardInterrupt):
            code = 130
        else:
            code = 1
        abort(f"uncaught {exc_type.__name__}; aborting all {get_world_size()} ranks", code)

    sys.excepthook = abort_hook
