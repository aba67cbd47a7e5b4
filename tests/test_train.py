"""Training machinery: data batches, checkpoints (round trip, atomic writes), exact resume,
and stopping on a non-finite loss."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models import train
from tensorlite.models.checkpoint import CheckpointError
from tensorlite.models.data import DataError, TokenDataset, encode_corpus, load_text, read_text_file
from tensorlite.models.gpt import GPT, GPTConfig
from tensorlite.models.tokenizer import CharTokenizer

from conftest import TINY_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_args(corpus_file, out_dir, *extra):
    return ["--data", corpus_file, *TINY_MODEL, "--eval-interval", "5", "--eval-iters", "2",
            "--log-interval", "1", "--warmup-iters", "3", "--lr-decay-iters", "20", "--no-progress",
            "--out-dir", str(out_dir), *extra]


def train_losses(metrics_path):
    """(iteration, loss) of every logged training step."""
    with open(metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [(r["iter"], r["loss"]) for r in records if r["event"] == "train"]


# ------------------------------------------------------------------------------------------
# data


def test_get_batch_shapes_targets_shifted_and_seeded():
    tokens = np.arange(1000, dtype=np.uint16)
    dataset = TokenDataset(tokens)
    assert len(dataset.train) == 900 and len(dataset.val) == 100
    x, y = dataset.get_batch("train", 5, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)  # the target of each position is the next token
    assert x.max() + 1 < 900  # windows (and their targets) stay inside the train split
    xv, _ = dataset.get_batch("val", 5, 16, np.random.default_rng(0))
    assert xv.min() >= 900
    x2, _ = dataset.get_batch("train", 5, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)


def test_default_corpus_is_pydoc_topics_in_sorted_key_order():
    from pydoc_data import topics

    text, name = load_text(None)
    assert "pydoc_data" in name
    first_key = sorted(topics.topics)[0]
    assert text.startswith(topics.topics[first_key])
    assert len(text) > 100_000
    tokenizer = CharTokenizer(text)
    ids = encode_corpus(text, tokenizer)
    assert ids.dtype == np.uint16 and len(ids) == len(text)
    assert tokenizer.decode(ids[:500]) == text[:500]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "is empty"),
        (b"some text\x00\x01\x02 more", "binary"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
    ],
)
def test_read_text_file_rejects_unusable_files(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text_file(path)


@pytest.mark.parametrize("length, block_size, split", [(50, 64, "train"), (300, 40, "val")])
def test_corpus_shorter_than_a_block_names_the_split(length, block_size, split):
    dataset = TokenDataset(np.zeros(length, dtype=np.uint16), name="tiny.txt")
    with pytest.raises(DataError, match=rf"^{split} split of tiny.txt has \d+ tokens"):
        dataset.check_block_size(block_size)


# ------------------------------------------------------------------------------------------
# checkpoints


def make_model_and_optimizer(seed=0):
    tl.manual_seed(seed)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    model = GPT(config)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.99))
    return config, model, optimizer


def take_steps(model, optimizer, rng, n):
    for _ in range(n):
        x = rng.integers(0, 11, size=(3, 8))
        _, loss = model(x, (x + 1) % 11)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_checkpoint_round_trip_is_exact(tmp_path):
    config, model, optimizer = make_model_and_optimizer()
    tokenizer = CharTokenizer("abcdefghijk")
    rng = np.random.default_rng(42)
    take_steps(model, optimizer, rng, 3)
    path = tmp_path / "ckpt.npz"
    ckpt_io.save(path, model, optimizer, config, tokenizer, rng.bit_generator.state, 3,
                 extra={"best_val_loss": 1.25, "note": "x", "table": np.arange(5.0)})

    loaded = ckpt_io.load(path)
    assert loaded.iteration == 3
    assert loaded.config == config.to_dict()
    assert loaded.tokenizer == tokenizer.to_dict()
    assert loaded.extra["best_val_loss"] == 1.25 and loaded.extra["note"] == "x"
    np.testing.assert_array_equal(loaded.extra["table"], np.arange(5.0))

    # A fresh model and optimizer (different init) take on the saved state exactly ...
    _, model2, optimizer2 = make_model_and_optimizer(seed=1)
    model2.load_state_dict(loaded.model_state)
    optimizer2.load_state_dict(loaded.optimizer_state)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = loaded.rng_state
    for name, value in model.state_dict().items():
        assert np.array_equal(model2.state_dict()[name], value), name
    saved_state, restored_state = optimizer.state_dict(), optimizer2.state_dict()
    assert restored_state["param_groups"] == saved_state["param_groups"]
    for index, state in saved_state["state"].items():
        assert restored_state["state"][index]["step"] == state["step"] == 3
        assert np.array_equal(restored_state["state"][index]["exp_avg"], state["exp_avg"])
        assert np.array_equal(restored_state["state"][index]["exp_avg_sq"], state["exp_avg_sq"])

    # ... so training on from both gives identical parameters.
    take_steps(model, optimizer, rng, 2)
    take_steps(model2, optimizer2, rng2, 2)
    for name, value in model.state_dict().items():
        assert np.array_equal(model2.state_dict()[name], value), name

    # No pickle anywhere: every member loads with allow_pickle=False and is a plain dtype.
    with np.load(path, allow_pickle=False) as archive:
        assert "meta.json" in archive.files
        assert all(archive[key].dtype != object for key in archive.files)


def test_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    config, model, optimizer = make_model_and_optimizer()
    tokenizer = CharTokenizer("abcdefghijk")
    path = tmp_path / "ckpt.npz"
    ckpt_io.save(path, model, optimizer, config, tokenizer, None, 1)
    before = path.read_bytes()

    def savez_that_dies(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_io.np, "savez", savez_that_dies)
    with pytest.raises(OSError, match="No space left"):
        ckpt_io.save(path, model, optimizer, config, tokenizer, None, 2)
    assert path.read_bytes() == before
    assert ckpt_io.load(path).iteration == 1
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # the temporary file was removed


KILL_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from tensorlite.models import checkpoint
    state = {{"w": np.ones((4, 4), np.float32)}}
    checkpoint.save({path!r}, state, None, {{"n": 1}}, {{"type": "char", "chars": ["a"]}}, None, 1)
    big = np.random.default_rng(0).random(40_000_000)  # 320 MB: the write takes a while
    print("saving", flush=True)
    checkpoint.save({path!r}, state, None, {{"n": 1}}, {{"type": "char", "chars": ["a"]}}, None, 2,
                    extra={{"big": big}})
    print("saved", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_process_killed_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD.format(root=ROOT, path=path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saving"
        # Kill it in the middle of writing the big archive: once the temporary file
        # holds some megabytes (or, on a very fast disk, whenever we get there).
        deadline = time.monotonic() + 20
        while child.poll() is None and time.monotonic() < deadline:
            partial = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
            if partial and os.path.getsize(tmp_path / partial[0]) > 8_000_000:
                break
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stdout.close()
    loaded = ckpt_io.load(path)
    # Whatever moment the kill hit, the file is a whole checkpoint: the old one, or the new
    # one if the save had already finished (then with the complete big array).
    if loaded.iteration == 1:
        assert "big" not in loaded.extra
    else:
        assert loaded.iteration == 2 and loaded.extra["big"].shape == (40_000_000,)
    np.testing.assert_array_equal(loaded.model_state["w"], np.ones((4, 4), np.float32))


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    config, model, optimizer = make_model_and_optimizer()
    path = tmp_path / "ckpt.npz"
    ckpt_io.save(path, model, optimizer, config, CharTokenizer("abcdefghijk"), None, 1)
    raw = path.read_bytes()
    for cut in (len(raw) // 3, len(raw) - 10, 100):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            ckpt_io.load(truncated)

    foreign = tmp_path / "foreign.npz"
    foreign.write_bytes(b"this is not a checkpoint at all\n" * 10)
    with pytest.raises(CheckpointError, match="not a tensorlite checkpoint"):
        ckpt_io.load(foreign)
    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="no meta.json"):
        ckpt_io.load(other_npz)
    with pytest.raises(CheckpointError, match="not found"):
        ckpt_io.load(tmp_path / "missing.npz")

    # A future format version is refused rather than misread.
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(np.load(archive.open("meta.json.npy")).tobytes())
    meta["version"] = 99
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    future = tmp_path / "future.npz"
    np.savez(future, **arrays)
    with pytest.raises(CheckpointError, match="unsupported checkpoint format version 99"):
        ckpt_io.load(future)


# ------------------------------------------------------------------------------------------
# the training loop


def test_resume_continues_bit_for_bit(corpus_file, tmp_path, capsys):
    """100 iterations, resume, 100 more == 200 iterations in one run: parameters, optimizer
    state, generator states and every logged loss identical. Dropout and gradient
    accumulation are on, so both random generators and the micro-batch loop are covered;
    the schedule (warmup, cosine decay over 200 steps) is the same in both runs."""
    common = ["--dropout", "0.1", "--grad-accum", "2", "--lr-decay-iters", "200", "--eval-interval", "30"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(run_args(corpus_file, straight, *common, "--max-iters", "200")) == 0
    assert train.main(run_args(corpus_file, split, *common, "--max-iters", "100")) == 0
    assert ckpt_io.load(split / "ckpt.npz").iteration == 100
    assert train.main(["--out-dir", str(split), "--resume", "--max-iters", "200", "--no-progress"]) == 0
    assert "resuming from" in capsys.readouterr().out

    a, b = ckpt_io.load(straight / "ckpt.npz"), ckpt_io.load(split / "ckpt.npz")
    assert a.iteration == b.iteration == 200
    assert a.model_state.keys() == b.model_state.keys()
    for name in a.model_state:
        assert np.array_equal(a.model_state[name], b.model_state[name]), name
    for index, state in a.optimizer_state["state"].items():
        other = b.optimizer_state["state"][index]
        assert state["step"] == other["step"] == 200
        assert np.array_equal(state["exp_avg"], other["exp_avg"])
        assert np.array_equal(state["exp_avg_sq"], other["exp_avg_sq"])
    assert a.rng_state == b.rng_state
    assert a.extra["best_val_loss"] == b.extra["best_val_loss"]

    losses_straight = train_losses(straight / "metrics.jsonl")
    losses_split = train_losses(split / "metrics.jsonl")  # appended to by the resumed run
    assert [it for it, _ in losses_split] == list(range(1, 201))
    assert losses_split == losses_straight  # exact float equality, all 200 steps
    # and the run did learn something
    first, last = np.mean([loss for _, loss in losses_straight[:10]]), np.mean([loss for _, loss in losses_straight[-10:]])
    assert last < first - 0.5


def test_nan_loss_stops_with_exit_3_and_keeps_the_checkpoint(corpus_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train.main(run_args(corpus_file, out, "--max-iters", "5")) == 0
    checkpoint_bytes = (out / "ckpt.npz").read_bytes()
    capsys.readouterr()

    # From the third forward on, the loss is NaN (as after an exploding update).
    original_forward = GPT.forward
    calls = {"n": 0}

    def forward_going_nan(self, idx, targets=None):
        logits, loss = original_forward(self, idx, targets)
        if loss is not None and self.training:  # training forwards only, not evaluation
            calls["n"] += 1
            if calls["n"] > 2:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward_going_nan)
    code = train.main(["--out-dir", str(out), "--resume", "--max-iters", "20", "--no-progress"])
    err = capsys.readouterr().err
    assert code == train.EXIT_NONFINITE == 3
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "nan" in err and "iteration 7" in err and "left untouched" in err
    assert (out / "ckpt.npz").read_bytes() == checkpoint_bytes


def test_nan_in_first_run_writes_no_checkpoint(corpus_file, tmp_path, capsys, monkeypatch):
    original_forward = GPT.forward

    def forward_nan(self, idx, targets=None):
        logits, loss = original_forward(self, idx, targets)
        return logits, (loss * float("nan") if loss is not None else None)

    monkeypatch.setattr(GPT, "forward", forward_nan)
    out = tmp_path / "run"
    assert train.main(run_args(corpus_file, out, "--max-iters", "5")) == 3
    assert "no checkpoint was written" in capsys.readouterr().err
    assert not (out / "ckpt.npz").exists()


@pytest.mark.parametrize("preset", sorted(train.PRESETS))
def test_a_preset_decays_over_the_max_iters_given(preset):
    # --help: --lr-decay-iters defaults to --max-iters, with or without a preset
    assert "lr_decay_iters" not in train.PRESETS[preset]
    assert train.resolve_settings({"max_iters": 600}, preset=preset)["lr_decay_iters"] == 600
    settings = train.resolve_settings({"max_iters": 600, "lr_decay_iters": 400}, preset=preset)
    assert settings["lr_decay_iters"] == 400  # still settable explicitly
    # a resumed run keeps the horizon it was started with
    resumed = train.resolve_settings({"max_iters": 900}, preset=preset, saved={"lr_decay_iters": 600})
    assert resumed["lr_decay_iters"] == 600


def test_presets_and_explicit_flags(tmp_path):
    settings = train.resolve_settings({"n_layer": 3, "lr": 5e-4}, preset="shakespeare-cpu")
    assert settings["n_layer"] == 3 and settings["lr"] == 5e-4  # explicit flags win
    assert settings["n_head"] == 4 and settings["n_embd"] == 128 and settings["block_size"] == 64
    assert settings["batch_size"] == 12 and settings["max_iters"] == 2000 and settings["lr_decay_iters"] == 2000
    assert (settings["beta1"], settings["beta2"], settings["weight_decay"], settings["grad_clip"]) == (0.9, 0.99, 0.1, 1.0)
    assert settings["eval_interval"] == 250 and settings["eval_iters"] == 200 and settings["min_lr"] == 1e-4
    tiny = train.resolve_settings({"out_dir": str(tmp_path)}, preset="tiny")
    assert tiny["metrics"] == os.path.join(str(tmp_path), "metrics.jsonl")
    assert (tiny["n_layer"], tiny["n_head"], tiny["n_embd"], tiny["block_size"]) == (2, 2, 64, 32)


def test_progress_line_only_on_a_terminal(corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    with_progress = [a for a in run_args(corpus_file, tmp_path / "a", "--max-iters", "3") if a != "--no-progress"]
    assert train.main(with_progress) == 0
    assert "\r" in capsys.readouterr().out
    assert train.main(run_args(corpus_file, tmp_path / "b", "--max-iters", "3")) == 0
    assert "\r" not in capsys.readouterr().out


def test_remove_stale_temp_files_takes_only_the_leftovers_of_that_checkpoint(tmp_path):
    for name in (".ckpt.npz.abc123.tmp", ".ckpt.npz.x.tmp", ".best.npz.y.tmp", "ckpt.npz", "notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    removed = ckpt_io.remove_stale_temp_files(tmp_path / "ckpt.npz")
    assert sorted(os.path.basename(p) for p in removed) == [".ckpt.npz.abc123.tmp", ".ckpt.npz.x.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".best.npz.y.tmp", "ckpt.npz", "notes.tmp"]


def test_metrics_writer_stops_at_a_full_disk_with_whole_lines(tmp_path, monkeypatch):
    warnings = []
    writer = train.MetricsWriter(tmp_path / "m.jsonl", append=False, warn=warnings.append)
    writer.write(event="train", iter=1)
    real_write = os.write

    def half_write(fd, data):  # the disk fills in the middle of the second record
        real_write(fd, data[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_write)
    writer.write(event="train", iter=2)
    writer.write(event="train", iter=3)  # no second warning, no second attempt
    writer.close()
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [
        {"event": "train", "iter": 1}]


def test_settings_saved_in_a_checkpoint_are_type_checked():
    settings = train.resolve_settings({})
    train.validate_settings(settings)
    for key, value in [("lr", "abc"), ("n_layer", 2.0), ("bias", 1), ("tokenizer", "word"), ("data", 5)]:
        with pytest.raises(train.UsageError, match=rf"^settings\.{key} must"):
            train.validate_settings(dict(settings, **{key: value}), name=lambda k: f"settings.{k}")


def test_the_readme_sft_example_data_ships_and_fits_the_pretrained_vocabulary():
    # README: tensorlite-train --init-from out-pretrain/ckpt.npz --data-format sft
    #         --data benchmarks/sft_addition/qa.jsonl --out-dir out-sft
    import importlib.util

    from tensorlite.models.sft import load_sft_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, "benchmarks", "sft_addition")
    examples = load_sft_file(os.path.join(folder, "qa.jsonl"))
    spec = importlib.util.spec_from_file_location("sft_addition_run", os.path.join(folder, "run.py"))
    run_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_py)
    train_pairs, test_pairs = run_py.addition_problems(1337, 500)  # run.py's defaults
    pairs = [(e.prompt, e.completion) for e in examples]
    assert pairs == train_pairs[:run_py.QA_SAMPLE_SIZE]  # what `run.py --write-qa` writes
    assert not set(pairs) & set(test_pairs)
    # the pretraining corpus (the built-in one, as in the README's first step) has every character
    corpus, _ = load_text(None)
    assert set("".join(p + c for p, c in pairs)) <= set(corpus)


def test_gradient_checkpointing_flag_trains_the_same_run(corpus_file, tmp_path):
    """--gradient-checkpointing recomputes each block in backward with the same operations in
    the same order, so the run is the same to the bit (dropout on: the recomputation draws the
    same masks); it is a per-invocation choice, not saved for --resume."""
    from tensorlite.models.trainer import saved_settings

    common = ["--dropout", "0.1", "--max-iters", "6"]
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    assert train.main(run_args(corpus_file, plain, *common)) == 0
    assert train.main(run_args(corpus_file, checkpointed, *common, "--gradient-checkpointing")) == 0
    a, b = ckpt_io.load(plain / "ckpt.npz"), ckpt_io.load(checkpointed / "ckpt.npz")
    for name in a.model_state:
        np.testing.assert_array_equal(b.model_state[name], a.model_state[name], err_msg=name)
    assert train_losses(checkpointed / "metrics.jsonl") == train_losses(plain / "metrics.jsonl")
    assert "gradient_checkpointing" not in saved_settings(b, checkpointed / "ckpt.npz")
