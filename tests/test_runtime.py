"""tensorlite.runtime: the process-level settings applied on import, their order and opt-outs.

Each check of what importing tensorlite does runs in a fresh interpreter with a controlled
environment (the NumPy kernel set, so that Numba's import does not slow it down).
"""

import os
import pathlib
import subprocess
import sys

import pytest

import tensorlite as tl
from tensorlite import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPT_OUTS = (runtime.KEEP_OPENBLAS_CORETYPE, runtime.KEEP_MALLOC)
CORETYPE_PRESENT = "import tensorlite, os; print('OPENBLAS_CORETYPE' in os.environ)"


def run_python(code, **variables):
    env = {k: v for k, v in os.environ.items() if k not in OPT_OUTS + ("OPENBLAS_CORETYPE",)}
    env.update(TENSORLITE_KERNELS="numpy", **variables)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("keep, present", [(None, "False"), ("1", "True"), ("yes", "True"),
                                           ("0", "False"), ("false", "False"), ("", "False")])
def test_openblas_coretype_is_dropped_unless_opted_out(keep, present):
    extra = {} if keep is None else {runtime.KEEP_OPENBLAS_CORETYPE: keep}
    result = run_python(CORETYPE_PRESENT, OPENBLAS_CORETYPE="Haswell", **extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == present


def test_openblas_coretype_is_kept_when_numpy_came_first():
    code = ("import numpy, tensorlite, os; print('OPENBLAS_CORETYPE' in os.environ, "
            "tensorlite.runtime.applied()['openblas_coretype']['reason'])")
    result = run_python(code, OPENBLAS_CORETYPE="Haswell")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True NumPy was imported first")


def test_runtime_imports_nothing_but_the_standard_library():
    # step 1 has to run before NumPy loads, so runtime.py and the one tensorlite module it uses,
    # environment.py, must not load it (both loaded from their files, without the package)
    from tensorlite import environment
    code = ("import importlib.util, sys\n"
            "def load(name, path):\n"
            "    spec = importlib.util.spec_from_file_location(name, path)\n"
            "    module = importlib.util.module_from_spec(spec); sys.modules[name] = module\n"
            "    spec.loader.exec_module(module)\n"
            f"load('tensorlite.environment', {environment.__file__!r})\n"
            f"load('runtime', {runtime.__file__!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba', 'tensorlite')"
            " and m != 'tensorlite.environment'))")
    result = run_python(code, OPENBLAS_CORETYPE="Haswell")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("yes", True),
                                             (" Yes ", True), ("TRUE", True), ("", False),
                                             ("0", False), ("false", False), ("no", False),
                                             ("No", False)])
@pytest.mark.parametrize("variable", OPT_OUTS)
def test_opt_out_values(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    assert runtime.opted_out(variable) is expected


@pytest.mark.parametrize("variable", OPT_OUTS)
def test_opt_out_unset_keeps_the_setting(monkeypatch, variable):
    monkeypatch.delenv(variable, raising=False)
    assert runtime.opted_out(variable) is False


@pytest.mark.parametrize("value", ["2", "on", "keep", "y"])
@pytest.mark.parametrize("variable", OPT_OUTS)
def test_other_opt_out_values_raise_one_clear_error(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(tl.EnvironmentVariableError) as raised:
        runtime.opted_out(variable)
    assert raised.value.variable == variable and raised.value.value == value
    message = str(raised.value)
    assert f"{variable}={value!r}" in message
    assert all(repr(word) in message for word in ("1", "true", "yes", "0", "false", "no"))


@pytest.mark.parametrize("variable", OPT_OUTS)
def test_importing_with_a_bad_opt_out_raises_the_launchers_error(variable):
    # the console scripts turn exactly this class into one line and exit code 2
    code = ("import _tensorlite_launch\n"
            "try:\n"
            "    import tensorlite\n"
            "except ValueError as error:\n"
            "    print(_tensorlite_launch.is_environment_error(error), error.variable)\n")
    result = run_python(code, OPENBLAS_CORETYPE="Haswell", **{variable: "maybe"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"True {variable}"


def test_applied_reports_every_step():
    report = runtime.applied()
    assert list(report) == ["openblas_coretype", "malloc", "numba_threading"]
    assert all(isinstance(step["applied"], bool) and step["reason"] for step in report.values())
    assert tl.kernels.runtime_info()["runtime"] == runtime.applied()


def test_numba_defaults_are_applied_when_the_numba_set_loads():
    code = ("import os, tensorlite as tl\n"
            "before = tl.runtime.applied()['numba_threading']['applied']\n"
            "tl.kernels.use('numba')\n"
            "import numba\n"
            "print(before, os.environ.get('GOMP_SPINCOUNT'), numba.config.THREADING_LAYER_PRIORITY[0],"
            " tl.runtime.applied()['numba_threading']['applied'])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=dict(env, TENSORLITE_KERNELS="numpy"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", runtime.GOMP_SPINCOUNT, "omp", "True"]


def test_user_threading_variables_win():
    code = ("import os, tensorlite as tl\n"
            "import numba\n"
            "print(os.environ['GOMP_SPINCOUNT'], numba.config.THREADING_LAYER_PRIORITY[0],"
            " tl.runtime.applied()['numba_threading']['applied'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TENSORLITE_KERNELS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=dict(env, GOMP_SPINCOUNT="7", NUMBA_THREADING_LAYER="workqueue"),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "tbb", "False"]
