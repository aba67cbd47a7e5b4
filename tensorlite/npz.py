"""Reading ``.npz`` archives with every byte checked: the one reader behind `tl.load` and the
training-checkpoint loader (models/checkpoint.py).

`np.load` trusts a member's ``.npy`` header: when the header mis-states the array's size it
reads only as far as the header says, so the zip CRC (checked only when a member is read to
its end) is never compared, and a bit flipped in the header loads a shifted array without a
word. It also hangs on a FIFO and lets NumPy's header parser leak ``tokenize.TokenError`` and
the like. `read_npz` instead

* opens only regular files (a FIFO, a device or a directory is refused before any read),
* refuses an archive whose members, as the zip's central directory declares them, would not
  fit in the available memory, before allocating anything,
* reads every member to its end, so zipfile compares the CRC,
* parses each ``.npy`` header itself and requires header length + shape x itemsize to equal
  the member's size exactly, the dtype to be written the way NumPy writes it, in native byte
  order, and of a kind the engine holds (bool, integer, floating): object arrays are never
  unpickled; complex, string, unicode, void/structured and datetime arrays are refused,
* and turns every failure into one `NpzError` whose message is one line naming the member.
"""

import ast
import io
import math
import os
import re
import stat
import struct
import zipfile

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["read_npz", "NpzError", "NotAFileError", "NotAnArchiveError", "TooLargeError",
           "UnsupportedDtypeError", "available_memory", "format_bytes", "READABLE_KINDS"]

READABLE_KINDS = "biuf"  # bool, signed and unsigned integers, floating point
MAX_HEADER_SIZE = 10_000  # NumPy's own limit for a header it will parse
_HEADER_LENGTH_FORMATS = {(1, 0): "<H", (2, 0): "<I"}  # 3.0 only adds UTF-8 field names: structured
_CHUNK = 1 << 20
# Deflate cannot expand data more than 1032-fold; a member declaring more is damaged.
_MAX_DEFLATE_RATIO = 1032
# The form of every dtype.str of an unstructured dtype, which is what np.save writes as descr.
_DESCR = re.compile(r"[<>|](?:[biufcSUV]\d+|O|[mM]8(?:\[\d*[a-zA-Z\u03bc]+\])?)\Z")
_KIND_NAMES = {"O": "an object", "c": "a complex", "S": "a byte-string", "U": "a unicode string",
               "V": "a void (structured)", "M": "a datetime", "m": "a timedelta"}


class NpzError(ValueError):
    """A damaged archive or member; ``member`` names the member (None: the archive as a whole)
    and ``reason`` says what is wrong, both on one line."""

    def __init__(self, reason, member=None):
        self.reason = _one_line(reason)
        self.member = member
        super().__init__(f"member {member!r}: {self.reason}" if member is not None else self.reason)


class NotAFileError(NpzError):
    """The path names a FIFO, a device, a directory or a socket, not a regular file."""


class NotAnArchiveError(NpzError):
    """The file is not a zip archive at all: empty, something else, or (``single_array``) one
    ``.npy`` array, as `np.save` writes it."""

    def __init__(self, reason, single_array=False):
        self.single_array = single_array
        super().__init__(reason)


class TooLargeError(NpzError):
    """The members would need more memory than is available; ``needed`` and ``available`` in bytes."""

    def __init__(self, needed, available):
        self.needed, self.available = needed, available
        super().__init__(f"its members hold {format_bytes(needed)} of arrays, more than the "
                         f"{format_bytes(available)} of available memory")


class UnsupportedDtypeError(NpzError):
    """A well-formed member whose dtype the engine cannot hold; ``what`` describes the array,
    e.g. "a complex array (<c16)"."""

    def __init__(self, what, member):
        self.what = what
        super().__init__(f"holds {what}, which is not read (only bool, integer and floating arrays "
                         f"in native byte order are)", member)


def _describe_dtype(dtype):
    if dtype.kind in READABLE_KINDS:  # a readable kind, but not in this machine's byte order
        return f"a {dtype.str} array in non-native byte order"
    return f"{_KIND_NAMES.get(dtype.kind, 'an unknown kind of')} array ({dtype.str})"


def _one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(error):
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def available_memory():
    """Bytes of memory available to a new allocation (``MemAvailable`` in /proc/meminfo), or
    None where that is unknown (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(n):
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _file_kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular_file(path):
    """Open `path` for binary reading if it is a regular file; NotAFileError otherwise.

    The file is opened without blocking and checked with fstat on the open descriptor, so a
    FIFO is refused instead of waiting for a writer, and nothing can be swapped in between
    the check and the read. A missing or unreadable path raises the usual OSError.
    """
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _file_kind(mode)
            raise NotAFileError(f"is {kind}, not a regular file" if kind.startswith("a ") else kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_npz(source, memory=available_memory):
    """Every array of the ``.npz`` archive `source` (a path or a seekable binary file object),
    verified as the module docstring describes: {name without ".npy": writable array}, in the
    archive's order.

    `memory` returns the bytes available for the arrays (None: unknown, no limit). Raises
    NpzError or one of its subclasses, each with a one-line message; for a path that does not
    exist or cannot be opened, the OSError of opening it.
    """
    if hasattr(source, "read"):
        return _read_archive(source, memory)
    with open_regular_file(os.fspath(source)) as f:
        return _read_archive(f, memory)


def _read_archive(f, memory):
    try:
        start = f.tell()
        head = f.read(len(npy_format.MAGIC_PREFIX))
        size = f.seek(0, io.SEEK_END)
        f.seek(start)
    except Exception as error:
        raise NpzError(f"cannot be read ({_describe(error)})") from None
    if not head:
        raise NotAnArchiveError("the file is empty")
    if head == npy_format.MAGIC_PREFIX:
        raise NotAnArchiveError("a single .npy array, not an .npz archive", single_array=True)
    try:
        archive = zipfile.ZipFile(f)
    except Exception as error:
        if head.startswith(b"PK"):  # a zip archive, cut short or damaged
            raise NpzError(f"not a readable zip archive ({_describe(error)})") from None
        raise NotAnArchiveError(f"not a zip archive: {_describe(error)}") from None
    with archive:
        infos = archive.infolist()
        for info in infos:
            _check_declared_size(info, size)
        available = memory() if memory is not None else None
        needed = sum(info.file_size for info in infos)
        if available is not None and needed > available:
            raise TooLargeError(needed, available)
        arrays = {}
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in arrays:
                raise NpzError("appears twice in the archive", info.filename)
            arrays[key] = _read_member(archive, info)
        return arrays


def _check_declared_size(info, archive_size):
    """Refuse sizes in the central directory that no intact member can have, before anything
    is allocated for them."""
    if info.header_offset + info.compress_size > archive_size:
        raise NpzError(f"extends past the end of the file ({info.compress_size} bytes at offset "
                       f"{info.header_offset} of {archive_size}): the file is cut short", info.filename)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise NpzError(f"is stored uncompressed but declares {info.file_size} bytes unpacked and "
                       f"{info.compress_size} packed", info.filename)
    if (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024):
        raise NpzError(f"declares {info.file_size} bytes unpacked from {info.compress_size} "
                       f"compressed, more than deflate can produce", info.filename)


def _read_member(archive, info):
    name = info.filename
    # np.empty, not bytearray: no zero-filling of memory that is about to be overwritten.
    buffer = np.empty(info.file_size, dtype=np.uint8)
    view = memoryview(buffer)
    filled = 0
    try:
        with archive.open(info) as member:
            while filled < info.file_size:
                chunk = member.read(min(_CHUNK, info.file_size - filled))
                if not chunk:
                    break
                view[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
            # zipfile compares the CRC once a read reaches the member's end; the last chunk
            # normally does, and this read past the end makes sure of it.
            extra = member.read(1)
    except zipfile.BadZipFile as error:
        if str(error).startswith("Bad CRC-32"):
            raise NpzError("fails its CRC check: its bytes changed after they were written", name) from None
        raise NpzError(f"cannot be read ({_describe(error)})", name) from None
    except Exception as error:
        raise NpzError(f"cannot be read ({_describe(error)})", name) from None
    finally:
        view.release()
    if filled < info.file_size:
        raise NpzError(f"holds {filled} bytes, fewer than the {info.file_size} the archive "
                       f"declares: it is cut short", name)
    if extra:
        raise NpzError(f"holds more than the {info.file_size} bytes the archive declares", name)
    return _parse_npy(buffer, name)


def _parse_npy(buffer, name):
    """The array stored in `buffer` (a whole ``.npy`` file), a view into it; NpzError unless
    the header is well formed and describes exactly the bytes that follow it."""
    head = io.BytesIO(buffer[:len(npy_format.MAGIC_PREFIX) + 6 + MAX_HEADER_SIZE].tobytes())
    try:
        version = npy_format.read_magic(head)
    except Exception as error:
        raise NpzError(f"is not a .npy array ({_describe(error)})", name) from None
    length_format = _HEADER_LENGTH_FORMATS.get(version)
    if length_format is None:
        raise NpzError(f"has .npy format version {version[0]}.{version[1]}; only 1.0 and 2.0 "
                       f"are read", name)
    raw_length = head.read(struct.calcsize(length_format))
    if len(raw_length) < struct.calcsize(length_format):
        raise NpzError("is cut short inside its .npy header", name)
    (header_length,) = struct.unpack(length_format, raw_length)
    if header_length > MAX_HEADER_SIZE:
        raise NpzError(f"declares a .npy header of {header_length} bytes, more than the "
                       f"{MAX_HEADER_SIZE} NumPy writes", name)
    text = head.read(header_length)
    if len(text) < header_length:
        raise NpzError("is cut short inside its .npy header", name)
    data_offset = head.tell()
    shape, fortran_order, dtype = _parse_header(text.decode("latin-1"), name)

    count = math.prod(shape)
    data_bytes = count * dtype.itemsize
    if data_offset + data_bytes != buffer.size:
        raise NpzError(f"has a .npy header describing {data_bytes} bytes of data (shape {shape}, "
                       f"{dtype.str}) after {data_offset} bytes of header, but the member holds "
                       f"{buffer.size} bytes in all: the header is damaged", name)
    array = buffer[data_offset:].view(dtype)
    if fortran_order:
        array = array.reshape(shape[::-1]).transpose()
    else:
        array = array.reshape(shape)
    if not array.flags.aligned:  # only a header of unusual length: NumPy pads data to 64 bytes
        array = array.copy(order="K")
    return array


def _parse_header(header, name):
    """(shape, fortran_order, dtype) from the text of a .npy header, checked as NumPy writes it."""
    try:
        fields = ast.literal_eval(header)
    except Exception as error:  # SyntaxError, ValueError, MemoryError, RecursionError, ...
        raise NpzError(f"has a .npy header that does not parse ({_describe(error)})", name) from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise NpzError(f"has a .npy header that is not the dictionary NumPy writes: "
                       f"{_one_line(repr(fields), 120)}", name)
    shape, fortran_order, descr = fields["shape"], fields["fortran_order"], fields["descr"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise NpzError(f"has a .npy header with an invalid shape {_one_line(repr(shape), 80)}", name)
    if type(fortran_order) is not bool:
        raise NpzError(f"has a .npy header with an invalid fortran_order "
                       f"{_one_line(repr(fortran_order), 40)}", name)
    if not isinstance(descr, str):  # structured arrays are described by a list of fields
        raise UnsupportedDtypeError(f"a structured array ({_one_line(repr(descr), 80)})", name)
    if not _DESCR.match(descr):  # before NumPy sees it: it warns about some deprecated aliases
        raise NpzError(f"has a .npy header with dtype {_one_line(repr(descr), 40)}, which is not one "
                       f"NumPy writes: the header is damaged", name)
    try:
        dtype = npy_format.descr_to_dtype(descr)
    except Exception as error:
        raise NpzError(f"has a .npy header with an invalid dtype {descr!r} ({_describe(error)})",
                       name) from None
    if descr != dtype.str:
        # NumPy writes dtype.str ('<f4', '|b1'); anything else ('|B1', '=f4', '<d8') is a
        # header that was changed after it was written.
        raise NpzError(f"has a .npy header with dtype {descr!r}, which is not how NumPy writes "
                       f"{dtype} ({dtype.str!r}): the header is damaged", name)
    if dtype.kind not in READABLE_KINDS or not dtype.isnative:
        raise UnsupportedDtypeError(_describe_dtype(dtype), name)
    return shape, fortran_order, dtype
