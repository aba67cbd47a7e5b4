"""Reliability of the trainer and the sampler under hostile conditions: a kill -9 inside a
save, a full disk under the checkpoint and under the metrics file, hand-edited checkpoints,
and flags or files that ask for more than the machine has. Each ends in one clear line and
the documented exit code, never in a traceback, a lost run or silent garbage."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models import data, sample, train, trainer

from conftest import QUICK, TINY_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_args(corpus_file, out_dir, *extra):
    return ["--data", corpus_file, *TINY_MODEL, *QUICK, "--out-dir", str(out_dir), *extra]


@pytest.fixture(scope="module")
def trained_dir(corpus_file, tmp_path_factory):
    """A tiny run of 4 iterations: ckpt.npz, best.npz, metrics.jsonl (read-only for the tests)."""
    out = tmp_path_factory.mktemp("trained")
    assert train.main(train_args(corpus_file, out, "--max-iters", "4")) == 0
    return out


@pytest.fixture
def run_copy(trained_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_dir, out)
    return out


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def call(main, argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, expected_code, prog, *fragments):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if ": warning: " not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# kill -9 inside a save

KILLED_IN_SAVE = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from tensorlite.models import checkpoint, train

    real_savez, calls = checkpoint.np.savez, []

    def savez(file, **arrays):
        calls.append(1)
        if len(calls) == 3:  # ckpt.npz at iteration 4 (iteration 2 wrote ckpt.npz and best.npz)
            file.write(b"PK half an archive")
            file.flush()
            print("inside the save", flush=True)
            time.sleep(600)
        real_savez(file, **arrays)

    checkpoint.np.savez = savez
    sys.exit(train.main({argv!r}))
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_inside_a_save_loses_nothing_and_the_next_run_cleans_up(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_args(corpus_file, out, "--max-iters", "6", "--kernels", "numpy")  # numpy: no JIT in the child
    child = subprocess.Popen([sys.executable, "-c", KILLED_IN_SAVE.format(root=ROOT, argv=argv)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in child.stdout:
            if line.strip() == "inside the save":
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(temp_files(out)) == 1  # the half-written archive of the killed save
    assert ckpt_io.load(out / "ckpt.npz").iteration == 2  # the previous checkpoint is whole

    code, stdout, err = call(train.main, ["--resume", "--out-dir", out, "--max-iters", "6", "--no-progress"], capsys)
    assert code == 0, err
    assert "removed 1 temporary file(s) left by an interrupted save" in stdout
    assert temp_files(out) == []
    assert ckpt_io.load(out / "ckpt.npz").iteration == 6


# ------------------------------------------------------------------------------------------
# a full disk (a small tmpfs; skipped where the test cannot mount one)


@pytest.fixture
def small_disk(tmp_path):
    """mount_at(size_in_bytes) -> a directory on a tmpfs of that size; unmounted afterwards."""
    mounted = []

    def mount_at(size):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        size = max(4096, -(-size // 4096) * 4096)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    yield mount_at
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_full_disk_under_the_checkpoint_keeps_the_previous_one(trained_dir, small_disk, capsys):
    size = os.path.getsize(trained_dir / "ckpt.npz")
    # Room for the run as it is plus half a checkpoint: the next save runs out of space.
    disk = small_disk(sum(os.path.getsize(trained_dir / n) for n in os.listdir(trained_dir)) + size // 2 + 8192)
    out = disk / "run"
    shutil.copytree(trained_dir, out)
    before = (out / "ckpt.npz").read_bytes()

    code, _, err = call(train.main, ["--resume", "--out-dir", out, "--max-iters", "8", "--no-progress"], capsys)
    assert_one_line_error(code, err, 1, "tensorlite-train", "cannot write the checkpoint", "No space left on device",
                          "holds iteration 4 (continue with --resume)")
    assert (out / "ckpt.npz").read_bytes() == before
    assert temp_files(out) == []


def metrics_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]  # fails unless every line is whole


def test_full_disk_under_the_metrics_is_a_warning_not_a_checkpoint_failure(corpus_file, tmp_path, small_disk, capsys):
    metrics = small_disk(4096) / "metrics.jsonl"  # room for about 20 records
    out = tmp_path / "run"
    argv = train_args(corpus_file, out, "--max-iters", "24", "--eval-interval", "6", "--metrics", metrics)
    code, _, err = call(train.main, argv, capsys)
    assert code == 0, err
    assert "Traceback" not in err and "checkpoint" not in err
    warnings = err.strip().splitlines()
    assert len(warnings) == 1 and "warning: cannot write metrics" in warnings[0]
    assert "No space left on device" in warnings[0]
    assert 0 < len(metrics_records(metrics)) < 24 + 5  # the records of 24 steps and 5 evaluations
    assert ckpt_io.load(out / "ckpt.npz").iteration == 24


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_metrics_on_dev_full(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = call(train.main, train_args(corpus_file, out, "--max-iters", "3", "--metrics", "/dev/full"), capsys)
    assert code == 0, err
    assert "Traceback" not in err and err.count("warning: cannot write metrics to /dev/full") == 1
    assert ckpt_io.load(out / "ckpt.npz").iteration == 3


# ------------------------------------------------------------------------------------------
# hostile checkpoints, generated from a good one


def rewrite(source, target, edit):
    """Copy checkpoint ``source`` to ``target`` with ``edit(meta, arrays)`` applied."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays.pop("meta.json").tobytes())
    edit(meta, arrays)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(target, **arrays)


def set_meta(*keys, value):
    def edit(meta, arrays):
        node = meta
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def set_array(name, change):
    def edit(meta, arrays):
        arrays[name] = change(arrays[name])
    return edit


def drop_array(name):
    def edit(meta, arrays):
        del arrays[name]
    return edit


def short_tokenizer(meta, arrays):
    meta["tokenizer"]["chars"] = meta["tokenizer"]["chars"][:5]


def negative_step(meta, arrays):
    meta["optimizer"]["state"]["__items__"][0][1]["step"] = -1  # parameter 0 (int keys: stored as items)


def all_weights_int32(meta, arrays):
    for name in arrays:
        if name.startswith("model/"):
            arrays[name] = arrays[name].astype(np.int32)


def nan_at(array):
    array = array.copy()
    array.flat[0] = np.nan
    return array


WTE = "model/transformer.wte.weight"
EXP_AVG = "optim/state/0/exp_avg"

# (label, edit, message fragment, refused by sample too): train --resume refuses every one.
HOSTILE_CHECKPOINTS = [
    ("iteration-string", set_meta("iteration", value="abc"), "iteration must be an integer >= 0", True),
    ("iteration-negative", set_meta("iteration", value=-5), "iteration must be an integer >= 0", True),
    ("iteration-bool", set_meta("iteration", value=True), "iteration must be an integer >= 0", True),
    ("n_layer-string", set_meta("config", "n_layer", value="abc"), "config: GPTConfig.n_layer", True),
    ("n_head-zero", set_meta("config", "n_head", value=0), "config: GPTConfig.n_head", True),
    ("dropout-string", set_meta("config", "dropout", value="abc"), "config: GPTConfig.dropout", True),
    ("bias-string", set_meta("config", "bias", value="yes"), "config: GPTConfig.bias", True),
    ("config-unknown-field", set_meta("config", "n_expert", value=8), "unknown GPTConfig field", True),
    ("block_size-float", set_meta("config", "block_size", value=1e9), "config: GPTConfig.block_size", True),
    ("block_size-1e9", set_meta("config", "block_size", value=10 ** 9), "available memory", True),
    ("n_layer-100000", set_meta("config", "n_layer", value=100_000), "holds 17 model arrays, config (n_layer 100000) implies 1200005", True),
    ("n_layer-100000-n_embd-8192", lambda meta, arrays: meta["config"].update(n_layer=100_000, n_embd=8192),
     "available memory", True),
    ("n_embd-8192", set_meta("config", "n_embd", value=8192), "model/transformer.wte.weight has shape", True),
    ("vocab-mismatch", set_meta("config", "vocab_size", value=3), "model/transformer.wte.weight has shape", True),
    ("tokenizer-short", short_tokenizer, "fewer than config.vocab_size", True),
    ("tokenizer-unknown", set_meta("tokenizer", "type", value="wordpiece"), "unknown tokenizer type", True),
    ("model_keys-not-a-list", set_meta("model_keys", value="all"), "model_keys must be a list", True),
    ("weights-int32", all_weights_int32, "must be float32 or float64", True),
    ("weights-one-int32", set_array(WTE, lambda a: a.astype(np.int32)),
     "transformer.wte.weight must have the model's dtype float32", True),
    ("weights-one-float64", set_array("model/transformer.ln_f.weight", lambda a: a.astype(np.float64)),
     "must have the model's dtype float32", True),
    ("weights-nan", set_array("model/transformer.h.0.mlp.c_fc.weight", nan_at), "holds NaN or infinite", True),
    ("weights-inf", set_array(WTE, lambda a: a * np.inf), "holds NaN or infinite", True),
    ("weights-wrong-shape", set_array(WTE, lambda a: a[:, :8]), "has shape", True),
    ("weights-missing", drop_array("model/transformer.ln_f.bias"), "checkpoint is incomplete", True),
    ("settings-lr-string", set_meta("extra", "settings", "lr", value="abc"), "settings.lr must be a number", False),
    ("settings-batch-negative", set_meta("extra", "settings", "batch_size", value=-3),
     "settings.batch_size must be a positive integer", False),
    ("settings-data-number", set_meta("extra", "settings", "data", value=7), "settings.data must be a path", False),
    ("settings-not-a-dict", set_meta("extra", "settings", value=[1, 2]), "extra.settings must be a JSON object", False),
    ("best-val-loss-string", set_meta("extra", "best_val_loss", value="low"), "extra.best_val_loss", False),
    ("optimizer-moment-nan", set_array(EXP_AVG, nan_at), "optimizer.state.0.exp_avg holds NaN", False),
    ("optimizer-moment-int", set_array(EXP_AVG, lambda a: a.astype(np.int32)), "optimizer.state.0.exp_avg", False),
    ("optimizer-moment-shape", set_array(EXP_AVG, lambda a: a[:2]), "does not fit the model", False),
    ("optimizer-step-negative", negative_step,
     "optimizer.state.0.step must be an integer >= 0", False),
    ("rng-state-garbage", set_meta("rng_state", "data", value={"bit_generator": "nope"}), "rng_state.data", False),
]


@pytest.mark.parametrize("label, edit, message, sample_refuses", HOSTILE_CHECKPOINTS,
                         ids=[case[0] for case in HOSTILE_CHECKPOINTS])
def test_hostile_checkpoint(run_copy, corpus_file, capsys, label, edit, message, sample_refuses):
    path = run_copy / "ckpt.npz"
    rewrite(path, path, edit)
    before = snapshot(run_copy)

    code, out, err = call(train.main, ["--resume", "--out-dir", run_copy, "--data", corpus_file, "--no-progress"], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", message)
    assert snapshot(run_copy) == before  # nothing written

    code, out, err = call(sample.main, ["--checkpoint", path, "--num-tokens", "5"], capsys)
    if sample_refuses:
        assert_one_line_error(code, err, 2, "tensorlite-sample", message)
        assert out == ""
    else:  # a part only resuming uses: sampling is unaffected
        assert code == 0 and err == "", err


def test_checkpoint_larger_than_memory_is_refused_before_reading(trained_dir, monkeypatch):
    monkeypatch.setattr("tensorlite.models.gpt_config.available_memory", lambda: 1000)
    with pytest.raises(ckpt_io.CheckpointError, match="more than the .* of available memory"):
        ckpt_io.load(trained_dir / "ckpt.npz")


def test_checkpoint_that_is_a_fifo_is_refused(tmp_path, capsys):
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    code, _, err = call(sample.main, ["--checkpoint", fifo], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-sample", "not a regular file")


# ------------------------------------------------------------------------------------------
# hostile flags and files: tensorlite-train


@pytest.mark.parametrize("flags", [
    ["--block-size", "100000", "--batch-size", "1"],
    ["--n-embd", "100000000", "--n-head", "1"],
    ["--n-layer", "100000"],
], ids=["block-size", "n-embd", "n-layer"])
def test_train_refuses_sizes_beyond_memory(corpus_file, tmp_path, capsys, flags):
    out = tmp_path / "out"
    code, _, err = call(train.main, ["--data", corpus_file, "--out-dir", out, *flags], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "training this model needs about", "available memory")
    assert not out.exists()


@pytest.fixture
def alarm():
    """Fail instead of hanging forever if a read blocks."""
    def on_alarm(signum, frame):
        raise TimeoutError("blocked")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_train_refuses_non_regular_data(tmp_path, capsys, alarm, kind):
    if kind == "dev-zero":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero")
        path = "/dev/zero"
    else:
        path = tmp_path / "fifo"
        os.mkfifo(path)
    code, _, err = call(train.main, ["--data", path, "--out-dir", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "not a regular file")
    assert not (tmp_path / "out").exists()


def test_train_refuses_data_larger_than_memory(corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "available_memory", lambda: 32 * 1000)  # room for 1000 bytes of text
    code, _, err = call(train.main, ["--data", corpus_file, "--out-dir", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "data file is", "available memory")
    with pytest.raises(data.DataError, match="more than the 10 B"):
        data.read_text_file(corpus_file, max_bytes=10)


def test_never_destroys_a_previous_run(run_copy, corpus_file, capsys):
    before = snapshot(run_copy)
    code, _, err = call(train.main, train_args(corpus_file, run_copy, "--max-iters", "2"), capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "holds a previous run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before

    # a metrics file alone is a previous run too
    (run_copy / "ckpt.npz").unlink()
    (run_copy / "best.npz").unlink()
    code, _, err = call(train.main, train_args(corpus_file, run_copy, "--max-iters", "2"), capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "metrics.jsonl")

    # --overwrite starts afresh: no file of the old run is left beside the new one's
    code, _, err = call(train.main, train_args(corpus_file, run_copy, "--max-iters", "1", "--overwrite"), capsys)
    assert code == 0, err
    assert sorted(os.listdir(run_copy)) == ["best.npz", "ckpt.npz", "metrics.jsonl", "run.lock"]  # (the lock stays)
    with open(run_copy / "metrics.jsonl", encoding="utf-8") as f:
        assert max(json.loads(line)["iter"] for line in f) == 1


def test_resume_and_overwrite_together_are_refused(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = call(train.main, ["--resume", "--overwrite", "--out-dir", run_copy], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "give one of them")
    assert snapshot(run_copy) == before


def test_out_dir_that_is_a_file(corpus_file, tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    code, _, err = call(train.main, train_args(corpus_file, path, "--max-iters", "1"), capsys)
    assert_one_line_error(code, err, 2, "tensorlite-train", "is not a directory")


def test_best_and_latest_checkpoints_are_kept_apart(corpus_file, tmp_path, capsys, monkeypatch):
    # Validation improves, then diverges late (still finite): best.npz keeps the good state.
    val_losses = iter([4.0, 3.0, 2.0, 2.5, 2.7])

    def fake_estimate(*args, **kwargs):
        loss = next(val_losses)
        return {"train": loss, "val": loss}

    monkeypatch.setattr(trainer.distributed, "estimate_loss", fake_estimate)
    out = tmp_path / "out"
    code, stdout, err = call(train.main, train_args(corpus_file, out, "--max-iters", "8"), capsys)
    assert code == 0, err
    best, latest = ckpt_io.load(out / "best.npz"), ckpt_io.load(out / "ckpt.npz")
    assert best.iteration == 4 and best.extra["best_val_loss"] == 2.0
    assert latest.iteration == 8 and latest.extra["best_val_loss"] == 2.0
    assert any(not np.array_equal(best.model_state[k], latest.model_state[k]) for k in best.model_state)

    # tensorlite-sample loads best.npz by default, ckpt.npz when there is none.
    monkeypatch.chdir(tmp_path)
    assert sample.default_checkpoint() == os.path.join("out", "best.npz")
    code, first, err = call(sample.main, ["--num-tokens", "10", "--seed", "1"], capsys)
    code_best, from_best, _ = call(sample.main, ["--checkpoint", out / "best.npz", "--num-tokens", "10", "--seed", "1"],
                                   capsys)
    assert code == code_best == 0 and first == from_best
    (out / "best.npz").unlink()
    assert sample.default_checkpoint() == os.path.join("out", "ckpt.npz")


def test_ctrl_c_names_the_checkpoints_iteration(corpus_file, tmp_path, capsys, monkeypatch):
    from tensorlite.models.gpt import GPT

    original_forward, calls = GPT.forward, []

    def forward_interrupted(self, idx, targets=None):
        if self.training:
            calls.append(1)
            if len(calls) == 6:  # the 6th step: iteration 5; the last checkpoint is iteration 4's
                raise KeyboardInterrupt
        return original_forward(self, idx, targets)

    monkeypatch.setattr(GPT, "forward", forward_interrupted)
    out = tmp_path / "out"
    code, _, err = call(train.main, train_args(corpus_file, out, "--max-iters", "10"), capsys)
    assert_one_line_error(code, err, 130, "tensorlite-train", "interrupted at iteration 5",
                          f"{out / 'ckpt.npz'} holds iteration 4 (continue with --resume)")
    assert ckpt_io.load(out / "ckpt.npz").iteration == 4

    calls.clear()
    code, _, err = call(train.main, train_args(corpus_file, tmp_path / "early", "--max-iters", "10",
                                               "--eval-interval", "50"), capsys)
    assert_one_line_error(code, err, 130, "tensorlite-train", "interrupted at iteration 5", "no checkpoint was written")


def test_resume_past_the_decay_horizon_warns(run_copy, capsys):
    # The first run had --max-iters 4, so its schedule decayed to --min-lr at iteration 4.
    code, _, err = call(train.main, ["--resume", "--out-dir", run_copy, "--max-iters", "6", "--no-progress"], capsys)
    assert code == 0, err
    assert err.strip().splitlines() == [
        "tensorlite-train: warning: --max-iters 6 goes past the resumed run's --lr-decay-iters 4: the learning rate "
        "stays at --min-lr 0.0001 after iteration 4; give --lr-decay-iters to decay over the longer run"]

    code, _, err = call(train.main, ["--resume", "--out-dir", run_copy, "--max-iters", "8", "--lr-decay-iters", "8",
                                     "--no-progress"], capsys)
    assert code == 0, err
    assert "warning: --lr-decay-iters 8 changes the schedule of the resumed run (it had 4)" in err

    code, _, err = call(train.main, ["--resume", "--out-dir", run_copy, "--max-iters", "8", "--no-progress"], capsys)
    assert code == 0 and err == ""  # same schedule, nothing to warn about


# ------------------------------------------------------------------------------------------
# hostile flags: tensorlite-sample


@pytest.mark.parametrize("flags, message", [
    (["--num-tokens", "100000000000"], "--num-tokens 100000000000 needs about"),
    (["--temperature", "1e-310"], "--temperature 1e-310 is below"),
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--temperature", "inf"], "--temperature must be a finite number"),
])
def test_sample_refuses_hostile_flags(trained_dir, capsys, flags, message):
    code, out, err = call(sample.main, ["--checkpoint", trained_dir / "ckpt.npz", *flags], capsys)
    assert_one_line_error(code, err, 2, "tensorlite-sample", message)
    assert out == ""


def test_sample_with_a_tiny_normal_temperature_is_greedy(trained_dir, capsys):
    argv = ["--checkpoint", trained_dir / "ckpt.npz", "--num-tokens", "20", "--prompt", "The"]
    code, cold, err = call(sample.main, [*argv, "--temperature", "1e-300"], capsys)
    assert code == 0, err
    _, greedy, _ = call(sample.main, [*argv, "--temperature", "0"], capsys)
    assert cold == greedy and cold.strip() != "The"
