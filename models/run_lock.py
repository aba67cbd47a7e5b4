"""One writer per output: an OS lock held for the life of a run.

Two runs writing into one directory interleave their metrics and overwrite each other's
checkpoints, so a run takes an exclusive ``fcntl.flock`` on a lock file before it writes
anything and keeps it until it ends. The kernel releases the lock when the process dies,
however it dies (kill -9 included), so a stale lock file never blocks the next run: only a
live holder does. The holder writes its pid into the file so that the refusal can name it.

The lock file is never deleted: removing it would let a third process lock a fresh file of
the same name while the second still holds the old one, and both would believe they own the
directory.

    with RunLock(os.path.join(out_dir, LOCK_NAME), out_dir):
        ...  # train, writing into out_dir

Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

import os

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through fcntl
    fcntl = None

__all__ = ["RunLock", "RunLockError", "LOCK_NAME"]

LOCK_NAME = "run.lock"


class RunLockError(RuntimeError):
    """Another live process holds the lock: the message names what it guards and the holder's pid."""


class RunLock:
    """An exclusive lock on ``lock_path`` guarding ``guarded`` (a directory named in errors).

    ``acquire`` never waits: if another process holds the lock it raises ``RunLockError``.
    Use as a context manager, or call ``acquire`` and ``release``.
    """

    def __init__(self, lock_path, guarded=None):
        self.lock_path = os.fspath(lock_path)
        self.guarded = os.fspath(guarded) if guarded is not None else self.lock_path
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        if self._fd is not None:
            return self
        directory = os.path.dirname(os.path.abspath(self.lock_path))
        os.makedirs(directory, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except (BlockingIOError, PermissionError):
                    raise RunLockError(f"{self.guarded} is in use by another run (pid "
                                       f"{_holder_pid(fd)}, lock {self.lock_path}); wait for it to "
                                       f"finish or choose another directory") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # a finished run leaves no pid behind to be mistaken for a holder
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _holder_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
