"""Tests of models/tokenizer.py: round trips, errors, saving, and the BPE
trainer/encoder against slow but obviously correct reference versions."""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tensorlite.models.tokenizer import (
    BPETokenizer, CharTokenizer, load_tokenizer, merge_pair, tokenizer_from_dict,
)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
    "Über café naïve — 日本語のテキスト 🙂🙂 12345 678 ___ !!! \t\t tabs   and   spaces\n"
) * 3


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer().train(CORPUS, vocab_size=400)


# ----------------------------------------------------------------------------
# Reference versions: recount everything, replay merges one by one


def reference_train(tokenizer, text, vocab_size):
    """Greedy BPE by full recount each round: most frequent pair, ties -> smallest pair."""
    words = [list(chunk.encode("utf-8")) for chunk in tokenizer.split(text)]
    merges = []
    while 256 + len(merges) < vocab_size:
        counts = Counter()
        for ids in words:
            counts.update(zip(ids, ids[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        words = [merge_pair(ids, best, 255 + len(merges)) for ids in words]
    return merges


def reference_encode(tokenizer, text):
    """Apply every learned merge, in training order, to every chunk."""
    out = []
    for chunk in tokenizer.split(text):
        ids = list(chunk.encode("utf-8"))
        for pair, new_id in tokenizer.merges.items():
            ids = merge_pair(ids, pair, new_id)
        out.extend(ids)
    return out


# ----------------------------------------------------------------------------
# CharTokenizer


def test_char_vocabulary_is_sorted_unique_characters():
    tok = CharTokenizer("hello")
    assert tok.chars == ["e", "h", "l", "o"] and tok.vocab_size == 4
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode([1, 3, 2, 0]) == "hole"
    ids = tok.encode_array("hello")
    assert ids.dtype == np.int64 and ids.tolist() == tok.encode("hello")
    assert tok.encode("") == [] and tok.decode([]) == ""


@given(st.data())
def test_char_round_trip_over_training_alphabet(data):
    training_text = data.draw(st.text(min_size=1), label="training text")
    tok = CharTokenizer(training_text)
    text = data.draw(st.text(alphabet=sorted(set(training_text))), label="text")
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids)) == text


def test_char_unknown_character_names_character_and_position():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 3"):
        tok.encode("abcza")
    with pytest.raises(ValueError, match="position 0"):
        tok.encode("日")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer("")


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer(CORPUS)
    path = tmp_path / "char.json"
    tok.save(path)
    for loaded in (CharTokenizer.load(path), load_tokenizer(path),
                   tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars
        assert loaded.encode(CORPUS) == tok.encode(CORPUS)


# ----------------------------------------------------------------------------
# BPETokenizer


@given(st.text())
def test_bpe_round_trips_any_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@given(st.text())
def test_bpe_encode_matches_replaying_the_merges(bpe, text):
    assert bpe.encode(text) == reference_encode(bpe, text)


def test_bpe_encodes_the_corpus_like_replaying_the_merges(bpe):
    assert bpe.encode(CORPUS) == reference_encode(bpe, CORPUS)
    assert bpe.decode(bpe.encode(CORPUS)) == CORPUS


@given(text=st.text(alphabet="ab c\n", max_size=60) | st.text(max_size=30),
       vocab_size=st.integers(256, 300))
def test_bpe_training_matches_full_recount(text, vocab_size):
    tok = BPETokenizer().train(text, vocab_size)
    assert list(tok.merges) == reference_train(tok, text, vocab_size)


def test_bpe_training_matches_full_recount_on_corpus(bpe):
    assert list(bpe.merges) == reference_train(bpe, CORPUS, 400)


@given(st.text())
def test_bpe_pre_split_is_lossless(bpe, text):
    chunks = bpe.split(text)
    assert "".join(chunks) == text
    assert all(0 < len(c) <= bpe.max_chunk_chars for c in chunks)


def test_bpe_pre_split_keeps_leading_spaces_with_words():
    tok = BPETokenizer()
    assert tok.split("Hello world, it's 2024!") == ["Hello", " world", ",", " it", "'s", " 2024", "!"]
    assert tok.split("a" * 150) == ["a" * 64, "a" * 64, "a" * 22]


def test_bpe_reduces_token_count_on_repetitive_text():
    text = "the quick brown fox jumps over the lazy dog. " * 100
    tok = BPETokenizer().train(text, vocab_size=300)
    ids = tok.encode(text)
    assert len(ids) * 4 < len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    untrained = BPETokenizer()
    assert untrained.encode(text) == list(text.encode("utf-8"))


def test_bpe_vocab_size_and_determinism():
    tok = BPETokenizer().train(CORPUS, vocab_size=300)
    assert tok.vocab_size == 300 and len(tok.vocab) == 300
    again = BPETokenizer().train(CORPUS, vocab_size=300)
    assert again.to_dict() == tok.to_dict()
    # Every learned token stands for the bytes of the two tokens it merges.
    for (a, b), new_id in tok.merges.items():
        assert tok.vocab[new_id] == tok.vocab[a] + tok.vocab[b]
    # A tiny text runs out of pairs: the vocabulary stops growing.
    assert BPETokenizer().train("abab", vocab_size=1000).vocab_size == 258
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer().train(CORPUS, vocab_size=100)


def test_bpe_decode_errors_and_invalid_utf8():
    tok = BPETokenizer()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([300])
    assert tok.decode([0xE6]) == "\ufffd"  # half a character decodes to U+FFFD


def test_bpe_save_load_round_trip(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    text = "Speak, speak — 日本 🙂 unseen: Ωμέγα"
    for loaded in (BPETokenizer.load(path), load_tokenizer(path),
                   tokenizer_from_dict(json.loads(json.dumps(bpe.to_dict())))):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.vocab_size == bpe.vocab_size
        assert loaded.merges == bpe.merges
        assert loaded.encode(text) == bpe.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    np.testing.assert_array_equal(bpe.encode_array(text), bpe.encode(text))


def test_tokenizer_from_dict_rejects_unknown_types(bpe):
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        tokenizer_from_dict({"type": "wordpiece"})
    with pytest.raises(ValueError, match="not a char tokenizer"):
        CharTokenizer.from_dict(bpe.to_dict())
    with pytest.raises(ValueError, match="unknown ids"):
        BPETokenizer(merges=[[1, 999]])


# ----------------------------------------------------------------------------
# Bytes API and strict loading


@given(st.binary(max_size=200))
def test_bpe_bytes_round_trip_is_lossless_for_any_bytes(bpe, data):
    ids = bpe.encode_bytes(data)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode_bytes(ids) == data


@given(st.text(max_size=100))
def test_bpe_encode_bytes_of_valid_utf8_equals_encode(bpe, text):
    assert bpe.encode_bytes(text.encode("utf-8")) == bpe.encode(text)


def test_bpe_invalid_utf8_keeps_every_byte(bpe):
    data = b"Speak \xff\xfe half \xe6\x97 a character, then " + "日本".encode() + b"\x80"
    ids = bpe.encode_bytes(data)
    assert bpe.decode_bytes(ids) == data
    assert "\ufffd" in bpe.decode(ids)  # the str API stays lossy, as documented
    with pytest.raises(TypeError, match="expects bytes"):
        bpe.encode_bytes("a str")


@pytest.mark.parametrize("d, message", [
    ({"type": "char", "chars": ["ab", "c"]}, "single characters"),
    ({"type": "char", "chars": "abc"}, "single characters"),
    ({"type": "char", "chars": ["b", "a"]}, "distinct and sorted"),
    ({"type": "char", "chars": ["a", "a"]}, "distinct and sorted"),
    ({"type": "bpe", "merges": [[97, "x"]]}, "pairs of integers"),
    ({"type": "bpe", "merges": [[97.0, 98]]}, "pairs of integers"),
    ({"type": "bpe", "merges": [], "max_chunk_chars": 0}, "max_chunk_chars"),
    ({"type": "bpe", "merges": [], "pattern": "("}, "not a regular expression"),
])
def test_tokenizer_from_dict_rejects_edited_dicts(d, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_from_dict(d)
