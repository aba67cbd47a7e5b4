"""Tokenizers: turn text into integer ids for the model, and back.

CharTokenizer   one id per character, vocabulary = the sorted set of characters
                of a text (nanoGPT's shakespeare_char).
BPETokenizer    byte-level byte-pair encoding (GPT-2 style): every string is
                first UTF-8 bytes (ids 0..255), then frequent neighbouring pairs
                are merged into new ids 256, 257, ... Any text can be encoded,
                including characters never seen in training.

Both have encode(text) -> list[int], encode_array(text) -> np.ndarray (int64),
decode(ids) -> str, a vocab_size property, to_dict()/from_dict() (plain JSON
values, so a checkpoint can embed them) and save(path)/load(path) as JSON.
BPETokenizer also has encode_bytes(data) and decode_bytes(ids), an exact round trip for
any bytes, including bytes that are not valid UTF-8.
`tokenizer_from_dict(d)` and `load_tokenizer(path)` rebuild either kind (and GPT-2's own BPE,
models/gpt2_tokenizer.py).
"""

import heapq
import re
from collections import Counter

import numpy as np

from .jsonio import lone_surrogate
from .tokenizer_base import JSONTokenizer, load_json_file

# ----------------------------------------------------------------------------
# Character level


class CharTokenizer(JSONTokenizer):
    """Character-level tokenizer: id i is the i-th character of sorted(set(text)).

        tok = CharTokenizer(text)
        ids = tok.encode("hello")      # list of ints
        tok.decode(ids) == "hello"
    """

    def __init__(self, text):
        chars = sorted(set(text))
        if not chars:
            raise ValueError("cannot build a character vocabulary from empty text")
        # A surrogate in the vocabulary could be sampled but never printed or written as UTF-8.
        bad = lone_surrogate("".join(chars))
        if bad >= 0:
            raise ValueError(f"character {chars[bad]!r} (U+{ord(chars[bad]):04X}) at position "
                             f"{text.index(chars[bad])} is a lone surrogate, which is not text")
        self.chars = chars                               # itos as a list
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.itos = dict(enumerate(chars))
        # Code points in id order (sorted), for a vectorised encode via searchsorted.
        self._code_points = np.array([ord(ch) for ch in chars], dtype=np.uint32)

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode_array(self, text):
        """Encode a string to an int64 array of ids (fast path for long texts)."""
        # utf-32 gives exactly one 4-byte number per Python character.
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.searchsorted(self._code_points, codes)
        ids_in_range = np.minimum(ids, len(self._code_points) - 1)
        unknown = self._code_points[ids_in_range] != codes
        if unknown.any():
            pos = int(np.argmax(unknown))
            raise ValueError(f"character {text[pos]!r} (U+{ord(text[pos]):04X}) at position {pos} "
                             f"is not in the tokenizer's vocabulary of {self.vocab_size} characters")
        return ids.astype(np.int64)

    def encode(self, text):
        """Encode a string to a list of ids; unknown characters raise ValueError."""
        return self.encode_array(text).tolist()

    def decode(self, ids):
        """Decode a sequence of ids (list or array) back to a string."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"id {ids[pos]} at position {pos} is outside the vocabulary "
                             f"(0..{self.vocab_size - 1})")
        return "".join([self.chars[i] for i in ids.tolist()])

    def to_dict(self):
        return {"type": "char", "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "char":
            raise ValueError(f"not a char tokenizer dict (type={d.get('type')!r})")
        chars = d.get("chars")
        # Exactly what to_dict writes: distinct single characters in sorted order. Anything
        # else would silently give a different vocabulary than the one the model learned.
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("char tokenizer: 'chars' must be a list of single characters")
        if chars != sorted(set(chars)):
            raise ValueError("char tokenizer: 'chars' must be distinct and sorted")
        return cls("".join(chars))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------
# Byte-level BPE

# GPT-2's pre-split pattern, written for Python's `re` (no \p{..} classes):
#   [^\W\d_]  letters          (\p{L} in GPT-2's pattern)
#   \d        digits           (\p{N})
#   [^\s\w]|_ everything else that is not whitespace
# Merges never cross chunk borders, so " the" and "the," share tokens. Every
# character falls in one of the classes, so the chunks always concatenate back
# to the full text (nothing is dropped).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

# Chunks longer than this many characters are cut into pieces of this length.
# Text without spaces (Chinese, long runs of "=====") would otherwise form one
# huge chunk, and BPE work grows with chunk length; words are far shorter.
MAX_CHUNK_CHARS = 64


def merge_pair(ids, pair, new_id):
    """Replace every non-overlapping occurrence of `pair` in ids (left to right) by new_id."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _find_pair(ids, a, b, start):
    """Index of the first occurrence of the pair (a, b) in ids at or after start, or -1."""
    n = len(ids)
    while True:
        try:
            i = ids.index(a, start, n - 1)  # list.index scans at C speed
        except ValueError:
            return -1
        if ids[i + 1] == b:
            return i
        start = i + 1


def _merge_and_count(ids, pair, new_id):
    """Do merge_pair(ids, pair, new_id) and list how the pair counts change.

    Returns (new_ids, changes) with changes a list of (pair, +1 or -1). Only
    the pairs touching a merge site change: for  x a b y  ->  x X y  we lose
    (x, a), (a, b), (b, y) and gain (x, X), (X, y). When two sites are
    neighbours (a b a b -> X X) the pair between them is handled once, by the
    right-hand site, as (b, a) lost and (X, X) gained.
    """
    a, b = pair
    new_ids, changes = [], []
    copied_up_to = 0
    i = _find_pair(ids, a, b, 0)
    while i != -1:
        new_ids.extend(ids[copied_up_to:i])
        changes.append((pair, -1))
        if i > 0:  # left neighbour (already merged itself if it was a site)
            changes.append(((ids[i - 1], a), -1))
            changes.append(((new_ids[-1], new_id), +1))
        next_site = _find_pair(ids, a, b, i + 2)
        if i + 2 < len(ids) and next_site != i + 2:  # right neighbour that stays as it is
            right = ids[i + 2]
            changes.append(((b, right), -1))
            changes.append(((new_id, right), +1))
        new_ids.append(new_id)
        copied_up_to = i + 2
        i = next_site
    new_ids.extend(ids[copied_up_to:])
    return new_ids, changes


class BPETokenizer(JSONTokenizer):
    """Byte-level byte-pair-encoding tokenizer.

        tok = BPETokenizer().train(text, vocab_size=512)
        ids = tok.encode("any text at all, even 日本語 🙂")
        tok.decode(ids) == "any text at all, even 日本語 🙂"

    Ids 0..255 are the raw bytes; id 256 + r is the r-th learned merge of a
    pair of existing ids. Training picks, again and again, the most frequent
    neighbouring pair (ties: the smallest pair of ids) and merges it.
    """

    def __init__(self, merges=(), pattern=GPT2_SPLIT_PATTERN, max_chunk_chars=MAX_CHUNK_CHARS):
        self.pattern = pattern
        self.max_chunk_chars = int(max_chunk_chars)
        self._split_re = re.compile(pattern)
        self.merges = {}                                  # (id, id) -> new id, in merge order
        self.vocab = {i: bytes([i]) for i in range(256)}  # id -> the bytes it stands for
        for a, b in merges:
            self._add_merge(int(a), int(b))
        self._cache = {}                                  # chunk -> its ids, filled by encode

    def _add_merge(self, a, b):
        new_id = 256 + len(self.merges)
        if a not in self.vocab or b not in self.vocab:
            raise ValueError(f"merge {len(self.merges)} uses unknown ids ({a}, {b})")
        if (a, b) in self.merges:
            raise ValueError(f"merge ({a}, {b}) appears twice")
        self.merges[(a, b)] = new_id
        self.vocab[new_id] = self.vocab[a] + self.vocab[b]

    @property
    def vocab_size(self):
        return 256 + len(self.merges)

    def split(self, text):
        """Pre-split text into chunks (words with their leading space, numbers, ...)."""
        chunks = self._split_re.findall(text)
        m = self.max_chunk_chars
        if any(len(chunk) > m for chunk in chunks):
            chunks = [chunk[i:i + m] for chunk in chunks for i in range(0, len(chunk), m)]
        return chunks

    # -- training ---------------------------------------------------------------

    def train(self, text, vocab_size, verbose=False):
        """Learn vocab_size - 256 merges from `text` (replacing any earlier ones); return self.

        Pair counts are kept up to date incrementally: a merge only touches the
        chunks that contain the merged pair, and only the pairs right next to
        each merge site change, so training on ~1 MB of text takes seconds.
        If the text runs out of pairs the vocabulary ends up smaller than
        vocab_size.
        """
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (the byte tokens), got {vocab_size}")
        self.merges, self.vocab = {}, {i: bytes([i]) for i in range(256)}
        self._cache = {}

        # Identical chunks behave identically: work on unique chunks with counts.
        chunk_counts = Counter(self.split(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        pair_counts = {}   # (a, b) -> number of occurrences in the whole text
        where = {}         # (a, b) -> indices of words that (may) contain it
        for w, ids in enumerate(words):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + freqs[w]
                where.setdefault(pair, set()).add(w)

        # Max-heap of (-count, pair). Entries go stale when counts change; a
        # popped entry is used only if it still matches the current count.
        # Equal counts pop the smallest pair first: a deterministic tie-break.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        while self.vocab_size < vocab_size and heap:
            neg_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg_count:
                continue  # stale entry
            self._add_merge(*pair)
            new_id = self.merges[pair]
            if verbose:
                print(f"merge {new_id - 256}: {pair} -> {new_id} {self.vocab[new_id]!r} "
                      f"({-neg_count} occurrences)")

            delta = {}  # pair -> change of its count caused by this merge
            for w in sorted(where.pop(pair)):
                new_ids, changes = _merge_and_count(words[w], pair, new_id)
                for p, sign in changes:
                    delta[p] = delta.get(p, 0) + sign * freqs[w]
                    if sign > 0:
                        where.setdefault(p, set()).add(w)
                words[w] = new_ids
            for p, d in delta.items():
                count = pair_counts.get(p, 0) + d
                if count > 0:
                    pair_counts[p] = count
                    if d != 0:
                        heapq.heappush(heap, (-count, p))
                else:
                    pair_counts.pop(p, None)
        return self

    # -- encoding / decoding ----------------------------------------------------

    def _encode_chunk(self, data):
        """BPE-encode the UTF-8 bytes of one chunk.

        Rule: repeatedly merge the neighbouring pair whose merge was learned
        first (lowest id), leftmost first - the same result as replaying the
        merges in training order. A heap of candidate (merge id, position)
        entries and a linked list over positions make this O(n log n) instead
        of rescanning the chunk after every merge.
        """
        ids = list(data)
        n = len(ids)
        if n < 2 or not self.merges:
            return ids
        merges = self.merges
        nxt = list(range(1, n + 1))   # position of the next live token (n = end)
        prev = list(range(-1, n - 1))  # position of the previous live token (-1 = start)
        heap = []
        for i in range(n - 1):
            new_id = merges.get((ids[i], ids[i + 1]))
            if new_id is not None:
                heap.append((new_id, i))
        heapq.heapify(heap)

        while heap:
            new_id, i = heapq.heappop(heap)
            j = nxt[i]
            # Skip stale entries: token i was absorbed, or its right neighbour changed.
            if ids[i] is None or j >= n or merges.get((ids[i], ids[j])) != new_id:
                continue
            ids[i], ids[j] = new_id, None          # token j is absorbed into token i
            nxt[i] = nxt[j]
            if nxt[i] < n:
                prev[nxt[i]] = i
            # The merged token forms new pairs with its neighbours.
            if prev[i] >= 0:
                candidate = merges.get((ids[prev[i]], new_id))
                if candidate is not None:
                    heapq.heappush(heap, (candidate, prev[i]))
            if nxt[i] < n:
                candidate = merges.get((new_id, ids[nxt[i]]))
                if candidate is not None:
                    heapq.heappush(heap, (candidate, i))
        return [t for t in ids if t is not None]

    def encode(self, text):
        """Encode any string to a list of ids."""
        return self._encode_text(text, "strict")

    def encode_bytes(self, data):
        """Encode any bytes, valid UTF-8 or not, to a list of ids; ``decode_bytes`` gives them back.

        The bytes are pre-split like text: each byte that is not part of valid UTF-8 stands
        for itself as a lone surrogate character (Python's "surrogateescape"), so valid UTF-8
        gives the same ids as ``encode(data.decode())`` and nothing is ever lost.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"encode_bytes expects bytes, got {type(data).__name__}")
        return self._encode_text(bytes(data).decode("utf-8", "surrogateescape"), "surrogateescape")

    def _encode_text(self, text, errors):
        cache = self._cache
        if len(cache) > 200_000:  # keep memory bounded on endless new text
            cache.clear()
        ids = []
        for chunk in self.split(text):
            key = (chunk, errors)
            chunk_ids = cache.get(key)
            if chunk_ids is None:
                chunk_ids = self._encode_chunk(chunk.encode("utf-8", errors))
                cache[key] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def encode_array(self, text):
        """Encode a string to an int64 array of ids."""
        return np.array(self.encode(text), dtype=np.int64)

    def decode(self, ids):
        """Decode ids to a string (byte sequences that are not valid UTF-8 become U+FFFD;
        ``decode_bytes`` gives the exact bytes)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """Decode ids to the exact bytes they stand for (the inverse of ``encode_bytes``)."""
        vocab = self.vocab
        try:
            return b"".join([vocab[i] for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()])
        except KeyError as e:
            raise ValueError(f"id {e.args[0]} is outside the vocabulary (0..{self.vocab_size - 1})") from None

    # -- saving -----------------------------------------------------------------

    def to_dict(self):
        return {"type": "bpe", "pattern": self.pattern, "max_chunk_chars": self.max_chunk_chars,
                "merges": [list(pair) for pair in self.merges]}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "bpe":
            raise ValueError(f"not a BPE tokenizer dict (type={d.get('type')!r})")
        merges = d.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(type(i) is int for i in m) for m in merges):
            raise ValueError("BPE tokenizer: 'merges' must be a list of [id, id] pairs of integers")
        pattern = d.get("pattern", GPT2_SPLIT_PATTERN)
        max_chunk_chars = d.get("max_chunk_chars", MAX_CHUNK_CHARS)
        if not isinstance(pattern, str):
            raise ValueError(f"BPE tokenizer: 'pattern' must be a string, got {pattern!r}")
        if type(max_chunk_chars) is not int or max_chunk_chars < 1:
            raise ValueError(f"BPE tokenizer: 'max_chunk_chars' must be a positive integer, got {max_chunk_chars!r}")
        try:
            return cls(merges=merges, pattern=pattern, max_chunk_chars=max_chunk_chars)
        except re.error as error:
            raise ValueError(f"BPE tokenizer: 'pattern' is not a regular expression ({error})") from None

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------
# Helpers


def tokenizer_from_dict(d):
    """Rebuild a tokenizer from its to_dict() output: CharTokenizer, BPETokenizer, or GPT-2's
    own BPE (``type`` "gpt2", models/gpt2_tokenizer.py, which needs ``.[hf]`` (from a tensorlite checkout))."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "gpt2":
        from .gpt2_tokenizer import GPT2Tokenizer  # its regex dependency is optional

        return GPT2Tokenizer.from_dict(d)
    kinds = {"char": CharTokenizer, "bpe": BPETokenizer}
    if kind not in kinds:
        raise ValueError(f"unknown tokenizer type {kind!r}; expected one of {sorted(kinds) + ['gpt2']}")
    return kinds[kind].from_dict(d)


def load_tokenizer(path):
    """Load a tokenizer of either kind from a JSON file written by save()."""
    return tokenizer_from_dict(load_json_file(path))
