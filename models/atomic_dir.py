"""Replacing a whole directory so that readers find the old one or the new one, never a mix.

Writing an export file by file into its directory leaves, when the writer dies half-way, new
weights beside the previous export's tokenizer: a directory that loads without complaint and
is wrong. ``replace_directory`` instead

1. builds the new contents in a temporary directory beside the target (same parent, so same
   file system), ``.NAME.tmp-<random>``, and fsyncs every file and directory in it;
2. puts it in place in one step: a rename when the target does not exist, else Linux's
   ``renameat2(..., RENAME_EXCHANGE)``, which swaps the two names atomically; where that is not
   available (another OS, a file system without it), two renames: ``NAME -> NAME.old-<random>``,
   then the temporary directory -> ``NAME``;
3. removes the old contents (now under the temporary or ``.old`` name) and fsyncs the parent.

A process killed anywhere in this leaves the target whole (old or new) except between the two
fallback renames, where it is missing and ``NAME.old-*`` holds the old one. The next
``replace_directory`` on the same target first recovers: it renames ``NAME.old-*`` back when the
target is missing, and removes every other leftover. An exclusive lock on ``NAME.lock`` (beside
the target, since the directory itself is swapped) keeps two writers from interleaving.

    notes = replace_directory("hf-out", lambda tmp: write_files_into(tmp), overwrite=True)
"""

import ctypes
import errno
import os
import platform
import re
import secrets
import shutil
import stat
import sys

from tensorlite.serialization import fsync_directory

from .run_lock import RunLock

__all__ = ["replace_directory", "recover", "TargetExistsError", "exchange_supported"]

AT_FDCWD = -100
RENAME_EXCHANGE = 2
# renameat2's system call number where libc has no wrapper (glibc < 2.28).
SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# errno values meaning "this kernel or file system cannot exchange": fall back to two renames.
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.EPERM, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
                errno.EOPNOTSUPP}


class TargetExistsError(FileExistsError):
    """The target holds something that may not be replaced: a file, or contents without overwrite
    (then ``replaceable`` is True)."""

    def __init__(self, message, replaceable=False):
        super().__init__(message)
        self.replaceable = replaceable


def _load_renameat2(libc_wrapper=True):
    """A callable renameat2(olddirfd, old, newdirfd, new, flags) -> int (-1 and errno on failure),
    or None where the system has none. Without ``libc_wrapper`` (or where libc lacks it, as
    glibc before 2.28 does) the raw system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "renameat2", None) if libc_wrapper else None
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    number = SYS_RENAMEAT2.get(platform.machine().lower())
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long

    def via_syscall(olddirfd, old, newdirfd, new, flags):
        return syscall(ctypes.c_long(number), ctypes.c_long(olddirfd), ctypes.c_char_p(old),
                       ctypes.c_long(newdirfd), ctypes.c_char_p(new), ctypes.c_ulong(flags))

    return via_syscall


_renameat2 = _load_renameat2()


def exchange_supported():
    """Whether this system has renameat2 at all (a file system may still refuse RENAME_EXCHANGE)."""
    return _renameat2 is not None


def _exchange(a, b):
    """Swap the names ``a`` and ``b`` atomically. False where the system cannot; OSError otherwise."""
    if _renameat2 is None:
        return False
    if _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), a, None, b)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(top):
    """fsync every regular file under ``top``, then every directory, deepest first."""
    directories = []
    for root, dirs, files in os.walk(top):
        directories.append(root)
        for name in files:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                _fsync_file(path)
    for root in reversed(directories):
        fsync_directory(root)


def _paths(target):
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    if not name:
        raise TargetExistsError(f"{target}: cannot replace a file system's root")
    return target, parent, name


def _leftover_patterns(name):
    escaped = re.escape(name)
    return re.compile(rf"^\.{escaped}\.tmp-[0-9a-f]{{12}}$"), re.compile(rf"^{escaped}\.old-[0-9a-f]{{12}}$")


def recover(target):
    """Undo what an interrupted ``replace_directory`` left beside ``target``; return a list of
    lines saying what was done. Call it with the target's lock held (``replace_directory`` does)."""
    target, parent, name = _paths(target)
    temporary, old = _leftover_patterns(name)
    try:
        entries = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    olds = [os.path.join(parent, e) for e in entries if old.match(e)]
    temps = [os.path.join(parent, e) for e in entries if temporary.match(e)]
    notes = []
    if olds and not os.path.lexists(target):
        # Killed between the two fallback renames: the old directory is whole, put it back.
        restored = olds.pop(0)
        os.rename(restored, target)
        fsync_directory(parent)
        notes.append(f"restored {target} from {os.path.basename(restored)}, left by an interrupted export")
    for path in olds + temps:
        shutil.rmtree(path)
    if olds or temps:
        fsync_directory(parent)
        notes.append(f"removed {len(olds) + len(temps)} leftover(s) of an interrupted export beside {target}")
    return notes


def _new_name(parent, pattern):
    return os.path.join(parent, pattern.format(secrets.token_hex(6)))


def replace_directory(target, fill, overwrite=False):
    """Make directory ``target`` hold exactly what ``fill(path)`` writes into an empty directory,
    atomically (see the module docstring); return the lines of ``recover``'s notes.

    Without ``overwrite`` an existing non-empty target raises ``TargetExistsError``; a target that
    is not a directory always does. Another live writer on the same target raises
    ``run_lock.RunLockError``. If ``fill`` raises, the target is untouched and the partial
    contents are removed.
    """
    target, parent, name = _paths(target)
    os.makedirs(parent, exist_ok=True)
    with RunLock(target + ".lock", target):
        notes = recover(target)
        exists = os.path.lexists(target)
        if exists and (os.path.islink(target) or not os.path.isdir(target)):
            raise TargetExistsError(f"{target} exists and is not a directory")
        if exists and not overwrite and os.listdir(target):
            raise TargetExistsError(f"{target} already exists and is not empty", replaceable=True)
        temporary = _new_name(parent, f".{name}.tmp-{{}}")
        os.mkdir(temporary)
        try:
            if exists:  # keep the directory's permissions
                os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
            fill(temporary)
            _fsync_tree(temporary)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        if not exists:
            os.rename(temporary, target)
            fsync_directory(parent)
            return notes
        if _exchange(temporary, target):
            replaced = temporary  # the temporary name now holds the old contents
            fsync_directory(parent)
        else:
            replaced = _new_name(parent, f"{name}.old-{{}}")
            os.rename(target, replaced)
            os.rename(temporary, target)
            fsync_directory(parent)
        # The new contents are in place and durable; what is left is the old one's removal, which
        # the next run finishes (recover) if this process dies now or cannot remove everything.
        shutil.rmtree(replaced, ignore_errors=True)
        fsync_directory(parent)
        return notes
