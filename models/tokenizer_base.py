"""What every tokenizer here shares: ``save(path)`` and ``load(path)`` as a JSON file.

A module of its own so that tokenizer.py (whose ``tokenizer_from_dict`` also rebuilds GPT-2's
tokenizer) and gpt2_tokenizer.py (whose tokenizer is saved the same way) need not import each
other.
"""

import json

from .jsonio import load_json_text


class JSONTokenizer:
    """`save(path)` and `load(path)` for a tokenizer that has `to_dict` and `from_dict`."""

    def save(self, path):
        save_json_file(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        return cls.from_dict(load_json_file(path))


def save_json_file(value, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)


def load_json_file(path):
    with open(path, encoding="utf-8") as f:
        return load_json_text(f.read(), path)
