"""GPT-2's byte-level BPE (models/gpt2_tokenizer.py) against Hugging Face's `tokenizers`."""

import json

import numpy as np
import pytest

pytest.importorskip("regex")

from tensorlite.models.gpt2_tokenizer import END_OF_TEXT, GPT2Tokenizer, bytes_to_unicode  # noqa: E402

# Hand-written merges in GPT-2's notation (Ġ is the space byte); later ones build on earlier.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "Ġa n", "Ġan d", "r e", "l l",
          "Ġ w", "o r", "1 2", "Ġ 1", "' s", "Ġ Ġ", "ĠĠ ĠĠ", "Ġs he", "in g", "Ġ in"]

TEXTS = [
    "the theatre and the other shell",
    "she's singing in 12 rooms, and 1234 more!",
    "  leading spaces,\ttabs\nand\n\nnewlines   ",
    "Ünïcödé: 日本語 🙂 — ok?",
    "it's we've they'll I'm you'd",
    "",
    "a" * 50,
]


def tiny_vocab():
    """The 256 byte symbols, then the result of each merge, in GPT-2's id order; then <|endoftext|>."""
    symbols = list(bytes_to_unicode().values())
    symbols += [m.replace(" ", "") for m in MERGES]
    vocab = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    vocab[END_OF_TEXT] = len(vocab)
    return vocab


@pytest.fixture
def files(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return tmp_path


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("A")] == "A" and table[ord("\n")] == "Ċ"
    assert all(not c.isspace() for c in table.values())


@pytest.mark.parametrize("text", TEXTS)
def test_matches_hugging_face_tokenizers(files, text):
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(files / "vocab.json"), str(files / "merges.txt")))
    reference.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = tokenizers.decoders.ByteLevel()
    ours = GPT2Tokenizer.from_directory(str(files))
    ids = ours.encode(text)
    assert ids == reference.encode(text).ids
    assert ours.decode(ids) == text == reference.decode(ids)


def test_merges_apply_by_rank(files):
    tok = GPT2Tokenizer.from_directory(str(files))
    vocab = tiny_vocab()
    assert tok.encode(" the") == [vocab["Ġthe"]]
    assert tok.encode(" she") == [vocab["Ġshe"]]  # "Ġs he" (rank 19) after "h e" and "Ġ s"
    assert tok.encode(" and") == [vocab["Ġand"]]
    assert tok.eot_token == vocab[END_OF_TEXT] and tok.vocab_size == len(vocab)
    assert tok.decode([tok.eot_token]) == END_OF_TEXT
    assert tok.encode(END_OF_TEXT) != [tok.eot_token]  # text never becomes the special token


def test_dict_and_file_round_trip(files, tmp_path):
    tok = GPT2Tokenizer.from_directory(str(files))
    again = GPT2Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    tok.save(tmp_path / "tok.json")
    loaded = GPT2Tokenizer.load(tmp_path / "tok.json")
    out = tmp_path / "written"
    out.mkdir()
    tok.save_vocab_merges(str(out))
    rewritten = GPT2Tokenizer.from_directory(str(out))
    for other in (again, loaded, rewritten):
        for text in TEXTS:
            assert other.encode(text) == tok.encode(text)
    assert isinstance(tok.encode_array("the"), np.ndarray) and tok.encode_array("the").dtype == np.int64


def test_bad_files(tmp_path, files):
    with pytest.raises(ValueError, match="vocab.json: not found"):
        GPT2Tokenizer.from_directory(str(tmp_path / "nowhere"))
    (files / "merges.txt").write_text("#version: 0.2\nĠ t\nthree symbols here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: expected two symbols"):
        GPT2Tokenizer.from_directory(str(files))
    (files / "vocab.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="symbol -> integer id"):
        GPT2Tokenizer.from_directory(str(files))
    tok = GPT2Tokenizer({"a": 0}, [])
    with pytest.raises(ValueError, match="not in vocab.json"):
        tok.encode("b")
    with pytest.raises(ValueError, match="id 7 is not in the vocabulary"):
        tok.decode([7])
