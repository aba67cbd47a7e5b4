"""GPT-2's own byte-level BPE tokenizer, loaded from ``vocab.json`` + ``merges.txt``.

This is the tokenizer of OpenAI's ``encoder.py``, step by step:

1. pre-split the text with GPT-2's pattern (letters, numbers, other symbols, each with an
   optional leading space; runs of whitespace), which needs ``\\p{L}`` / ``\\p{N}`` classes
   from the ``regex`` package (optional extra ``tensorlite[hf]``);
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

from tensorlite.serialization import atomic_write
from models.tokenizer import _JSONTokenizer

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


def _regex():
    try:
        import regex
    except ImportError:
        raise ValueError("GPT-2's tokenizer needs the regex package: pip install 'tensorlite[hf]'") from None
    return regex


class GPT2Tokenizer(_JSONTokenizer):
    """GPT-2's byte-level BPE from a vocabulary (symbol -> id) and a ranked list of merges.

        tok = GPT2Tokenizer.from_directory("gpt2-dir")     # vocab.json + merges.txt
        ids = tok.encode("Hello world")
        tok.decode(ids) == "Hello world"
    """

    def __init__(self, vocab, merges):
        self.encoder = dict(vocab)                             # symbol -> id
        self.decoder = {i: s for s, i in self.encoder.items()}  # id -> symbol
        if len(self.decoder) != len(self.encoder):
            raise ValueError("vocab.json maps two symbols to the same id")
        self.merges = [tuple(pair) for pair in merges]
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
        with open(vocab_path, encoding="utf-8") as f:
            try:
                vocab = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{vocab_path}: not valid JSON ({error})") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{vocab_path}: expected a JSON object of symbol -> integer id")
        merges = []
        with open(merges_path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if (line_number == 1 and line.startswith("#version")) or not line:
                    continue
                pair = line.split(" ")
                if len(pair) != 2:
                    raise ValueError(f"{merges_path} line {line_number}: expected two symbols separated by a space")
                merges.append(tuple(pair))
        return cls(vocab, merges)

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
        return cls({s: int(i) for s, i in d["vocab"]}, [tuple(m.split(" ")) for m in d["merges"]])

    def __repr__(self):
        return f"GPT2Tokenizer(vocab_size={self.vocab_size})"
