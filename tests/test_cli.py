"""The command-line tools: every kind of bad input is one line on stderr and exit code 2,
with no traceback and nothing written; the good paths train and sample."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tensorlite.models import sample, train

from conftest import QUICK, TINY_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained_dir(corpus_file, tmp_path_factory):
    """A checkpoint of a tiny model after 4 steps (read-only for the tests below)."""
    out = tmp_path_factory.mktemp("trained")
    assert train.main(["--data", corpus_file, *TINY_MODEL, *QUICK, "--max-iters", "4", "--out-dir", str(out)]) == 0
    return out


def snapshot(directory):
    """File name -> bytes of everything under a directory (to prove nothing was written)."""
    if not os.path.exists(directory):
        return None
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def call(main, argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code, err, prog, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------------------------------------
# tensorlite-train: bad input


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


BAD_DATA = [
    ("missing", None, [], "data file not found"),
    ("empty", b"", [], "data file is empty"),
    ("nul-bytes", b"text\x00\x00\x01binary", [], "looks binary"),
    ("not-utf8", b"\xff\xfe\xfa latin-1 \xe9", [], "not valid UTF-8"),
    ("too-short", "abc" * 10, ["--block-size", "64"], "train split"),
    ("val-too-short", "hello world. " * 23, ["--block-size", "40"], "val split"),
]


@pytest.mark.parametrize("label, content, flags, message", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_train_rejects_bad_data(tmp_path, capsys, label, content, flags, message):
    data = str(tmp_path / "input.txt") if content is None else write(tmp_path / "input.txt", content)
    out = tmp_path / "out"
    argv = ["--data", data, "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--max-iters", "2", *flags,
            "--out-dir", out]
    code, stdout, err = call(train.main, argv, capsys)
    assert_usage_error(code, err, "tensorlite-train", message)
    assert not out.exists()  # nothing was created


def test_train_rejects_a_directory_as_data(tmp_path, capsys):
    code, _, err = call(train.main, ["--data", tmp_path, "--out-dir", tmp_path / "out"], capsys)
    assert_usage_error(code, err, "tensorlite-train", "is a directory")


BAD_SIZES = [
    (["--n-embd", "30", "--n-head", "4"], "--n-embd (30) must be divisible by --n-head (4)"),
    (["--n-layer", "0"], "--n-layer must be a positive integer, got 0"),
    (["--n-head", "-2"], "--n-head must be a positive integer"),
    (["--block-size", "0"], "--block-size must be a positive integer"),
    (["--batch-size", "-1"], "--batch-size must be a positive integer"),
    (["--grad-accum", "0"], "--grad-accum must be a positive integer"),
    (["--max-iters", "-5"], "--max-iters must be zero or positive"),
    (["--eval-iters", "0"], "--eval-iters must be a positive integer"),
    (["--lr", "0"], "--lr must be greater than 0"),
    (["--lr", "-0.001"], "--lr must be a finite number"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--beta2", "1.0"], "--beta2 must be in [0, 1)"),
    (["--warmup-iters", "50", "--lr-decay-iters", "10"], "--lr-decay-iters (10) must be >= --warmup-iters (50)"),
    (["--tokenizer", "bpe", "--bpe-vocab-size", "100"], "--bpe-vocab-size must be at least 256"),
]


@pytest.mark.parametrize("flags, message", BAD_SIZES, ids=[" ".join(f) for f, _ in BAD_SIZES])
def test_train_rejects_impossible_settings(corpus_file, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code, _, err = call(train.main, ["--data", corpus_file, "--out-dir", out, *flags], capsys)
    assert_usage_error(code, err, "tensorlite-train", message)
    assert not out.exists()


def test_argparse_errors_exit_2(capsys):
    code, _, err = call(train.main, ["--n-layer", "two"], capsys)
    assert code == 2 and "invalid int value" in err and "Traceback" not in err
    code, _, err = call(train.main, ["--no-such-flag"], capsys)
    assert code == 2 and "unrecognized arguments" in err


# ------------------------------------------------------------------------------------------
# tensorlite-train --resume: checkpoints that do not fit


@pytest.fixture
def resumable(trained_dir, tmp_path):
    """A private copy of the trained run directory."""
    out = tmp_path / "run"
    out.mkdir()
    for name, content in snapshot(trained_dir).items():
        (out / name).write_bytes(content)
    return out


def test_resume_without_a_checkpoint(tmp_path, capsys):
    code, _, err = call(train.main, ["--resume", "--out-dir", tmp_path / "empty"], capsys)
    assert_usage_error(code, err, "tensorlite-train", "checkpoint not found")


def test_resume_with_conflicting_model_flags(resumable, corpus_file, capsys):
    before = snapshot(resumable)
    argv = ["--resume", "--out-dir", resumable, "--data", corpus_file, "--n-layer", "3", "--n-embd", "32"]
    code, _, err = call(train.main, argv, capsys)
    assert_usage_error(code, err, "tensorlite-train", "does not match", "--n-layer 3 (checkpoint has 1)",
                       "--n-embd 32 (checkpoint has 16)")
    assert snapshot(resumable) == before


def test_resume_with_a_different_tokenizer(resumable, capsys):
    before = snapshot(resumable)
    code, _, err = call(train.main, ["--resume", "--out-dir", resumable, "--tokenizer", "bpe"], capsys)
    assert_usage_error(code, err, "tensorlite-train", "--tokenizer bpe (checkpoint has char)")
    assert snapshot(resumable) == before


def test_resume_on_data_with_a_different_vocabulary(resumable, tmp_path, capsys):
    before = snapshot(resumable)
    other = write(tmp_path / "other.txt", "completely different letters ~~ \u00e9\u00e8 " * 200)
    code, _, err = call(train.main, ["--resume", "--out-dir", resumable, "--data", other], capsys)
    assert_usage_error(code, err, "tensorlite-train", "different character vocabulary")
    assert snapshot(resumable) == before


@pytest.mark.parametrize("damage, message", [("truncate", "truncated or corrupt"),
                                             ("foreign", "not a tensorlite checkpoint")])
def test_resume_from_a_damaged_checkpoint(resumable, capsys, damage, message):
    path = resumable / "ckpt.npz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"#!/bin/sh\necho hello\n")
    before = snapshot(resumable)
    code, _, err = call(train.main, ["--resume", "--out-dir", resumable], capsys)
    assert_usage_error(code, err, "tensorlite-train", message)
    assert snapshot(resumable) == before


# ------------------------------------------------------------------------------------------
# tensorlite-train: good paths


def test_train_on_the_default_corpus_and_print_a_sample(tmp_path, capsys):
    argv = [*TINY_MODEL, *QUICK, "--max-iters", "2", "--sample-tokens", "30", "--out-dir", tmp_path]
    code, out, err = call(train.main, argv, capsys)
    assert code == 0, err
    assert "pydoc_data.topics" in out  # no --data: the built-in corpus
    assert "kernels=" in out and "parameters" in out  # runtime info and parameter count
    assert "iter 2: loss" in out and "tokens/s" in out and "mfu" in out
    assert "step 2: train loss" in out and "val loss" in out
    assert "sample:" in out
    assert (tmp_path / "ckpt.npz").exists() and (tmp_path / "metrics.jsonl").exists()


# ------------------------------------------------------------------------------------------
# tensorlite-sample


def test_sample_prints_prompt_and_continuation_reproducibly(trained_dir, capsys):
    argv = ["--checkpoint", trained_dir / "ckpt.npz", "--prompt", "The ", "--num-tokens", "40", "--seed", "7"]
    code, first, err = call(sample.main, argv, capsys)
    assert code == 0, err
    assert first.startswith("The ") and len(first) == len("The ") + 40 + 1  # char tokens, plus newline
    code, again, _ = call(sample.main, argv, capsys)
    assert again == first
    code, other, _ = call(sample.main, [*argv[:-1], "8"], capsys)
    assert other != first
    code, top, err = call(sample.main, [*argv, "--top-k", "1"], capsys)
    code, greedy, err = call(sample.main, [*argv, "--temperature", "0"], capsys)
    assert code == 0 and top == greedy  # top-1 sampling is the argmax


@pytest.mark.parametrize("damage, message", [("missing", "checkpoint not found"),
                                             ("truncate", "truncated or corrupt"),
                                             ("foreign", "not a tensorlite checkpoint")])
def test_sample_rejects_bad_checkpoints(trained_dir, tmp_path, capsys, damage, message):
    path = tmp_path / "ckpt.npz"
    raw = (trained_dir / "ckpt.npz").read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) - 100])
    elif damage == "foreign":
        np.save(tmp_path / "array.npy", np.zeros(4))
        path.write_bytes((tmp_path / "array.npy").read_bytes())
    code, out, err = call(sample.main, ["--checkpoint", path], capsys)
    assert_usage_error(code, err, "tensorlite-sample", message)
    assert out == ""


@pytest.mark.parametrize("flags, message", [
    (["--prompt", "snow \u2603 man"], "1 character(s) not in the checkpoint's vocabulary: '\u2603'"),
    (["--prompt", ""], "--prompt is empty"),
    (["--num-tokens", "-1"], "--num-tokens must be zero or positive"),
    (["--temperature", "-0.5"], "--temperature must be a finite number >= 0"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
])
def test_sample_rejects_bad_settings(trained_dir, capsys, flags, message):
    code, out, err = call(sample.main, ["--checkpoint", trained_dir / "ckpt.npz", *flags], capsys)
    assert_usage_error(code, err, "tensorlite-sample", message)
    assert out == ""


# ------------------------------------------------------------------------------------------
# the real console entry points, in a fresh process


def test_console_entry_points_exit_2_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for module, argv in [("tensorlite.models.train", ["--data", str(tmp_path / "missing.txt")]),
                         ("tensorlite.models.sample", ["--checkpoint", str(tmp_path / "missing.npz")])]:
        result = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(error_lines) == 1 and "not found" in error_lines[0], result.stderr
    assert os.listdir(tmp_path) == []
