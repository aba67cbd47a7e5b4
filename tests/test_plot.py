"""tensorlite-plot (models/plot.py) on metrics files written by the test."""

import json

import pytest

from tensorlite.models import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(path, n_iters=100, with_tokens=False, lr=1e-3):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in range(0, n_iters + 1, 10):
        record = {"event": "train", "iter": it, "loss": 4.0 - it / 50, "mean_loss": 4.0 - it / 50, "lr": lr}
        if with_tokens:
            record["tokens"] = it * 512
        lines.append(json.dumps(record))
        if it % 50 == 0:
            lines.append(json.dumps({"event": "eval", "iter": it, "train_loss": 4.0 - it / 40,
                                     "val_loss": 4.1 - it / 45, "lr": lr}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(capsys, *argv):
    code = plot.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_read_metrics_keeps_the_later_record_of_a_repeated_iteration(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"event": "train", "iter": 10, "loss": 3.0, "lr": 1e-3},
        {"event": "train", "iter": 20, "loss": 2.0, "lr": 1e-3},
        {"event": "train", "iter": 10, "loss": 2.5, "lr": 1e-3},  # appended after a resume
        {"event": "eval", "iter": 0, "train_loss": 4.0, "val_loss": 4.1, "lr": 0.0},
        {"event": "other", "iter": 3},
    ]) + "\n")
    train, evals = plot.read_metrics(path)
    assert [(r["iter"], r["loss"]) for r in train] == [(10, 2.5), (20, 2.0)]
    assert [r["val_loss"] for r in evals] == [4.1]


def test_default_label_is_the_directory_name(tmp_path):
    assert plot.default_label(tmp_path / "out-sft" / "metrics.jsonl") == "out-sft"


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def test_plots_several_runs(tmp_path, capsys, mpl):
    a = write_metrics(tmp_path / "out-pretrain" / "metrics.jsonl")
    b = write_metrics(tmp_path / "out-sft" / "metrics.jsonl", n_iters=50, lr=3e-4)
    out = tmp_path / "plots" / "loss.png"
    code, stdout, err = run(capsys, a, b, "-o", out, "--sequential", "--labels", "pretrain", "fine-tune")
    assert code == 0, err
    assert out.read_bytes().startswith(PNG_MAGIC) and "wrote" in stdout


def test_tokens_axis(tmp_path, capsys, mpl):
    a = write_metrics(tmp_path / "a" / "metrics.jsonl", with_tokens=True)
    assert run(capsys, a, "--x", "tokens", "-o", tmp_path / "t.png")[0] == 0
    b = write_metrics(tmp_path / "b" / "metrics.jsonl")
    code, _, err = run(capsys, b, "--x", "tokens", "-o", tmp_path / "u.png")
    assert code == 2 and "--tokens-per-iter" in err and not (tmp_path / "u.png").exists()
    assert run(capsys, b, "--x", "tokens", "--tokens-per-iter", "384", "-o", tmp_path / "u.png")[0] == 0
    assert run(capsys, b, "--tokens-per-iter", "384", "-o", tmp_path / "v.png")[0] == 0  # second x axis


@pytest.mark.parametrize("content, message", [
    ('{"event": "train", "iter": 1, "loss": 2.0}\n{"event": "train", "iter"\n', "line 2: invalid JSON"),
    ('{"event": "train", "loss": 2.0}\n', 'line 1: not a metrics record'),
    ('{"event": "other", "iter": 1}\n', "has no train or eval records"),
])
def test_bad_metrics_files(tmp_path, capsys, content, message):
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    (tmp_path / "loss.png").write_bytes(b"old")
    code, _, err = run(capsys, path, "-o", tmp_path / "loss.png")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "loss.png").read_bytes() == b"old"


def test_usage_errors(tmp_path, capsys, mpl):
    a = write_metrics(tmp_path / "a" / "metrics.jsonl")
    code, _, err = run(capsys, a, "--labels", "x", "y", "-o", tmp_path / "p.png")
    assert code == 2 and "--labels has 2 label(s) for 1 metrics file(s)" in err
    code, _, err = run(capsys, tmp_path / "missing.jsonl", "-o", tmp_path / "p.png")
    assert code == 2 and "metrics file not found" in err
    assert run(capsys, a, "--tokens-per-iter", "0")[0] == 2


def test_without_matplotlib_one_line_and_exit_2(tmp_path, capsys, hide_package):
    a = write_metrics(tmp_path / "a" / "metrics.jsonl")
    hide_package("matplotlib")
    code, _, err = run(capsys, a, "-o", tmp_path / "p.png")
    assert code == 2 and err.strip() == "tensorlite-plot: error: plotting needs matplotlib: pip install '.[plot]' from a tensorlite checkout"
    assert not (tmp_path / "p.png").exists()
