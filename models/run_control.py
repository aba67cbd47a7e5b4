"""How ``tensorlite-train`` starts and ends: one run per --out-dir, and an early end (Ctrl-C,
SIGTERM, a closed stdout) that still leaves a checkpoint to continue from.

One run per out dir. Two runs writing into one directory interleave their metrics and
overwrite each other's checkpoints, so rank 0 holds ``<out_dir>/run.lock`` (models/run_lock.py,
released by the kernel however the process dies) from before it reads or writes anything in
the directory until the run ends. A directory that already exists is locked before the run
is set up, so the checkpoint a --resume reads and the files the previous-run check looks at
cannot change underneath it; a directory that does not exist yet is not created just to be
locked (a run refused for a bad flag leaves nothing behind): it is locked when the run
creates it, and checked again then, in case another run filled it in the meantime.

Ending early. Killing a run in the middle of an optimizer step would lose the work since
the last checkpoint, so during training a stop request only sets a flag; the run finishes
the step, saves ``ckpt.npz`` and exits with one line naming the iteration, the checkpoint and
the command that continues it. The requests and their exit codes (128 + the signal number,
what a shell reports for a process killed by that signal):

* SIGINT (Ctrl-C): 130.
* SIGTERM (kill, systemd, Slurm, container runtimes): 143.
* A closed stdout (``tensorlite-train | head -n 3``): 141, as for SIGPIPE. stdout is sent to
  /dev/null from then on, as the Python documentation recommends, so neither the remaining log
  lines nor the flush at interpreter exit raise ``BrokenPipeError``.

A second signal, or one that comes outside the training loop (while the data is read or
the model built, while a sample is generated), interrupts at once as ``KeyboardInterrupt``
does: nothing more is saved and the line names the checkpoint the run already has.

Under ``mpiexec`` every rank gets the signal. The requests travel with the loss in each
step's allreduce, so every rank stops after the same step, rank 0 saves and prints, and no
rank is left waiting in a collective. Ranks other than 0 never act on a first signal alone:
during setup rank 0 ends the job (``MPI_Abort``, one line); a signal that reached only another
rank stops the run at the first step.
"""

import dataclasses
import os
import shlex
import signal
import sys

from .run_lock import LOCK_NAME, RunLock, RunLockError

__all__ = ["Stop", "INTERRUPT", "TERMINATE", "CLOSED_STDOUT", "SignalInterrupt", "RunStopped", "RunControl",
           "stop_of", "silence", "say", "Console", "OutDirLock", "stop_message", "resume_command"]


@dataclasses.dataclass(frozen=True)
class Stop:
    """Why a run ended early: the word of its message, what caused it, the exit code."""

    word: str
    cause: str
    code: int


INTERRUPT = Stop("interrupted", "Ctrl-C, SIGINT", 128 + signal.SIGINT)
TERMINATE = Stop("terminated", "SIGTERM", 128 + signal.SIGTERM)
CLOSED_STDOUT = Stop("stopped", "stdout was closed", 128 + getattr(signal, "SIGPIPE", 13))
# When ranks were asked for different things, the first of these wins: a SIGTERM means the
# machine is going away, and the scheduler reads the exit code.
STOPS = (TERMINATE, INTERRUPT, CLOSED_STDOUT)
_SIGNAL_STOPS = {signal.SIGINT: INTERRUPT, signal.SIGTERM: TERMINATE}


class SignalInterrupt(KeyboardInterrupt):
    """A signal that interrupts at once (outside training, or a second one): a
    ``KeyboardInterrupt`` that knows which stop it is."""

    def __init__(self, stop):
        super().__init__(stop.cause)
        self.stop = stop


class RunStopped(Exception):
    """The run stopped cleanly at a step boundary on request; its checkpoint is saved."""

    def __init__(self, stop):
        super().__init__(stop.cause)
        self.stop = stop


def stop_of(interrupt):
    """The Stop of a KeyboardInterrupt (a plain one is Ctrl-C)."""
    return getattr(interrupt, "stop", INTERRUPT)


class RunControl:
    """SIGINT and SIGTERM handlers for the life of a run, and the stop requests they make.

    ``with RunControl(world):`` installs the handlers and restores the previous ones on exit.
    Inside ``deferred()`` (the training loop) a first signal is recorded in ``requested``
    instead of interrupting; ``requests()`` and ``agreed()`` turn the requests of all ranks
    into one decision (see the module docstring).
    """

    def __init__(self, world=None):
        # Ranks other than 0 leave an immediate interruption to rank 0 (see above).
        self._always_defer = world is not None and world.size > 1 and not world.is_main
        self._deferring = False
        self._signalled = False
        self._previous = {}
        self.requested = None

    def __enter__(self):
        for signum in _SIGNAL_STOPS:
            try:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # started ignoring it (nohup, a background job): keep ignoring it
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: signals keep their handlers
                break
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def _on_signal(self, signum, frame):
        stop = _SIGNAL_STOPS[signum]
        if not self._signalled and (self._deferring or self._always_defer):
            self._signalled = True
            self.requested = stop  # (over a closed stdout: the signal says more)
            return
        raise SignalInterrupt(stop)

    def deferred(self):
        """Context manager: signals become stop requests (the training loop)."""
        return _Deferred(self)

    def stdout_closed(self):
        """The reader of stdout went away: stop at the next step (unless a signal asked first)."""
        silence(sys, "stdout")
        if self.requested is None:
            self.requested = CLOSED_STDOUT

    def requests(self):
        """This rank's request as floats, one per entry of STOPS, to be summed over the ranks."""
        return [1.0 if stop == self.requested else 0.0 for stop in STOPS]

    @staticmethod
    def agreed(summed):
        """The stop every rank takes, from the summed ``requests()``; None to go on."""
        for stop, count in zip(STOPS, summed):
            if count > 0:
                return stop
        return None


class _Deferred:
    def __init__(self, control):
        self.control = control

    def __enter__(self):
        self.control._deferring = True

    def __exit__(self, *exc):
        self.control._deferring = False
        return False


def silence(module, name):
    """Send ``module.<name>`` (sys.stdout or sys.stderr) to /dev/null from now on: keep its file
    descriptor, pointed at /dev/null, so what is still buffered is flushed there at exit."""
    stream = getattr(module, name)
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a file descriptor
        setattr(module, name, open(os.devnull, "w"))
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def say(line):
    """Print a line on stderr; if stderr is a closed pipe too, drop it (there is nobody to tell)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except BrokenPipeError:
        silence(sys, "stderr")


class Console:
    """stdout for log lines; a single self-overwriting progress line when stdout is a terminal.

    A closed stdout calls ``on_closed`` once and ends the output (the run goes on to its next
    step boundary, where it stops).
    """

    def __init__(self, show_progress, on_closed=None):
        self.show_progress = show_progress and sys.stdout.isatty()
        self.progress_shown = False
        self.on_closed = on_closed
        self.closed = False

    def log(self, line):
        self.clear_progress()
        self._write(line + "\n")

    def progress(self, line):
        if self.show_progress:
            self.progress_shown = self._write("\r" + line + "\x1b[K")

    def clear_progress(self):
        if self.progress_shown:
            self._write("\r\x1b[K")
            self.progress_shown = False

    def _write(self, text):
        if self.closed:
            return False
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
            return True
        except BrokenPipeError:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed()
            else:
                silence(sys, "stdout")
            return False


class OutDirLock:
    """The lock of a run's out dir, held by rank 0 only (the rank that writes).

    ``acquire_if_exists()`` before the run is set up, ``acquire()`` before its first write,
    ``release()`` at the end. The acquiring methods return None, or the one-line reason the run
    cannot have the directory (another run holds it, it cannot be written). ``acquired_late``
    is True when the lock was only taken by ``acquire()``: the directory did not exist at setup,
    so the caller checks its contents again.
    """

    def __init__(self, out_dir, world):
        self.out_dir = out_dir
        self._lock = RunLock(os.path.join(out_dir, LOCK_NAME), out_dir) if world.is_main else None
        self.acquired_late = False

    def acquire_if_exists(self):
        if self._lock is not None and os.path.isdir(self.out_dir):
            return self._acquire()
        return None

    def acquire(self):
        if self._lock is None or self._lock.held:
            return None
        self.acquired_late = True
        return self._acquire()

    def _acquire(self):
        try:
            self._lock.acquire()
        except RunLockError as error:
            return str(error)
        except OSError as error:
            return f"cannot write to {error.filename or self.out_dir}: {error.strerror or error}"
        return None

    def release(self):
        if self._lock is not None:
            self._lock.release()


def stop_message(stop, iteration, ckpt_path, saved_iteration, resume):
    """The line of a run that stopped on request at ``iteration``."""
    where = f"{stop.word} ({stop.cause}) at iteration {iteration}"
    if saved_iteration is None:
        return f"{where}; no checkpoint was written"
    return f"{where}; the checkpoint {ckpt_path} holds it; continue with: {resume}"


def resume_command(prog, out_dir, explicit):
    """The command that continues a run: --resume in its out dir, with the per-invocation
    settings that are not saved in the checkpoint (--metrics, --kernels) when they were given."""
    words = [prog, "--resume", "--out-dir", out_dir]
    for key in ("metrics", "kernels"):
        if explicit.get(key) is not None:
            words += ["--" + key, explicit[key]]
    return " ".join(shlex.quote(str(word)) for word in words)
