"""Hostile input files and values, at the command line: JSON nested 100,000 deep, integers of
5000 digits, lone surrogates ("\\ud800"). Each ends in one line on stderr and exit code 2, never
a traceback or a crash later while sampling (models/jsonio.py and the readers that use it)."""

import os
import subprocess
import sys

import pytest

from models import checkpoint as ckpt_io
from models import plot, train
from models.tokenizer import CharTokenizer

from conftest import TINY_MODEL
from test_reliability import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" * 5000  # past Python's 4300-digit int-string conversion limit


def call(main, argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------
# SFT data (tensorlite-train --data-format sft) and vocabularies with lone surrogates

# (with an escaped surrogate pair, one astral character: text, unlike a lone half)
GOOD_LINE = '{"prompt": "1+1=", "completion": "2", "note": "\\ud83d\\ude42"}'


@pytest.mark.parametrize("bad_line, fragment", [
    (DEEP, "line 2: invalid JSON (arrays or objects nested too deeply"),
    ('{"prompt": "1+1=", "completion": "2", "id": ' + HUGE_INT + "}", "line 2: invalid JSON (an integer with more than"),
    ('{"prompt": "a\\ud800b", "completion": "2"}', "line 2: the string at ['prompt'] holds a lone surrogate U+D800 at character 1"),
    ('{"prompt": "1+1=", "completion": "\\udfff"}', "line 2: the string at ['completion'] holds a lone surrogate U+DFFF at character 0"),
], ids=["deep", "huge-int", "surrogate-prompt", "surrogate-completion"])
def test_hostile_sft_lines_are_one_line_errors(tmp_path, capsys, bad_line, fragment):
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join([GOOD_LINE, bad_line, GOOD_LINE]) + "\n", encoding="utf-8")
    code, _, err = call(train.main, ["--data-format", "sft", "--data", data, *TINY_MODEL, "--max-iters", "1",
                                     "--no-progress", "--out-dir", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", f"{data} {fragment}")
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_whose_vocabulary_holds_a_surrogate_is_refused_not_printed(tmp_path):
    """A char checkpoint trained on such data before it was refused: one line, not a
    UnicodeEncodeError from the middle of tensorlite-sample's output."""
    from models.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8)
    ckpt_io.save(tmp_path / "c.npz", GPT(config), optimizer=None, config=config,
                 tokenizer={"type": "char", "chars": ["a", "b", "\ud800"]}, rng_state=None, iteration=0)
    result = subprocess.run([sys.executable, "-m", "models.sample", "--checkpoint", str(tmp_path / "c.npz"),
                             "--num-tokens", "20", "--prompt", "a"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert_one_line_error(result.returncode, result.stderr, 2, "tensorlite-sample", "lone surrogate", "U+D800")


def test_a_char_tokenizer_dict_with_a_surrogate_is_refused():
    with pytest.raises(ValueError, match=r"character '\\ud800' \(U\+D800\) at position 1 is a lone surrogate"):
        CharTokenizer.from_dict({"type": "char", "chars": ["a", "\ud800"]})


# ------------------------------------------------------------------------------------------
# metrics.jsonl (tensorlite-plot)

TRAIN_LINE = '{"event": "train", "iter": 1, "loss": 2.0, "lr": 0.001}'


@pytest.mark.parametrize("bad_line, fragment", [
    (DEEP, "line 2: invalid JSON (arrays or objects nested too deeply"),
    ('{"event": "train", "iter": 2, "loss": ' + HUGE_INT + "}", "line 2: invalid JSON (an integer with more than"),
    ('{"event": "train", "iter": 1' + "0" * 400 + ', "loss": 1.0}', 'line 2: not a metrics record (no integer "iter" from 0 to'),
], ids=["deep", "huge-int", "400-digit-iter"])
def test_hostile_metrics_files(tmp_path, capsys, bad_line, fragment):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([TRAIN_LINE, bad_line]) + "\n", encoding="utf-8")
    (tmp_path / "loss.png").write_bytes(b"old")
    code, _, err = call(plot.main, [path, "-o", tmp_path / "loss.png"], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-plot", f"{path} {fragment}")
    assert (tmp_path / "loss.png").read_bytes() == b"old"


def test_a_number_too_large_for_a_float_is_skipped_like_nan(tmp_path, capsys):
    """A 400-digit loss, lr or token count is no point on the plot (as NaN is), not an OverflowError."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "metrics.jsonl"
    big = "1" + "0" * 400
    path.write_text("\n".join([
        TRAIN_LINE,
        '{"event": "train", "iter": 2, "loss": ' + big + ', "lr": ' + big + ', "tokens": ' + big + "}",
        '{"event": "train", "iter": 3, "loss": NaN, "lr": 0.001}',
    ]) + "\n", encoding="utf-8")
    code, _, err = call(plot.main, [path, "--tokens-per-iter", "64", "-o", tmp_path / "loss.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    train_records, _ = plot.read_metrics(path)
    assert plot._values(train_records, "loss") == ([1], [2.0])
