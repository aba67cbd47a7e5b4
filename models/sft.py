"""Supervised fine-tuning data: prompt/completion pairs whose loss counts only the completion.

Input: JSON lines, one example per line (blank lines are skipped, other keys ignored)::

    {"prompt": "12+34=", "completion": "46"}

Each example becomes the token sequence  prompt + completion + end marker  and a label per token:
the token itself for completion (and end-marker) tokens, ``IGNORE_INDEX`` (-100, PyTorch's
``ignore_index``) for prompt tokens. Training pairs are then, as for plain text, ``x = tokens[:-1]``
and ``y = labels[1:]``: every position predicts the next token, but only predictions of
completion tokens are scored, so the model learns to answer and not to write prompts.

End marker (``end="auto"``): the tokenizer's end-of-text token when it has one (``eot_token``,
GPT-2's ``<|endoftext|>``); otherwise a newline, when the tokenizer can encode one (char and
byte-level tokenizers). The model thus learns where an answer stops, and generation can stop
there. ``end=None`` appends nothing; any other string is encoded and appended.

Length: a sequence of block_size positions needs block_size + 1 tokens. A longer example is
truncated on the LEFT of the prompt first (the prompt's oldest tokens go, the part next to the
answer stays; at least one prompt token is kept), then, if the completion alone is still too
long, on the RIGHT of the completion (its tail, end marker included, goes).

Rows: with ``pack=True`` (default) whole examples are packed one after another into rows of
block_size positions while they fit (an example is never split across rows); the rest of a row
is padding: input ``pad_id``, target ``IGNORE_INDEX``. Packed examples can attend to the examples
before them in the row (plain causal attention; the end marker separates them). ``pack=False``
puts one example per row.

Split: the last ``val_fraction`` of the examples (in file order, at least one) is the
validation split. ``SFTDataset.get_batch`` has ``TokenDataset.get_batch``'s interface.

Every problem with the file is a ``DataError`` whose one-line message names the line.
"""

import os

import numpy as np

from .data import DataError, read_text_file
from .jsonio import load_json_text

__all__ = ["IGNORE_INDEX", "SFTExample", "parse_sft_lines", "load_sft_file", "end_marker_ids",
           "unencodable_characters", "SFTDataset"]

IGNORE_INDEX = -100


class SFTExample:
    """One prompt/completion pair, with the line it came from (for error messages)."""

    __slots__ = ("prompt", "completion", "line")

    def __init__(self, prompt, completion, line):
        self.prompt, self.completion, self.line = prompt, completion, line

    def __repr__(self):
        return f"SFTExample(prompt={self.prompt!r}, completion={self.completion!r}, line={self.line})"


def parse_sft_lines(lines, name="<sft data>"):
    """Parse JSON lines into SFTExamples; DataError naming ``name`` and the line number."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        # Deep nesting, endless integers and lone surrogates ("\ud800", which no tokenizer can
        # encode and no terminal can print) are refused here, naming the line.
        record = load_json_text(line, where, error=DataError)
        if not isinstance(record, dict):
            raise DataError(f'{where}: expected a JSON object with "prompt" and "completion", '
                            f"got {type(record).__name__}")
        for key in ("prompt", "completion"):
            if key not in record:
                raise DataError(f'{where}: no "{key}" field (each line needs "prompt" and "completion")')
            if not isinstance(record[key], str):
                raise DataError(f'{where}: "{key}" must be a string, got {type(record[key]).__name__}')
        if record["completion"] == "":
            raise DataError(f'{where}: empty "completion" (nothing to learn)')
        examples.append(SFTExample(record["prompt"], record["completion"], number))
    if not examples:
        raise DataError(f"{name} holds no examples")
    return examples


def load_sft_file(path):
    """Read a JSON-lines SFT file (UTF-8) into a list of SFTExamples."""
    text = read_text_file(path)
    return parse_sft_lines(text.split("\n"), name=os.fspath(path))


def unencodable_characters(tokenizer, text):
    """Sorted characters of ``text`` that a char tokenizer cannot encode ([] for other kinds)."""
    vocabulary = getattr(tokenizer, "stoi", None)
    if not isinstance(vocabulary, dict):
        return []
    return sorted(set(text) - set(vocabulary))


def describe_characters(chars, limit=10):
    """'3 character(s): 'é' 'ß' '€'' for error messages (the first ``limit``)."""
    shown = " ".join(repr(c) for c in chars[:limit])
    more = " ..." if len(chars) > limit else ""
    return f"{len(chars)} character(s): {shown}{more}"


def end_marker_ids(tokenizer, end="auto"):
    """Token ids appended after every completion (see the module docstring)."""
    if end is None:
        return []
    if end == "auto":
        eot = getattr(tokenizer, "eot_token", None)
        if eot is not None:
            return [int(eot)]
        try:
            return list(tokenizer.encode("\n"))
        except (KeyError, ValueError):
            return []
    return list(tokenizer.encode(end))


def _truncate(prompt_ids, completion_ids, max_tokens):
    """Fit prompt + completion into max_tokens: prompt loses its left, then completion its right."""
    if len(prompt_ids) + len(completion_ids) <= max_tokens:
        return prompt_ids, completion_ids, False
    keep_prompt = min(len(prompt_ids), max(1, max_tokens - len(completion_ids)))
    prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:]
    return prompt_ids, completion_ids[:max_tokens - len(prompt_ids)], True


class SFTDataset:
    """Prompt/completion examples as (x, y) rows with the prompt's targets ignored.

        data = SFTDataset(load_sft_file("train.jsonl"), tokenizer)
        x, y = data.get_batch("train", batch_size, block_size, rng)   # y == -100 where not scored
    """

    def __init__(self, examples, tokenizer, val_fraction=0.1, end="auto", pack=True, pad_id=0, name="sft data"):
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if len(examples) < 2:
            raise DataError(f"{name} has {len(examples)} example(s); at least 2 are needed "
                            "(one for training, one for validation)")
        self.name = name
        self.pack = pack
        self.pad_id = int(pad_id)
        end_ids = end_marker_ids(tokenizer, end)
        # Tokenise once; rows are cut per block_size on demand.
        self.encoded = []  # (prompt ids, completion ids incl. end marker)
        for ex in examples:
            unknown = unencodable_characters(tokenizer, ex.prompt + ex.completion)
            if unknown:
                raise DataError(f"{name} line {ex.line}: {describe_characters(unknown)} "
                                "that the tokenizer cannot encode")
            try:
                prompt_ids = list(tokenizer.encode(ex.prompt))
                completion_ids = list(tokenizer.encode(ex.completion)) + end_ids
            except (KeyError, ValueError) as error:
                raise DataError(f"{name} line {ex.line}: cannot be encoded ({error})") from None
            if not prompt_ids and len(completion_ids) < 2:
                raise DataError(f"{name} line {ex.line}: an empty prompt and a one-token completion "
                                "leave no token to predict")
            self.encoded.append((prompt_ids, completion_ids))
        n_val = max(1, int(round(len(examples) * val_fraction)))
        n_val = min(n_val, len(examples) - 1)
        self.example_splits = {"train": self.encoded[:-n_val], "val": self.encoded[-n_val:]}
        self._rows = {}       # block_size -> {split: (x, y)}
        self._truncated = {}  # block_size -> number of examples cut to fit

    def rows(self, split, block_size):
        """All (x, y) rows of a split for this block_size: two int64 arrays (n_rows, block_size)."""
        if split not in self.example_splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if block_size not in self._rows:
            self._truncated[block_size] = 0
            self._rows[block_size] = {s: self._build_rows(exs, block_size) for s, exs in self.example_splits.items()}
        return self._rows[block_size][split]

    def truncated(self, block_size):
        """How many examples (both splits) had to be truncated to fit block_size + 1 tokens."""
        self.rows("train", block_size)
        return self._truncated[block_size]

    def _build_rows(self, examples, block_size):
        sequences = []  # (tokens, labels) per example, each at most block_size + 1 long
        for prompt_ids, completion_ids in examples:
            prompt_ids, completion_ids, cut = _truncate(prompt_ids, completion_ids, block_size + 1)
            self._truncated[block_size] += cut
            tokens = prompt_ids + completion_ids
            labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
            sequences.append((tokens, labels))

        groups, current, used = [], [], 0
        for tokens, labels in sequences:
            if current and (not self.pack or used + len(tokens) > block_size + 1):
                groups.append(current)
                current, used = [], 0
            current.append((tokens, labels))
            used += len(tokens)
        groups.append(current)

        x = np.full((len(groups), block_size), self.pad_id, dtype=np.int64)
        y = np.full((len(groups), block_size), IGNORE_INDEX, dtype=np.int64)
        for r, group in enumerate(groups):
            tokens = [t for seq, _ in group for t in seq]
            labels = [t for _, lab in group for t in lab]
            n = len(tokens) - 1
            x[r, :n] = tokens[:-1]    # input: every token but the last
            y[r, :n] = labels[1:]     # target: the next token, or IGNORE_INDEX inside a prompt
        return x, y

    def check_block_size(self, block_size):
        """Rows can always be built (long examples are truncated); block_size must be positive."""
        if block_size < 1:
            raise DataError(f"block_size must be positive, got {block_size}")

    def get_batch(self, split, batch_size, block_size, rng):
        """``batch_size`` random rows of one split: ``(x, y)``, int64 (batch_size, block_size)."""
        x, y = self.rows(split, block_size)
        pick = rng.integers(0, len(x), size=batch_size)  # (B,)
        return x[pick], y[pick]
