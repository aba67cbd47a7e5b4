"""How a tensorlite-train run starts and ends, with real processes and real signals: one run per
--out-dir (a second is refused, a lock left by a killed run is not), and Ctrl-C, SIGTERM or a
closed stdout stopping a run after a step with its checkpoint saved and one line saying how to
continue. Every child has a deadline, so a regression fails the test instead of hanging it."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tensorlite.models import checkpoint as ckpt_io

from conftest import TINY_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "tensorlite-train"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and flock")

# Steps of a few milliseconds; evaluations far apart, so the only checkpoint a stopped run has
# is the one its stop wrote. The kernels that need no compiling.
FLAGS = [*TINY_MODEL, "--eval-interval", "100000", "--eval-iters", "1", "--log-interval", "1",
         "--warmup-iters", "1", "--no-progress", "--kernels", "numpy"]
LONG = ["--max-iters", "100000"]  # minutes of training: these runs end by a signal or a refusal


def child_environment():
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def trainer(corpus_file, out_dir, *extra):
    return [sys.executable, "-m", "tensorlite.models.train", "--data", corpus_file, *FLAGS, "--out-dir", str(out_dir), *extra]


def _default_signal_dispositions():
    # A test runner started as a background job (`pytest &` in a script) ignores SIGINT, and a
    # child inherits that; the trainer then keeps ignoring it, as it should under nohup. The
    # children here stand for runs started from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(command, **kwargs):
    """Popen with a deadline: the process (its whole session) is killed after 60 s."""
    process = subprocess.Popen(command, env=child_environment(), cwd=ROOT, text=True, start_new_session=True,
                               preexec_fn=_default_signal_dispositions,
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


def read_until(process, prefix):
    """Read the child's stdout until a line starting with ``prefix``; return the lines read."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    _kill_session(process)
    pytest.fail(f"the run ended before printing {prefix!r}:\n{''.join(lines)}\n{process.stderr.read()}")


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_iterations(out_dir):
    import json

    with open(out_dir / "metrics.jsonl", encoding="utf-8") as f:
        return [record["iter"] for record in map(json.loads, f) if record["event"] == "train"]


def model_arrays(path):
    return ckpt_io.load(path).model_state


def assert_stopped(code, err, out_dir, expected_code, opening):
    """The one line of a run stopped on request; returns the iteration it names (its checkpoint's)."""
    assert code == expected_code, err
    line = one_line(err)
    assert line.startswith(f"{PROG}: {opening} at iteration "), line
    iteration = int(line.split(" at iteration ")[1].split(";")[0])
    assert f"the checkpoint {out_dir / 'ckpt.npz'} holds it" in line, line
    assert ckpt_io.load(out_dir / "ckpt.npz").iteration == iteration
    assert train_iterations(out_dir) == list(range(1, iteration + 1))  # every step logged, once
    return iteration, line.split("continue with: ")[1]


def resume(command, iteration, extra=2):
    """Run the printed resume command (with a --max-iters within reach); returns the iteration reached."""
    words = shlex.split(command)
    assert words[:2] == [PROG, "--resume"], command
    code, _, err = run([sys.executable, "-m", "tensorlite.models.train", *words[1:], "--max-iters", str(iteration + extra),
                        "--no-progress"])
    assert code == 0, err
    return iteration + extra


# ------------------------------------------------------------------------------------------
# Ctrl-C, SIGTERM and a closed stdout


def test_sigterm_saves_the_checkpoint_and_says_how_to_continue(corpus_file, tmp_path):
    out = tmp_path / "out"
    child = start(trainer(corpus_file, out, *LONG))
    read_until(child, "iter 5:")
    child.send_signal(signal.SIGTERM)
    code, _, err = finish(child)
    iteration, command = assert_stopped(code, err, out, 143, "terminated (SIGTERM)")
    assert iteration >= 5
    assert command == f"{PROG} --resume --out-dir {shlex.quote(str(out))} --kernels numpy"
    reached = resume(command, iteration)
    assert ckpt_io.load(out / "ckpt.npz").iteration == reached


def test_ctrl_c_stops_after_the_step_and_the_resumed_run_is_exact(corpus_file, tmp_path):
    out = tmp_path / "out"
    child = start(trainer(corpus_file, out, *LONG))
    read_until(child, "iter 5:")
    child.send_signal(signal.SIGINT)
    code, _, err = finish(child)
    iteration, command = assert_stopped(code, err, out, 130, "interrupted (Ctrl-C, SIGINT)")
    reached = resume(command, iteration, extra=3)

    # The stop saved the whole state: stopping and resuming is one run of `reached` steps.
    straight = tmp_path / "straight"
    code, _, err = run(trainer(corpus_file, straight, "--max-iters", str(reached), "--lr-decay-iters", "100000"))
    assert code == 0, err
    resumed, alone = model_arrays(out / "ckpt.npz"), model_arrays(straight / "ckpt.npz")
    for name in alone:
        assert np.array_equal(resumed[name], alone[name]), name


def test_a_closed_stdout_stops_the_run_quietly_with_its_checkpoint(corpus_file, tmp_path):
    # `tensorlite-train | head`: the reader goes away in the middle of training ...
    out = tmp_path / "out"
    child = start(trainer(corpus_file, out, *LONG))
    read_until(child, "iter 3:")
    child.stdout.close()
    code, _, err = finish(child)
    iteration, command = assert_stopped(code, err, out, 141, "stopped (stdout was closed)")
    assert iteration >= 3
    assert "BrokenPipeError" not in err and "Exception ignored" not in err
    resume(command, iteration)

    # ... or before the first line: the run stops before its first step, with nothing to save.
    early = tmp_path / "early"
    child = start(trainer(corpus_file, early, *LONG))
    child.stdout.close()
    code, _, err = finish(child)
    assert code == 141, err
    assert one_line(err) == f"{PROG}: stopped (stdout was closed) at iteration 0; no checkpoint was written"
    assert not (early / "ckpt.npz").exists()


def test_a_second_signal_interrupts_at_once_and_an_ignored_one_stays_ignored():
    from tensorlite.models.run_control import INTERRUPT, TERMINATE, RunControl, SignalInterrupt

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as under nohup or a background job
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
    try:
        with RunControl() as control, control.deferred():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)  # ignored: no request
            assert control.requested is None
            signal.raise_signal(signal.SIGINT)  # the first: a request, the step goes on
            assert control.requested == INTERRUPT
            with pytest.raises(SignalInterrupt) as second:  # the second: at once
                signal.raise_signal(signal.SIGINT)
            assert second.value.stop == INTERRUPT
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)

    with RunControl() as control:  # outside the training loop: at once, as a KeyboardInterrupt
        assert signal.getsignal(signal.SIGTERM) == control._on_signal  # (else SIGTERM would end pytest)
        with pytest.raises(KeyboardInterrupt) as outside:
            signal.raise_signal(signal.SIGTERM)
        assert outside.value.stop == TERMINATE
    assert signal.getsignal(signal.SIGTERM) is previous


# ------------------------------------------------------------------------------------------
# One run per out dir

# A run that stops at a gate (a file appearing) in ``target`` of models/trainer.py, before or
# after calling it, and says so on stderr: a concurrent run caught at a known point.
GATED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from tensorlite.models import train, trainer

    owner, name = trainer, {target!r}
    if "." in name:
        cls, name = name.split(".")
        owner = getattr(trainer, cls)
    real, passed = getattr(owner, name), []

    def wait():
        if not passed:
            passed.append(1)
            # One write: with PYTHONUNBUFFERED print writes each piece apart, and the lines
            # of two ranks under mpiexec could interleave mid-line.
            sys.stderr.write(f"at the gate {{os.getpid()}}\\n")
            sys.stderr.flush()
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
    return trainer(corpus_file, out_dir, *extra)[3:]  # without `python -m tensorlite.models.train`


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
                               reason="needs mpi4py and mpiexec: pip install '.[mpi]' from a tensorlite checkout")
TWO_RANKS = [MPIEXEC, "-n", "2"]


def descendants(pid):
    """The pids of every process below ``pid`` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")
def test_ctrl_c_under_mpiexec_prints_one_line_and_leaves_no_rank_behind(corpus_file, tmp_path):
    out = tmp_path / "out"
    job = start([*TWO_RANKS, *trainer(corpus_file, out, *LONG, "--grad-accum", "2")])
    read_until(job, "iter 5:")
    ranks = [pid for pid in descendants(job.pid) if "tensorlite.models.train" in command_line(pid)]
    assert len(ranks) == 2, ranks
    job.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
    code, stdout, err = finish(job)
    ended = time.monotonic()
    while any(alive(pid) for pid in ranks) and time.monotonic() - ended < 1.0:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in ranks)
    # mpiexec's own notes ("[mpiexec@host] Sending Ctrl-C ...") aside, one line in all
    ours = [line for line in err.splitlines() if not line.startswith("[mpiexec@")]
    assert "Traceback" not in stdout + err
    iteration, command = assert_stopped(code, "\n".join(ours), out, 130, "interrupted (Ctrl-C, SIGINT)")
    resume(command, iteration)  # in one process: a checkpoint resumes on any number of ranks


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
