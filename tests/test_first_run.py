"""The first training run says that it compiles the kernels (once, ~20 s), and later runs do not."""

import os
import subprocess
import sys

import tensorlite as tl
from tensorlite.models import trainer

_LINE = "compiling kernels once (~20 s), cached in"


def _train(tmp_path, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), TENSORLITE_KERNELS="numba")
    command = [sys.executable, "-m", "tensorlite.models.train", "--preset", "tiny", "--max-iters", "1",
               "--eval-iters", "1", "--sample-tokens", "0", "--no-progress", "--overwrite",
               "--out-dir", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_cold_kernel_cache_is_announced_once_and_a_warm_one_is_silent(tmp_path):
    cache_dir = tmp_path / "numba-cache"
    cache_dir.mkdir()
    first = _train(tmp_path, cache_dir)
    [line] = [line for line in first.splitlines() if _LINE in line]
    assert line.startswith("tensorlite-train: ") and str(cache_dir) in line
    assert os.listdir(cache_dir)  # the compiled kernels went where the line said
    assert _LINE not in _train(tmp_path, cache_dir)


def test_no_compile_notice_for_the_numpy_kernels(monkeypatch):
    monkeypatch.setattr(tl.kernels, "active", lambda: "numpy")
    assert trainer.cold_kernel_cache() is None


def test_the_detection_says_nothing_when_numba_internals_differ(monkeypatch):
    from numba.core.dispatcher import Dispatcher

    monkeypatch.setattr(tl.kernels, "active", lambda: "numba")
    module = sys.modules["tensorlite.kernels.numba.matmul"]
    dispatcher = next(v for v in vars(module).values() if isinstance(v, Dispatcher))
    monkeypatch.setattr(dispatcher, "_cache", object())  # no _cache_file: not what we know
    assert trainer.cold_kernel_cache() is None
