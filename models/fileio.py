"""Writing a file atomically: readers see the old file or the new one, never half of one."""

import os
import tempfile

__all__ = ["atomic_write"]


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it over ``path``.

    The data is flushed and fsync'ed before the rename (``os.replace``, atomic on POSIX and
    Windows). If anything fails, including Ctrl-C, the temporary file is removed and ``path``
    is untouched. The file gets the permissions of a normally created file (0666 & ~umask).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
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
