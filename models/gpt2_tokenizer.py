"""GPT-2's own byte-level BPE tokenizer, loaded from ``vocab.json`` + ``merges.txt``.

This is the tokenizer of OpenAI's ``encoder.py``, step by step:

1. pre-split the text with GPT-2's pattern (letters, numbers, other symbols, each with an
   optional leading space; runs of whitespace), which needs ``\\p{L}`` / ``\\p{N}`` classes
   from the ``regex`` package (optional extra ``.[hf]`` (from a tensorlite checkout));
2. turn each chunk's UTF-8 bytes into printable characters with ``bytes_to_unicode`` (so the
   vocabulary is a JSON file of ordinary strings; a space becomes "Ġ");
3. merge neighbouring symbols again and again, always the pair with the lowest rank (the line
   number in merges.txt), until no listed pair is left;
4. look each resulting symbol up in vocab.json.

Decoding joins the symbols and maps the characters back to bytes. ``<|endoftext|>`` (when the
vocabulary has it) is ``eot_token``; it is never produced by encoding text, only added by code
that wants an end marker (e.g. models/sft.py).

It has the interface of models/tokenizer.py's tokenizers: encode, encode_array, decode,
vocab_size, to_dict/from_dict and save/load, so a checkpoint can hold it.
"""

import json
import os
from functools import lru_cache

import numpy as np

from .jsonio import describe_value, load_json_text, lone_surrogate
from .tokenizer_base import JSONTokenizer
from tensorlite.serialization import atomic_write

__all__ = ["GPT2Tokenizer", "bytes_to_unicode", "GPT2_PATTERN", "END_OF_TEXT"]

# GPT-2's pre-tokenizer pattern, exactly as in OpenAI's encoder.py.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT = "<|endoftext|>"


@lru_cache()
def bytes_to_unicode():
    """Map every byte 0..255 to a printable unicode character (OpenAI's encoder.py).

    The printable Latin-1 bytes map to themselves; the other 68 (control characters, space,
    ...) map to 256, 257, ... in byte order, so no symbol in vocab.json is whitespace.
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def check_vocab(vocab, source="the vocabulary"):
    """Raise ValueError, naming ``source`` and the first bad entry, unless ``vocab`` (symbol -> id)
    numbers its n symbols 0..n-1, each id once, and every symbol is text.

    A gap or a repeated id would make ``vocab_size`` (largest id + 1) disagree with the model's
    embedding, and ids that decode to nothing or to two symbols; a lone surrogate cannot be
    written out as UTF-8, so decoding to it fails only when sampling.
    """
    n = len(vocab)
    ids = list(vocab.values())
    if (all(type(i) is int for i in ids) and sorted(ids) == list(range(n))
            and all(isinstance(s, str) and s for s in vocab) and lone_surrogate("".join(vocab)) < 0):
        return  # the usual case, checked at C speed; the loop below finds the first bad entry
    holder = {}  # id -> its symbol
    for symbol, i in vocab.items():
        where = f"{source}: entry {describe_value(symbol)}"
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"{where}: a symbol must be a non-empty string")
        at = lone_surrogate(symbol)
        if at >= 0:
            raise ValueError(f"{where}: the symbol holds a lone surrogate U+{ord(symbol[at]):04X}, which is not text")
        if type(i) is not int:
            raise ValueError(f"{where}: id {describe_value(i)} is not an integer")
        if i in holder:
            raise ValueError(f"{where}: id {i} is also the id of {describe_value(holder[i])}")
        if not 0 <= i < n:
            raise ValueError(f"{where}: id {describe_value(i)} is outside 0..{n - 1} (the ids of {n} symbols "
                             f"must be 0..{n - 1}, none missing)")
        holder[i] = symbol


def check_merges(merges, vocab, vocab_source="the vocabulary", merge_source=None):
    """Raise ValueError naming the first merge (a, b) whose a, b or a + b is not a symbol of
    ``vocab``: such a merge produces a symbol that cannot be looked up, or can never apply.
    ``merge_source(rank)`` names a merge in the message (default: "merge <rank>")."""
    if all(a in vocab and b in vocab and a + b in vocab for a, b in merges):
        return
    for rank, (a, b) in enumerate(merges):
        for role, part in (("the symbol", a), ("the symbol", b), ("its result", a + b)):
            if part not in vocab:
                where = merge_source(rank) if merge_source is not None else f"merge {rank}"
                raise ValueError(f"{where}: merge {describe_value(a + ' ' + b)} names {role} "
                                 f"{describe_value(part)}, which is not in {vocab_source}")


def _read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None


def _regex():
    try:
        import regex
    except ImportError:
        raise ValueError("GPT-2's tokenizer needs the regex package: pip install '.[hf]' from a tensorlite checkout") from None
    return regex


class GPT2Tokenizer(JSONTokenizer):
    """GPT-2's byte-level BPE from a vocabulary (symbol -> id) and a ranked list of merges.

        tok = GPT2Tokenizer.from_directory("gpt2-dir")     # vocab.json + merges.txt
        ids = tok.encode("Hello world")
        tok.decode(ids) == "Hello world"
    """

    def __init__(self, vocab, merges, vocab_source="the vocabulary", merge_source=None):
        """``vocab``: symbol -> id; ``merges``: ranked (a, b) pairs. Both are checked for meaning
        (see ``check_vocab`` and ``check_merges``); the sources name them in error messages."""
        self.encoder = dict(vocab)                             # symbol -> id
        check_vocab(self.encoder, vocab_source)
        self.decoder = {i: s for s, i in self.encoder.items()}  # id -> symbol
        self.merges = [tuple(pair) for pair in merges]
        check_merges(self.merges, self.encoder, vocab_source, merge_source)
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._split_re = _regex().compile(GPT2_PATTERN)
        self.eot_token = self.encoder.get(END_OF_TEXT)
        self._cache = {}

    @property
    def vocab_size(self):
        """One more than the largest id (GPT-2's 50257)."""
        return max(self.decoder) + 1 if self.decoder else 0

    # -- loading ----------------------------------------------------------------

    @classmethod
    def from_files(cls, vocab_path, merges_path):
        """Read vocab.json (symbol -> id) and merges.txt (one "a b" pair per line, optional #version header)."""
        vocab = load_json_text(_read_text(vocab_path), vocab_path)
        if not isinstance(vocab, dict):
            raise ValueError(f"{vocab_path}: expected a JSON object of symbol -> integer id")
        merges, line_numbers = [], []
        # (newlines translated as text-mode open() does, for a merges.txt saved with \r\n)
        lines = _read_text(merges_path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for line_number, line in enumerate(lines, 1):
            if (line_number == 1 and line.startswith("#version")) or not line:
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise ValueError(f"{merges_path} line {line_number}: expected two symbols separated by a space")
            merges.append(tuple(pair))
            line_numbers.append(line_number)
        return cls(vocab, merges, vocab_source=vocab_path,
                   merge_source=lambda rank: f"{merges_path} line {line_numbers[rank]}")

    @classmethod
    def from_directory(cls, path):
        """Load ``vocab.json`` + ``merges.txt`` from a Hugging Face model directory."""
        vocab_path, merges_path = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        for p in (vocab_path, merges_path):
            if not os.path.exists(p):
                raise ValueError(f"{p}: not found (GPT-2's tokenizer needs vocab.json and merges.txt)")
        return cls.from_files(vocab_path, merges_path)

    def save_vocab_merges(self, path):
        """Write ``vocab.json`` and ``merges.txt`` into directory ``path``."""
        vocab = json.dumps(self.encoder, ensure_ascii=False).encode("utf-8")
        merges = "".join(["#version: 0.2\n"] + [f"{a} {b}\n" for a, b in self.merges]).encode("utf-8")
        atomic_write(os.path.join(path, "vocab.json"), lambda f: f.write(vocab))
        atomic_write(os.path.join(path, "merges.txt"), lambda f: f.write(merges))

    # -- encoding ---------------------------------------------------------------

    def bpe(self, symbols):
        """Merge the symbols of one chunk by rank; return the list of resulting symbols."""
        word = list(symbols)
        while len(word) > 1:
            # the neighbouring pair that was merged earliest in training
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def split(self, text):
        """GPT-2's pre-tokenization: the chunks that BPE works on independently."""
        return self._split_re.findall(text)

    def encode(self, text):
        """Encode a string to a list of ids."""
        cache = self._cache
        if len(cache) > 200_000:  # keep memory bounded on endless new text
            cache.clear()
        ids = []
        for chunk in self.split(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                symbols = "".join(self.byte_encoder[b] for b in chunk.encode("utf-8"))
                try:
                    chunk_ids = [self.encoder[s] for s in self.bpe(symbols)]
                except KeyError as error:
                    raise ValueError(f"symbol {error.args[0]!r} of {chunk!r} is not in vocab.json") from None
                cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def encode_array(self, text):
        """Encode a string to an int64 array of ids."""
        return np.array(self.encode(text), dtype=np.int64)

    def decode(self, ids):
        """Decode ids to a string (byte sequences that are not valid UTF-8 become U+FFFD)."""
        try:
            symbols = "".join(self.decoder[i] for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist())
        except KeyError as error:
            raise ValueError(f"id {error.args[0]} is not in the vocabulary") from None
        data = bytearray()
        for ch in symbols:
            b = self.byte_decoder.get(ch)
            if b is None:  # a special token's characters, e.g. <|endoftext|>
                data.extend(ch.encode("utf-8"))
            else:
                data.append(b)
        return data.decode("utf-8", errors="replace")

    # -- saving -----------------------------------------------------------------

    def to_dict(self):
        # The vocabulary in id order: a list is half the size of a symbol -> id object.
        return {"type": "gpt2", "vocab": [[s, i] for s, i in sorted(self.encoder.items(), key=lambda kv: kv[1])],
                "merges": [" ".join(pair) for pair in self.merges]}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "gpt2":
            raise ValueError(f"not a GPT-2 tokenizer dict (type={d.get('type')!r})")
        vocab, merges = d.get("vocab"), d.get("merges")
        if not isinstance(vocab, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                  for e in vocab):
            raise ValueError("GPT-2 tokenizer: 'vocab' must be a list of [symbol, id] pairs")
        if not isinstance(merges, list) or not all(isinstance(m, str) and m.count(" ") == 1 for m in merges):
            raise ValueError("GPT-2 tokenizer: 'merges' must be a list of \"a b\" strings")
        encoder = {}
        for symbol, i in vocab:
            if symbol in encoder:
                raise ValueError(f"GPT-2 tokenizer: symbol {describe_value(symbol)} appears twice in 'vocab'")
            encoder[symbol] = i
        return cls(encoder, [tuple(m.split(" ")) for m in merges], vocab_source="GPT-2 tokenizer 'vocab'",
                   merge_source=lambda rank: f"GPT-2 tokenizer 'merges' entry {rank}")

    def __repr__(self):
        return f"GPT2Tokenizer(vocab_size={self.vocab_size})"
