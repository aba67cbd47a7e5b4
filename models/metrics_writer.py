"""The metrics file of a training run: one JSON object per line (``tensorlite-plot`` reads it)."""

import errno
import json
import os

__all__ = ["MetricsWriter"]


class MetricsWriter:
    """One JSON object per line, each written with one system call so a crashed run keeps its
    history.

    The metrics are a record, not the run: if the file cannot be written (a full disk), the
    writer warns once, cuts the file back to its last whole line and stops writing.
    """

    def __init__(self, path, append, warn):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path, self.warn = path, warn
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.fd = os.open(path, flags, 0o666)
        self.failed = False

    def write(self, **record):
        if self.failed:
            return
        line = (json.dumps(record) + "\n").encode("utf-8")
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            written = os.write(self.fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:
            self.failed = True
            try:
                os.ftruncate(self.fd, start)  # no half line at the end of the file
            except OSError:
                pass
            self.warn(f"cannot write metrics to {self.path}: {error.strerror or error}; "
                      f"training goes on without metrics")

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass
