"""Hostile input files and values, at the command line: JSON nested 100,000 deep, integers of
5000 digits, lone surrogates ("\\ud800"), GPT-2 vocabularies that do not number their symbols or
merges that name unknown ones, and an HF config.json asking for a million layers. Each ends in
one line on stderr and exit code 2, never a traceback, minutes of work, or a crash later while
sampling (models/jsonio.py and the readers that use it)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models import convert, plot, train
from tensorlite.models.tokenizer import CharTokenizer

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
    from tensorlite.models.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8)
    ckpt_io.save(tmp_path / "c.npz", GPT(config), optimizer=None, config=config,
                 tokenizer={"type": "char", "chars": ["a", "b", "\ud800"]}, rng_state=None, iteration=0)
    result = subprocess.run([sys.executable, "-m", "tensorlite.models.sample", "--checkpoint", str(tmp_path / "c.npz"),
                             "--num-tokens", "20", "--prompt", "a"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert_one_line_error(result.returncode, result.stderr, 2, "tensorlite-sample", "lone surrogate", "U+D800")


def test_a_char_tokenizer_dict_with_a_surrogate_is_refused():
    with pytest.raises(ValueError, match=r"character '\\ud800' \(U\+D800\) at position 1 is a lone surrogate"):
        CharTokenizer.from_dict({"type": "char", "chars": ["a", "\ud800"]})


# ------------------------------------------------------------------------------------------
# tensorlite-convert --from-hf: config.json, vocab.json, tensorlite_tokenizer.json


@pytest.fixture
def hf_dir(tmp_path):
    pytest.importorskip("safetensors.numpy")
    from test_hf import hf_tensors, write_hf_dir

    return write_hf_dir(tmp_path / "m", hf_tensors(np.random.default_rng(0)))


def convert_from(capsys, directory, *extra):
    out = directory.parent / "out.npz"
    code, _, err = call(convert.main, ["--from-hf", directory, "--out", out, *extra], capsys)
    assert not out.exists()
    return code, err


def replace_in_config(directory, field, raw_value):
    """Set ``field`` of config.json to ``raw_value``, JSON text written as is."""
    path = directory / "config.json"
    text = path.read_text(encoding="utf-8")
    current = json.dumps(json.loads(text)[field])
    path.write_text(text.replace(f'"{field}": {current}', f'"{field}": {raw_value}', 1), encoding="utf-8")


@pytest.mark.parametrize("field, raw_value, fragment", [
    ("n_embd", HUGE_INT, "config.json: invalid JSON (an integer with more than"),
    ("n_inner", DEEP, "config.json: invalid JSON (arrays or objects nested too deeply"),
    ("n_layer", "1" + "0" * 1000, "n_layer must be an integer from 1 to"),
    ("vocab_size", "1" + "0" * 4000, "vocab_size must be an integer from 1 to"),
], ids=["huge-int", "deep", "1001-digit-layers", "4001-digit-vocab"])
def test_hostile_config_json(hf_dir, capsys, field, raw_value, fragment):
    replace_in_config(hf_dir, field, raw_value)
    code, err = convert_from(capsys, hf_dir)
    assert_one_line_error(code, err, 2, "tensorlite-convert", fragment)


def test_a_million_layers_is_refused_before_any_tensor_is_read(hf_dir, capsys, monkeypatch):
    """The memory check comes first: not a 12-million-entry table of expected tensors, then a
    'missing tensor' after the whole file was read."""
    from tensorlite.models import hf

    def read_safetensors(path):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(hf, "_read_safetensors", read_safetensors)
    monkeypatch.setattr("tensorlite.models.gpt_config.available_memory", lambda: 8 << 30)  # 8 GiB, whatever the host has
    replace_in_config(hf_dir, "n_layer", str(10 ** 6))
    code, err = convert_from(capsys, hf_dir)
    assert_one_line_error(code, err, 2, "tensorlite-convert", "config.json", "n_layer 1000000", "8.0 GiB of available memory")


def gpt2_files(directory, vocab_text, merges="#version: 0.2\nĠ t\n"):
    (directory / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (directory / "merges.txt").write_text(merges, encoding="utf-8")


def byte_vocab():
    from tensorlite.models.gpt2_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values()) + ["Ġt"]
    return {s: i for i, s in enumerate(symbols)}  # 257 symbols, ids 0..256


def _vocab(change):
    vocab = byte_vocab()
    change(vocab)
    return json.dumps(vocab, ensure_ascii=False)


GPT2_CASES = {
    "deep": (DEEP, None, "vocab.json: invalid JSON (arrays or objects nested too deeply"),
    "huge-int": ('{"a": ' + HUGE_INT + "}", None, "vocab.json: invalid JSON (an integer with more than"),
    "missing-id": (_vocab(lambda v: v.update({"Ġt": 300})), None,
                   "vocab.json: entry 'Ġt': id 300 is outside 0..256"),
    "duplicate-id": (_vocab(lambda v: v.update({"Ġt": 5})), None, "vocab.json: entry 'Ġt': id 5 is also the id of '&'"),
    "string-id": (_vocab(lambda v: v.update({"Ġt": "256"})), None, "vocab.json: entry 'Ġt': id '256' is not an integer"),
    "bool-id": (_vocab(lambda v: v.update({"Ġt": True})), None, "vocab.json: entry 'Ġt': id True is not an integer"),
    "surrogate-symbol": (_vocab(lambda v: v.update({"Ġt": 256})).replace('"Ġt"', '"\\ud800"'), None,
                         "vocab.json: the key '\\ud800' at the top level holds a lone surrogate U+D800"),
    "unknown-part": (_vocab(lambda v: None), "#version: 0.2\nĠ t\nq ☃\n", "merges.txt line 3: merge 'q ☃' names the symbol '☃'"),
    "unknown-result": (_vocab(lambda v: None), "#version: 0.2\nĠ t\nt t\n", "merges.txt line 3: merge 't t' names its result 'tt'"),
}


@pytest.mark.parametrize("case", list(GPT2_CASES))
def test_gpt2_tokenizer_files_are_checked_for_meaning(tmp_path, capsys, case):
    pytest.importorskip("regex")
    pytest.importorskip("safetensors.numpy")
    from test_hf import C, hf_config, hf_tensors, write_hf_dir

    tensors = hf_tensors(np.random.default_rng(0))
    tensors["transformer.wte.weight"] = np.zeros((257, C), np.float32)  # the model fits the 257 symbols
    hf_dir = write_hf_dir(tmp_path / "m", tensors, config=hf_config(vocab_size=257), tokenizer=False)
    vocab_text, merges, fragment = GPT2_CASES[case]
    gpt2_files(hf_dir, vocab_text, **({"merges": merges} if merges else {}))
    code, err = convert_from(capsys, hf_dir, "--gpt2-tokenizer")
    assert_one_line_error(code, err, 2, "tensorlite-convert", os.path.join(str(hf_dir), ""), fragment)


@pytest.mark.parametrize("content, fragment", [
    (DEEP, "tensorlite_tokenizer.json: invalid JSON (arrays or objects nested too deeply"),
    ('{"type": "char", "chars": ["a", "\\ud800"]}', "tensorlite_tokenizer.json: the string at ['chars'][1] holds a lone surrogate"),
], ids=["deep", "surrogate"])
def test_hostile_tensorlite_tokenizer_json(hf_dir, capsys, content, fragment):
    (hf_dir / "tensorlite_tokenizer.json").write_text(content, encoding="utf-8")
    code, err = convert_from(capsys, hf_dir)
    assert_one_line_error(code, err, 2, "tensorlite-convert", fragment)


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
