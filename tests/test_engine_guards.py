"""Guards of the engine, as in PyTorch: only floating point tensors require grad, `.data` keeps
its shape, backward passes in several threads accumulate into a shared leaf without losing a
contribution, and a bad environment variable is one clear error (one line from a command)."""

import configparser
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import environment
from tensorlite import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# requires_grad: floating point only, whichever way it is set

@pytest.mark.parametrize("values", [np.arange(3), np.array([True, False]),
                                    np.arange(4, dtype=np.int32).reshape(2, 2)])
def test_integer_and_bool_tensors_cannot_require_grad(values):
    with pytest.raises(TypeError, match="only floating point tensors can require gradients"):
        tl.Tensor(values, requires_grad=True)
    t = tl.Tensor(values)
    with pytest.raises(TypeError, match=f"only floating point.*{values.dtype}"):
        t.requires_grad = True
    with pytest.raises(TypeError, match="only floating point"):
        t.requires_grad_()
    assert t.requires_grad is False
    t.requires_grad = False  # turning it off is always fine
    assert t.requires_grad_(False) is t and not t.requires_grad


def test_floating_point_tensors_require_grad_by_assignment():
    x = tl.Tensor(np.ones(3, np.float32))
    x.requires_grad = 1
    assert x.requires_grad is True
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


# ----------------------------------------------------------------------------
# .data: another array of the same shape, never of another shape

def test_assigning_data_of_another_shape_names_both_shapes():
    w = tl.Tensor(np.ones((4, 4), np.float32), requires_grad=True)
    original = w.data
    with pytest.raises(ValueError, match=r"shape \(2, 4\) to a tensor of shape \(4, 4\)"):
        w.data = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"shape \(16,\) to a tensor of shape \(4, 4\)"):
        w.data = tl.zeros(16)
    with pytest.raises(ValueError, match=r"shape \(\) to a tensor of shape \(4, 4\)"):
        w.data = 3.0
    assert w.data is original  # a refused assignment changes nothing
    (w * 3.0).sum().backward()
    assert w.grad.shape == (4, 4)


def test_assigning_data_may_change_the_dtype():
    w = tl.nn.Parameter(np.ones((2, 3), np.float32))
    w.data = w.data.astype(np.float64)
    assert w.dtype == np.float64
    w.data = tl.Tensor(np.full((2, 3), 2.0, np.float32))  # a Tensor: its array is taken
    assert isinstance(w.data, np.ndarray) and w.dtype == np.float32
    (w * w).sum().backward()
    assert w.grad.shape == (2, 3) and w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, 4.0)
    layer = tl.nn.Linear(3, 2).double()  # Module.to rebinds each parameter's data
    assert layer.weight.dtype == np.float64 and layer.weight.shape == (2, 3)


# ----------------------------------------------------------------------------
# Backward passes in threads into one shared leaf

def test_concurrent_backward_passes_accumulate_every_contribution():
    """Two threads each run 200 backward passes into one leaf, 30 times: the gradient must be
    exactly 400 everywhere. The leaf is large enough that NumPy releases the GIL inside `+=`,
    and the switch interval is tiny, so unsynchronised accumulation loses updates."""
    passes, trials = 200, 30
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        short = []
        for _ in range(trials):
            w = tl.Tensor(np.zeros(1 << 16), requires_grad=True)
            start = threading.Barrier(2)

            def run_backward_passes():
                start.wait()
                for _ in range(passes):
                    (w * 1.0).sum().backward()

            workers = [threading.Thread(target=run_backward_passes) for _ in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if w.grad is None or not np.all(w.grad == 2 * passes):
                short.append(0 if w.grad is None else float(w.grad.min()))
    finally:
        sys.setswitchinterval(previous_interval)
    assert not short, f"{len(short)} of {trials} trials lost contributions (minimum {min(short)})"


# ----------------------------------------------------------------------------
# Environment variables: one clear error naming the variable

def clean_environment(**variables):
    """os.environ without the variables under test, plus `variables`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TENSORLITE_KERNELS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")}
    env.update(variables)
    return env


def run_python(code, **variables):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=clean_environment(**variables), timeout=120)


BAD_ENVIRONMENTS = [
    ({"TENSORLITE_KERNELS": "bogus"}, "TENSORLITE_KERNELS='bogus'", "'numba', 'numpy'"),
    ({"NUMBA_NUM_THREADS": "0"}, "NUMBA_NUM_THREADS='0'", "positive integer"),
    ({"NUMBA_NUM_THREADS": "-2"}, "NUMBA_NUM_THREADS='-2'", "positive integer"),
    ({"NUMBA_NUM_THREADS": "two"}, "NUMBA_NUM_THREADS='two'", "positive integer"),
    ({"NUMBA_THREADING_LAYER": "bogus"}, "NUMBA_THREADING_LAYER='bogus'", "'omp', 'tbb'"),
]

IMPORT_AND_REPORT = """
try:
    import tensorlite
except ValueError as error:
    print(type(error).__name__, getattr(error, "variable", None))
    print(error)
else:
    print("imported")
"""


@pytest.mark.parametrize("variables, named, allowed", BAD_ENVIRONMENTS)
def test_importing_with_a_bad_variable_raises_one_clear_error(variables, named, allowed):
    result = run_python(IMPORT_AND_REPORT, **variables)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0] == f"EnvironmentVariableError {next(iter(variables))}", result.stdout
    assert named in lines[1] and allowed in lines[1]
    assert "must be > 0" not in result.stdout + result.stderr  # not Numba's own words


def test_numba_variables_are_checked_when_the_numba_set_loads():
    """With the NumPy set Numba is not imported, so its variables do not matter until
    kernels.use('numba') imports it."""
    code = ("import tensorlite as tl, sys\n"
            "assert 'numba' not in sys.modules\n"
            "try:\n"
            "    tl.kernels.use('numba')\n"
            "except tl.EnvironmentVariableError as error:\n"
            "    print(error.variable, tl.kernels.active())\n")
    result = run_python(code, TENSORLITE_KERNELS="numpy", NUMBA_NUM_THREADS="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NUMBA_NUM_THREADS numpy"


@pytest.mark.parametrize("value, accepted", [("4", True), (" 2 ", True), ("", True),
                                             ("0", False), ("-1", False), ("1.5", False),
                                             ("many", False)])
def test_numba_num_threads_values(monkeypatch, value, accepted):
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    if accepted:
        environment.check_numba_variables()
    else:
        with pytest.raises(tl.EnvironmentVariableError, match="NUMBA_NUM_THREADS"):
            environment.check_numba_variables()


@pytest.mark.parametrize("value, accepted", [("omp", True), ("WorkQueue", True),
                                             ("threadsafe", True), ("", False),
                                             ("openmp", False)])
def test_numba_threading_layer_values(monkeypatch, value, accepted):
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NUMBA_THREADING_LAYER", value)
    if accepted:
        environment.check_numba_variables()
    else:
        with pytest.raises(tl.EnvironmentVariableError, match="NUMBA_THREADING_LAYER"):
            environment.check_numba_variables()


def test_unknown_kernel_set_error_is_an_environment_error(monkeypatch):
    monkeypatch.setenv("TENSORLITE_KERNELS", "cuda")
    with pytest.raises(tl.EnvironmentVariableError) as raised:
        kernels._from_environment()
    assert isinstance(raised.value, ValueError)
    assert raised.value.variable == "TENSORLITE_KERNELS" and raised.value.value == "cuda"


# ----------------------------------------------------------------------------
# The console scripts' launcher

COMMANDS = ["train", "sample", "convert", "plot"]

RUN_LAUNCHER = """
import runpy, sys
launch = runpy.run_path({path!r})
sys.exit(launch["run"]("tensorlite-{command}", "tensorlite.models.{command}", {argv!r}))
"""


def run_launcher(command, argv, **variables):
    """The launcher's run() in a fresh process, as a console script calls it."""
    code = RUN_LAUNCHER.format(path=os.path.join(ROOT, "_tensorlite_launch.py"), command=command,
                               argv=argv)
    return run_python(code, **variables)


def assert_one_line_error(result, prog, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_report_a_bad_kernel_set_in_one_line(command):
    result = run_launcher(command, ["--help"], TENSORLITE_KERNELS="bogus")
    assert_one_line_error(result, f"tensorlite-{command}", "TENSORLITE_KERNELS='bogus'",
                          "'numba', 'numpy'")
    assert result.stdout == ""


@pytest.mark.parametrize("variables, named, allowed", BAD_ENVIRONMENTS[1:])
def test_train_reports_bad_numba_variables_in_one_line(variables, named, allowed):
    assert_one_line_error(run_launcher("train", ["--help"], **variables), "tensorlite-train",
                          named, allowed)


def test_launcher_runs_the_command(tmp_path):
    result = run_launcher("plot", ["--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: tensorlite-plot" in result.stdout
    # The error can come from main() too: --kernels numba loads Numba after the NumPy set.
    result = run_launcher("train", ["--kernels", "numba", "--out-dir", str(tmp_path / "out")],
                          TENSORLITE_KERNELS="numpy", NUMBA_NUM_THREADS="0")
    assert_one_line_error(result, "tensorlite-train", "NUMBA_NUM_THREADS='0'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable, value", [("PMI_RANK", "x"), ("PMI_SIZE", "0"),
                                             ("OMPI_COMM_WORLD_RANK", "-1")])
def test_train_reports_a_bad_mpi_launcher_variable_in_one_line(tmp_path, variable, value):
    # as if started by mpiexec with a damaged environment: no traceback, nothing written
    variables = {"PMI_RANK": "0", "PMI_SIZE": "1"} if variable.startswith("PMI") else {}
    variables[variable] = value
    result = run_launcher("train", ["--preset", "tiny", "--max-iters", "1",
                                    "--out-dir", str(tmp_path / "out")], **variables)
    assert_one_line_error(result, "tensorlite-train", f"{variable}={value!r}", "mpiexec")
    assert not (tmp_path / "out").exists()


def test_launcher_lets_other_errors_through(monkeypatch):
    import _tensorlite_launch as launch

    class Command:
        @staticmethod
        def main(argv):
            raise ValueError("not about the environment")

    monkeypatch.setattr(launch.importlib, "import_module", lambda name: Command)
    with pytest.raises(ValueError, match="not about the environment"):
        launch.run("tensorlite-x", "tensorlite.models.x", [])


def test_console_scripts_start_through_the_launcher():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in
                   config["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts == {f"tensorlite-{command}": f"_tensorlite_launch:{command}"
                       for command in COMMANDS}


def test_installed_console_script_reports_a_bad_kernel_set_in_one_line():
    script = shutil.which("tensorlite-train", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("tensorlite-train is not installed next to this Python")
    result = subprocess.run([script, "--help"], cwd=ROOT, capture_output=True, text=True,
                            env=clean_environment(TENSORLITE_KERNELS="bogus"), timeout=120)
    assert_one_line_error(result, "tensorlite-train", "TENSORLITE_KERNELS='bogus'")
