"""Supervised fine-tuning data (models/sft.py): masking, padding, packing, truncation, errors."""

import json

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import functional as F
from tensorlite.models.data import DataError
from tensorlite.models.gpt import GPT, GPTConfig
from tensorlite.models.sft import IGNORE_INDEX, SFTDataset, SFTExample, end_marker_ids, load_sft_file, parse_sft_lines
from tensorlite.models.tokenizer import BPETokenizer, CharTokenizer

TOK = CharTokenizer("0123456789+=\nabcdefghij ")


def ex(prompt, completion, line=1):
    return SFTExample(prompt, completion, line)


def ids(text):
    return TOK.encode(text)


def test_prompt_targets_are_ignored_and_completion_targets_are_next_tokens():
    data = SFTDataset([ex("12+3=", "15"), ex("1+1=", "2")], TOK, pack=False)
    x, y = data.rows("train", 10)
    assert x.shape == y.shape == (1, 10)
    tokens = ids("12+3=15\n")
    n = len(tokens) - 1
    assert x[0, :n].tolist() == tokens[:-1]
    # Positions 0..3 predict prompt tokens "2+3=": ignored. Position 4 ("=") predicts "1", ...
    assert y[0, :n].tolist() == [IGNORE_INDEX] * 4 + ids("15\n")
    # Padding: input pad id 0, target ignored.
    assert x[0, n:].tolist() == [0] * (10 - n) and y[0, n:].tolist() == [IGNORE_INDEX] * (10 - n)


def test_packing_puts_whole_examples_in_a_row():
    examples = [ex("1+1=", "2"), ex("2+2=", "4"), ex("3+3=", "6"), ex("4+4=", "8"), ex("5+5=", "10")]
    data = SFTDataset(examples, TOK, val_fraction=0.2, pack=True)
    # each training example is 6 tokens: "1+1=" + "2" + the end marker "\n"
    x, y = data.rows("train", 11)  # rows of 12 tokens: two 6-token examples each
    assert x.shape == (2, 11)
    stream = ids("1+1=2\n2+2=4\n")
    assert x[0].tolist() == stream[:-1]
    ignore = IGNORE_INDEX
    assert y[0].tolist() == [ignore] * 3 + ids("2\n") + [ignore] * 4 + ids("4\n")
    vx, vy = data.rows("val", 11)
    assert vx.shape == (1, 11) and (vy[0] != ignore).sum() == 3  # "10\n"
    assert data.rows("train", 11)[0] is x  # rows are built once per block size


def test_truncation_drops_the_prompt_left_then_the_completion_right():
    data = SFTDataset([ex("abcdefgh", "123"), ex("ab", "0123456789")], TOK, val_fraction=0.5, pack=False)
    # Rows hold 7 tokens; the completion "123\n" needs 4, so the prompt keeps its last 3, "fgh".
    x, y = data.rows("train", 6)
    assert x[0].tolist() == ids("fgh123")
    assert y[0].tolist() == [IGNORE_INDEX] * 2 + ids("123\n")
    vx, vy = data.rows("val", 6)  # completion alone is too long: one prompt token, 6 completion tokens
    assert vx[0].tolist() == ids("b01234")
    assert vy[0].tolist() == ids("012345")
    assert data.truncated(6) == 2 and data.truncated(64) == 0


def test_get_batch_interface_and_loss_counts_only_completion():
    examples = [ex(f"{a}+{b}=", str(a + b), i) for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8)], 1)]
    data = SFTDataset(examples, TOK, val_fraction=0.25)
    rng = np.random.default_rng(0)
    x, y = data.get_batch("train", 5, 16, rng)
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == np.int64
    assert data.get_batch("val", 2, 16, rng)[0].shape == (2, 16)
    with pytest.raises(ValueError, match="split"):
        data.get_batch("test", 1, 16, rng)

    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    logits, _ = model(x)
    loss = F.cross_entropy(logits.reshape(-1, TOK.vocab_size), y.reshape(-1), ignore_index=IGNORE_INDEX)
    # Reference: mean of -log softmax over scored positions only.
    z = logits.data.reshape(-1, TOK.vocab_size).astype(np.float64)
    t = y.reshape(-1)
    keep = t != IGNORE_INDEX
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    np.testing.assert_allclose(loss.item(), -logp[keep, t[keep]].mean(), rtol=1e-5)


def test_end_marker_choice():
    assert end_marker_ids(TOK) == ids("\n")
    assert end_marker_ids(TOK, None) == []
    assert end_marker_ids(TOK, "=") == ids("=")
    assert end_marker_ids(CharTokenizer("abc")) == []  # no newline in the vocabulary: nothing

    class WithEot:
        eot_token = 7

    assert end_marker_ids(WithEot()) == [7]
    bpe = BPETokenizer()
    assert end_marker_ids(bpe) == [ord("\n")]


def test_unencodable_characters_are_named_with_their_line():
    with pytest.raises(DataError, match=r"sft data line 2: 2 character\(s\): 'X' 'é' that the tokenizer"):
        SFTDataset([ex("1+1=", "2"), ex("Xé", "1", line=2)], TOK)


def test_too_few_examples():
    with pytest.raises(DataError, match="at least 2"):
        SFTDataset([ex("1", "2")], TOK)


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", "completion": "b"', "line 2: invalid JSON"),
    ('{"prompt": "a"}', 'line 2: no "completion" field'),
    ('{"completion": "a"}', 'line 2: no "prompt" field'),
    ('{"prompt": "a", "completion": ""}', 'line 2: empty "completion"'),
    ('{"prompt": 3, "completion": "b"}', 'line 2: "prompt" must be a string, got int'),
    ('{"prompt": "a", "completion": ["b"]}', 'line 2: "completion" must be a string, got list'),
    ('["a", "b"]', "line 2: expected a JSON object"),
])
def test_bad_lines_give_one_line_errors(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "1+1=", "completion": "2"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_sft_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_file_reading(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"prompt": "1+1=", "completion": "2", "id": 1}), "", json.dumps({"prompt": "", "completion": "ab"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = load_sft_file(path)
    assert [(e.prompt, e.completion, e.line) for e in examples] == [("1+1=", "2", 1), ("", "ab", 3)]
    with pytest.raises(DataError, match="holds no examples"):
        parse_sft_lines(["", "  "], name="empty.jsonl")
    with pytest.raises(DataError, match="not found"):
        load_sft_file(tmp_path / "missing.jsonl")
