"""Text corpora as token arrays, and random training batches drawn from them.

The pipeline is the one nanoGPT uses for its character-level Shakespeare run:

    text file  ->  tokenizer.encode  ->  one long array of token ids
               ->  first 90% for training, last 10% for validation
               ->  batches of random windows: x = ids[i : i+T], y = ids[i+1 : i+T+1]

so the model learns to predict every next token of every window at once.

Without a data file the corpus is the text of the standard library's
``pydoc_data.topics`` module (the help pages behind ``help("if")`` etc., about
460 000 characters of English prose and Python code). It ships with every Python
installation, so the trainer runs with no download and no data file.

Every problem with the input is reported as a ``DataError`` whose message is one
line a user can act on; the command-line tools print it and exit with code 2.
"""

import os
import stat

import numpy as np

from .gpt_config import available_memory, format_bytes

__all__ = [
    "DataError",
    "default_corpus_text",
    "read_text_file",
    "load_text",
    "encode_corpus",
    "TokenDataset",
]


class DataError(ValueError):
    """The training text cannot be used (missing, not a regular file, too big, empty, binary or
    too short)."""


# Memory used per byte of a text file while it is read, decoded and tokenized: the bytes, the
# str (up to 4 bytes a character), the char tokenizer's UTF-32 codes and int64 ids, and the
# stored token array. A file whose size times this exceeds the available memory is refused.
MEMORY_PER_TEXT_BYTE = 32


DEFAULT_CORPUS_NAME = "pydoc_data.topics (Python's built-in help text)"


def default_corpus_text():
    """The text of ``pydoc_data.topics``: its ``topics`` values joined in sorted key order."""
    from pydoc_data import topics

    return "\n".join(topics.topics[key] for key in sorted(topics.topics))


def read_text_file(path, max_bytes=None):
    """Read a UTF-8 text file, raising ``DataError`` for anything that is not usable text.

    Only regular files are read: a FIFO would block until some writer appears and a device
    such as /dev/zero never ends. ``max_bytes`` (default: the available memory divided by
    ``MEMORY_PER_TEXT_BYTE``) bounds the size, checked before reading.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"data path is a directory, not a text file: {path}")
    if max_bytes is None:
        available = available_memory()
        max_bytes = None if available is None else available // MEMORY_PER_TEXT_BYTE
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the file type is checked next.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise DataError(f"cannot read data file {path}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"data path is not a regular file (a FIFO, device or socket cannot be read "
                            f"as a corpus): {path}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise DataError(f"data file is {format_bytes(info.st_size)}, more than the {format_bytes(max_bytes)} "
                            f"that fit in the available memory once tokenized: {path}")
        with os.fdopen(fd, "rb") as f:
            fd = None  # now owned (and closed) by f
            # Read at most one byte beyond the size limit: a file growing as we read stays bounded.
            raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as error:
        raise DataError(f"cannot read data file {path}: {error.strerror or error}") from None
    finally:
        if fd is not None:
            os.close(fd)
    if max_bytes is not None and len(raw) > max_bytes:
        raise DataError(f"data file grew beyond {format_bytes(max_bytes)} while being read: {path}")
    if len(raw) == 0:
        raise DataError(f"data file is empty: {path}")
    # A NUL byte never occurs in text; it is the quickest sign of a binary file
    # (and is valid UTF-8, so the decode below would not catch it).
    if b"\x00" in raw:
        raise DataError(f"data file looks binary (contains NUL bytes), expected UTF-8 text: {path}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"data file is not valid UTF-8 text (bad byte at offset {error.start}): {path}"
        ) from None
    if not text.strip():
        raise DataError(f"data file contains only whitespace: {path}")
    return text


def load_text(path=None):
    """Return ``(text, name)`` for a data file, or for the built-in corpus when ``path`` is None."""
    if path is None:
        return default_corpus_text(), DEFAULT_CORPUS_NAME
    return read_text_file(path), os.fspath(path)


def encode_corpus(text, tokenizer):
    """Encode the whole corpus into the smallest integer dtype that holds every token id.

    uint16 halves the memory of a large corpus (nanoGPT stores its .bin files the same
    way); batches are widened to int64 when they are cut out.
    """
    # encode_array, where a tokenizer has it, skips building a Python list of ids.
    ids = tokenizer.encode_array(text) if hasattr(tokenizer, "encode_array") else tokenizer.encode(text)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    return np.asarray(ids, dtype=dtype)


class TokenDataset:
    """A token array split into a training part and a validation part.

    ``get_batch`` draws ``batch_size`` windows at random start positions from one
    split; all randomness comes from the ``np.random.Generator`` passed in, so a run
    is reproducible from its seed and can be resumed exactly from the generator's state.
    """

    def __init__(self, tokens, val_fraction=0.1, name="corpus"):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise DataError(f"expected a 1-D token array, got shape {tokens.shape}")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.name = name
        self.tokens = tokens
        n_train = int(len(tokens) * (1.0 - val_fraction))
        self.splits = {"train": tokens[:n_train], "val": tokens[n_train:]}

    @property
    def train(self):
        return self.splits["train"]

    @property
    def val(self):
        return self.splits["val"]

    def check_block_size(self, block_size):
        """Each split needs at least one window of ``block_size + 1`` tokens (inputs plus shifted targets)."""
        for split, data in self.splits.items():
            if len(data) < block_size + 1:
                raise DataError(
                    f"{split} split of {self.name} has {len(data)} tokens "
                    f"({len(self.tokens)} in the whole corpus), fewer than block_size + 1 = "
                    f"{block_size + 1}; use a longer text or a smaller --block-size"
                )

    def get_batch(self, split, batch_size, block_size, rng):
        """Random windows from one split: ``(x, y)``, both int64 of shape (batch_size, block_size).

        ``y[b, t]`` is the token that follows ``x[b, t]`` in the corpus.
        """
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        data = self.splits[split]
        if len(data) < block_size + 1:
            self.check_block_size(block_size)
        starts = rng.integers(0, len(data) - block_size, size=batch_size)  # (B,)
        offsets = starts[:, None] + np.arange(block_size)  # (B, T)
        x = data[offsets].astype(np.int64)
        y = data[offsets + 1].astype(np.int64)
        return x, y
