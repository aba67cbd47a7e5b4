"""How ``tensorlite-train`` starts: one run per --out-dir.

Two runs writing into one directory interleave their metrics and overwrite each other's
checkpoints, so rank 0 holds ``<out_dir>/run.lock`` (models/run_lock.py, released by the kernel
however the process dies) from before it reads or writes anything in the directory until the
run ends. A directory that already exists is locked before the run is set up, so the
checkpoint a --resume reads and the files the previous-run check looks at cannot change
underneath it; a directory that does not exist yet is not created just to be locked (a run
refused for a bad flag leaves nothing behind): it is locked when the run creates it, and
checked again then, in case another run filled it in the meantime.
"""

import os

from models.run_lock import LOCK_NAME, RunLock, RunLockError

__all__ = ["OutDirLock"]


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
