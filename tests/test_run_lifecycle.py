"""How a tensorlite-train run starts, with real processes: one run per --out-dir (a second is
refused, a lock left by a killed run is not). Every child has a deadline, so a regression fails
the test instead of hanging it."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from models import checkpoint as ckpt_io

from conftest import TINY_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "tensorlite-train"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and flock")

# Steps of a few milliseconds; evaluations far apart. The kernels that need no compiling.
FLAGS = [*TINY_MODEL, "--eval-interval", "100000", "--eval-iters", "1", "--log-interval", "1",
         "--warmup-iters", "1", "--no-progress", "--kernels", "numpy"]
LONG = ["--max-iters", "100000"]  # minutes of training: these runs end by a kill or a refusal


def child_environment():
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def trainer(corpus_file, out_dir, *extra):
    return [sys.executable, "-m", "models.train", "--data", corpus_file, *FLAGS, "--out-dir", str(out_dir), *extra]


def start(command, **kwargs):
    """Popen with a deadline: the process (its whole session) is killed after 60 s."""
    process = subprocess.Popen(command, env=child_environment(), cwd=ROOT, text=True, start_new_session=True,
                               stdout=kwargs.pop("stdout", subprocess.PIPE),
                               stderr=kwargs.pop("stderr", subprocess.PIPE), **kwargs)
    timer = threading.Timer(60, lambda: _kill_session(process))
    timer.daemon = True
    timer.start()
    process.deadline = timer
    return process


def _kill_session(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(process, timeout=60):
    """Wait for ``process``; returns (exit code, stdout, stderr)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(process)
        out, err = process.communicate()
        pytest.fail(f"the run hung\n{out}\n{err}")
    finally:
        process.deadline.cancel()
    return process.returncode, out or "", err or ""


def run(command, timeout=60):
    return finish(start(command), timeout)


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_iterations(out_dir):
    import json

    with open(out_dir / "metrics.jsonl", encoding="utf-8") as f:
        return [record["iter"] for record in map(json.loads, f) if record["event"] == "train"]


# ------------------------------------------------------------------------------------------
# One run per out dir

# A run that stops at a gate (a file appearing) in ``target`` of models/train.py, before or
# after calling it, and says so on stderr: a concurrent run caught at a known point.
GATED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from models import train

    owner, name = train, {target!r}
    if "." in name:
        cls, name = name.split(".")
        owner = getattr(train, cls)
    real, passed = getattr(owner, name), []

    def wait():
        if not passed:
            passed.append(1)
            print("at the gate", os.getpid(), file=sys.stderr, flush=True)
            deadline = time.monotonic() + 60
            while not os.path.exists({gate!r}) and time.monotonic() < deadline:
                time.sleep(0.01)

    def gated(*args, **kwargs):
        if not {after!r}:
            wait()
        result = real(*args, **kwargs)
        if {after!r}:
            wait()
        return result

    setattr(owner, name, gated)
    sys.exit(train.main({argv!r}))
    """
)


def start_gated(tmp_path, argv, target="Run.train", after=False, launcher=()):
    gate = tmp_path / "gate"
    script = GATED.format(root=ROOT, target=target, gate=str(gate), after=after, argv=[str(a) for a in argv])
    return start([*launcher, sys.executable, "-c", script]), gate


def wait_at_gate(process):
    """Read stderr until the child reports it is at the gate; returns its pid."""
    line = process.stderr.readline()
    assert line.startswith("at the gate"), line + process.stderr.read()
    return int(line.split()[-1])


def release(process, gate):
    """After a test (or its failure): open the gate, then kill what is left of the child. Ranks
    under mpiexec live in sessions of their own; past the gate they end with the job."""
    gate.touch()
    _kill_session(process)


def train_argv(corpus_file, out_dir, *extra):
    return trainer(corpus_file, out_dir, *extra)[3:]  # without `python -m models.train`


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def test_a_second_run_into_a_directory_in_use_is_refused(corpus_file, tmp_path):
    out = tmp_path / "out"
    first, gate = start_gated(tmp_path, train_argv(corpus_file, out, "--max-iters", "6"))
    try:
        pid = wait_at_gate(first)  # out dir prepared, metrics open, the lock held; training next
        assert (out / "run.lock").read_text().strip() == str(pid)
        before = snapshot(out)
        for extra in ([], ["--overwrite"]):  # nor may --overwrite take a live run's directory
            code, out_text, err = run(trainer(corpus_file, out, "--max-iters", "2", *extra))
            assert code == 2, err
            line = one_line(err)
            assert line.startswith(f"{PROG}: error: {out} is in use by another run (pid {pid}, "), line
            assert snapshot(out) == before  # the refused run touched nothing
        gate.touch()
        code, _, err = finish(first)
    finally:
        release(first, gate)
    assert code == 0, err
    assert train_iterations(out) == [1, 2, 3, 4, 5, 6]  # the first run's metrics alone
    assert ckpt_io.load(out / "ckpt.npz").iteration == 6
    assert (out / "run.lock").read_text() == ""  # released: no pid left to be mistaken for a holder


def test_two_runs_started_together_one_runs_the_other_is_refused(corpus_file, tmp_path):
    # Both find the out dir free (it does not exist yet) before either writes anything.
    out = tmp_path / "out"
    argv = train_argv(corpus_file, out, "--max-iters", "4")
    runs = [start_gated(tmp_path, argv, target="check_out_dir", after=True)[0] for _ in range(2)]
    try:
        for process in runs:
            wait_at_gate(process)
        (tmp_path / "gate").touch()
        results = sorted(finish(process) for process in runs)
    finally:
        for process in runs:
            release(process, tmp_path / "gate")
    (ok, _, ok_err), (refused, _, err) = results
    assert (ok, refused) == (0, 2), (ok_err, err)
    line = one_line(err)
    # refused at the lock, or, if the winner had already finished, as a previous run
    assert "is in use by another run (pid " in line or "holds a previous run" in line, line
    assert train_iterations(out) == [1, 2, 3, 4]
    assert ckpt_io.load(out / "ckpt.npz").iteration == 4


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_lock_left_by_a_killed_run_does_not_block_the_next(corpus_file, tmp_path):
    out = tmp_path / "out"
    first, _ = start_gated(tmp_path, train_argv(corpus_file, out, *LONG))
    try:
        pid = wait_at_gate(first)
        os.kill(pid, signal.SIGKILL)
        code, _, _ = finish(first)
    finally:
        release(first, tmp_path / "gate")
    assert code == -signal.SIGKILL
    assert (out / "run.lock").read_text().strip() == str(pid)  # the dead run's lock file is still there

    code, _, err = run(trainer(corpus_file, out, "--max-iters", "3", "--overwrite"))
    assert code == 0, err
    assert ckpt_io.load(out / "ckpt.npz").iteration == 3


# ------------------------------------------------------------------------------------------
# Under mpiexec


def _find_mpiexec():
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's
    return beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")


def _mpi4py_installed():
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None or not _mpi4py_installed(),
                               reason="needs mpi4py and mpiexec: pip install tensorlite[mpi]")
TWO_RANKS = [MPIEXEC, "-n", "2"]


@needs_mpi
def test_under_mpiexec_rank_0_holds_the_lock_and_a_refusal_ends_the_job_in_one_line(corpus_file, tmp_path):
    out = tmp_path / "out"
    first, gate = start_gated(tmp_path, train_argv(corpus_file, out, "--max-iters", "4", "--grad-accum", "2"),
                              launcher=TWO_RANKS)
    try:
        # every rank reports at the gate; the lock names rank 0 (the first, launched as rank 0)
        pids = sorted(wait_at_gate(first) for _ in range(2))
        holder = int((out / "run.lock").read_text())
        assert holder in pids
        if os.path.isdir("/proc"):
            with open(f"/proc/{holder}/environ") as f:
                assert "\0PMI_RANK=0\0" in "\0" + f.read(), holder
        started = time.monotonic()
        code, _, err = run([*TWO_RANKS, *trainer(corpus_file, out, "--max-iters", "2", "--grad-accum", "2")])
        assert time.monotonic() - started < 30
        assert code == 2, err
        line = one_line(err)
        assert line.startswith(f"{PROG}: error: {out} is in use by another run (pid {holder}, "), line
        gate.touch()
        code, _, err = finish(first)
    finally:
        release(first, gate)
    assert code == 0, err
    assert ckpt_io.load(out / "ckpt.npz").iteration == 4
