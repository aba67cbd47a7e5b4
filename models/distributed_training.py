"""The pieces ``tensorlite-train`` needs to run as W processes under ``mpiexec -n W``.

Nothing here imports MPI unless the process was started by an MPI launcher; with one
process every function is a no-op or does the single-process thing, so the trainer can
call them unconditionally.

The rules they implement (nanoGPT's DDP rules, plus exact agreement with one process):

* ``--grad-accum G`` is the global number of micro-batches per optimizer step and must be
  divisible by W; rank r runs micro-batches ``r*G/W .. (r+1)*G/W - 1`` of every step.
* Every rank draws all G micro-batches of a step from the same data generator and keeps
  its own, so micro-batch j of step s holds the same tokens for every W, and the data
  generator's state is the same on every rank (rank 0's checkpoint resumes any W).
* Dropout draws from a generator seeded by (seed, step, micro-batch), so masks differ
  between micro-batches, hence between ranks, and do not depend on W or on resuming.
* Losses are summed over the ranks (one small allreduce per step), so every rank sees the
  same global loss and a NaN stops every rank at the same point.
* Evaluation batch k is computed by rank ``k % W``; the sums are reduced.
* Only rank 0 prints and writes; each rank gets ``cores // ranks-on-this-host`` threads.
* A setup error (bad flag, bad data) is agreed on by all ranks and reported once; an error
  during training calls MPI_Abort, so no rank waits forever for a dead partner.
* A request to stop (Ctrl-C or SIGTERM, which mpiexec passes on to every rank, or rank 0's
  stdout closing) travels with the losses in the step's allreduce, so every rank stops after
  the same step and rank 0 alone saves and reports (models/run_control.py).
"""

import contextlib
import dataclasses
import os

import numpy as np

import tensorlite as tl
from tensorlite import distributed as dist

__all__ = [
    "World", "init_world", "configure_threads", "local_micro_steps", "draw_micro_batches",
    "seed_dropout", "global_sum", "estimate_loss", "agree_on_setup", "report", "fail",
    "NullMetrics", "quiet_unless_main",
]

_DROPOUT_STREAM = 4  # next to train.py's data (1), eval (2) and sample (3) streams


@dataclasses.dataclass(frozen=True)
class World:
    """Who this process is among the processes of the run."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # processes of the run on this host

    @property
    def is_main(self):
        """Rank 0: the process that prints, writes metrics and writes checkpoints."""
        return self.rank == 0

    def describe(self, threads):
        if self.size == 1:
            return f"1 process x {threads} threads"
        return f"{self.size} processes (MPI) x {threads} threads, {self.local_size} on this host"


def init_world():
    """Join the MPI world when an MPI launcher started us; else a world of one (no MPI import)."""
    if not dist.launched_by_mpiexec():
        return World()
    dist.init_process_group()
    return World(dist.get_rank(), dist.get_world_size(), dist.get_local_world_size())


def configure_threads(world):
    """Give each process its share of this host's cores, under the one-pool policy
    (``tl.kernels.set_num_threads``: Numba's pool with the Numba set, BLAS with the NumPy set).
    Returns the thread count; the caller prints it.
    """
    if world.size == 1:
        return _current_threads()
    threads = max(1, (os.cpu_count() or 1) // world.local_size)
    if tl.kernels.active() == "numba":
        import numba

        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    tl.kernels.set_num_threads(threads)
    return threads


def _current_threads():
    if tl.kernels.active() == "numba":
        import numba

        return numba.config.NUMBA_NUM_THREADS
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------
# Splitting the work


def local_micro_steps(grad_accum, world):
    """The micro-batch indices j this rank runs in every step.

    Raises ValueError (a usage error) when ``grad_accum`` is not divisible by the world size.
    """
    if grad_accum % world.size != 0:
        multiple = (grad_accum // world.size + 1) * world.size
        raise ValueError(f"--grad-accum ({grad_accum}) is the global number of micro-batches per "
                         f"step and must be divisible by the number of processes ({world.size}), "
                         f"e.g. --grad-accum {multiple}")
    per_rank = grad_accum // world.size
    return range(world.rank * per_rank, (world.rank + 1) * per_rank)


def draw_micro_batches(dataset, batch_size, block_size, data_rng, grad_accum, world):
    """Draw all ``grad_accum`` micro-batches of a step; return this rank's as [(j, x, y)].

    Drawing the others too keeps ``data_rng`` in step on every rank and makes micro-batch j
    the same tokens for every world size (cutting out a batch is cheap next to a forward).
    """
    mine = local_micro_steps(grad_accum, world)
    batches = []
    for j in range(grad_accum):
        x, y = dataset.get_batch("train", batch_size, block_size, data_rng)
        if j in mine:
            batches.append((j, x, y))
    return batches


def seed_dropout(seed, iteration, micro_step):
    """Seed the library generator (dropout) for micro-batch ``micro_step`` of ``iteration``."""
    tl.manual_seed([seed, _DROPOUT_STREAM, iteration, micro_step])


# ----------------------------------------------------------------------------------------
# Reductions


def global_sum(values, world):
    """Sum a list of floats over the ranks; every rank gets the result (a NaN anywhere
    becomes a NaN everywhere, so every rank stops together)."""
    array = np.array(values, dtype=np.float64)
    if world.size > 1:
        dist.all_reduce(array, op="sum")
    return array.tolist()


@tl.no_grad()
def estimate_loss(model, dataset, batch_size, block_size, eval_iters, make_rng, world):
    """Mean loss over ``eval_iters`` batches of each split, split across the ranks.

    ``make_rng(split_index)`` returns the evaluation generator of a split; every rank draws
    all batches from it (so they are the batches one process would see) and evaluates
    batch k only if ``k % world.size == world.rank``.
    """
    model.eval()
    sums = []
    for split_index, split in enumerate(("train", "val")):
        rng = make_rng(split_index)
        total = 0.0
        for k in range(eval_iters):
            x, y = dataset.get_batch(split, batch_size, block_size, rng)
            if k % world.size == world.rank:
                _, loss = model(x, y)
                total += loss.item()
        sums.append(total)
    model.train()
    train_sum, val_sum = global_sum(sums, world)
    return {"train": train_sum / eval_iters, "val": val_sum / eval_iters}


# ----------------------------------------------------------------------------------------
# Errors and output


def agree_on_setup(world, error=None, code=0):
    """Collective check after setup: did any rank fail? Returns (code, message) to report.

    Every rank calls it with its own outcome (``error`` None when it is fine). The whole
    run then exits with the code of the lowest failing rank, and only one process prints:
    that rank if it failed alone, rank 0 when all failed alike (a bad flag). Everyone is at
    the same point, so no MPI_Abort is needed. Returns (0, None) when all are fine.
    """
    if world.size == 1:
        return (code, str(error)) if error is not None else (0, None)
    not_failed = world.size * 256
    key = np.array([world.rank * 256 + code if error is not None else not_failed], dtype=np.int64)
    dist.all_reduce(key, op="min")
    if key[0] == not_failed:
        return 0, None
    first_rank, agreed_code = divmod(int(key[0]), 256)
    everyone = np.array([1 if error is not None else 0], dtype=np.int64)
    dist.all_reduce(everyone, op="sum")
    reporter = 0 if everyone[0] == world.size else first_rank
    message = str(error) if world.rank == reporter else None
    if message is not None and reporter != 0:
        message = f"rank {world.rank}: {message}"
    return agreed_code, message


def report(world, print_error, message, code):
    """An error every rank met at the same point (a NaN loss): only rank 0 prints it."""
    if world.is_main:
        return print_error(message, code)
    return code


def fail(world, print_error, message, code):
    """An error that may be this rank's alone (a failed write, a Ctrl-C that cannot wait for the
    end of a step): print it; under MPI also end every rank, since the others would wait for
    this one forever."""
    if world.size > 1:
        dist.abort(message, code)  # prints "rank r: message" and never returns
    return print_error(message, code)


class NullMetrics:
    """The metrics writer of ranks other than 0: they compute the same numbers, rank 0 writes."""

    def write(self, **record):
        pass

    def close(self):
        pass


@contextlib.contextmanager
def quiet_unless_main(world=None, stderr=False):
    """On ranks other than 0 send stdout, and with ``stderr=True`` also stderr, to /dev/null.

    With ``world`` None the rank comes from the launcher's environment, so this works
    before MPI is initialised (e.g. around argument parsing, whose errors go to stderr).
    """
    rank = dist.launcher_rank() if world is None else world.rank
    if rank == 0:
        yield
        return
    with contextlib.ExitStack() as stack:
        devnull = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(contextlib.redirect_stdout(devnull))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(devnull))
        yield
