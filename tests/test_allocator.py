"""tensorlite.allocator: glibc malloc options set once, reported, opt-out respected, no-op elsewhere.

The options are step 2 of tensorlite/runtime.py, which tensorlite.allocator re-exports. They are
process-wide, so each check that imports the module for real runs in a fresh interpreter with a
controlled environment. It loads runtime.py by path, without the rest of tensorlite (NumPy and
Numba), to keep these interpreters fast.
"""

import json
import os
import subprocess
import sys

import pytest

from tensorlite import allocator, runtime

ON_GLIBC = runtime._glibc_version() is not None
glibc_only = pytest.mark.skipif(not ON_GLIBC, reason="mallopt options exist on glibc only")

# Python code that imports runtime.py alone, as the module `runtime`
LOAD = ("import importlib.util, json; "
        f"spec = importlib.util.spec_from_file_location('runtime', {runtime.__file__!r}); "
        "runtime = importlib.util.module_from_spec(spec); spec.loader.exec_module(runtime)")
REPORT = LOAD + "; print(json.dumps(runtime.malloc_info()))"


def clean_environment(**extra):
    """The current environment without any malloc setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in allocator.USER_MALLOC_VARIABLES + (allocator.OPT_OUT_VARIABLE, "GLIBC_TUNABLES")}
    env.update(extra)
    return env


def run_python(code, **extra_env):
    done = subprocess.run([sys.executable, "-c", code], env=clean_environment(**extra_env),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc_only
def test_import_sets_both_thresholds():
    info = run_python(REPORT)
    assert info["applied"] is True
    assert info["options"] == {"M_MMAP_THRESHOLD": allocator.MMAP_THRESHOLD,
                               "M_TRIM_THRESHOLD": allocator.TRIM_THRESHOLD}
    assert info["reason"].startswith("glibc ")


@glibc_only
@pytest.mark.parametrize("value", ["1", "yes", "true", " TRUE "])
def test_opt_out_keeps_glibc_defaults(value):
    info = run_python(REPORT, TENSORLITE_KEEP_MALLOC=value)
    assert info == {"applied": False, "options": {},
                    "reason": "TENSORLITE_KEEP_MALLOC is set: glibc defaults kept"}


@glibc_only
@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_opt_out_zero_means_not_opted_out(value):
    assert run_python(REPORT, TENSORLITE_KEEP_MALLOC=value)["applied"] is True


@glibc_only
@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "1048576"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")])
def test_user_malloc_settings_win(name, value):
    info = run_python(REPORT, **{name: value})
    assert info["applied"] is False and info["options"] == {}
    assert name in info["reason"]


@glibc_only
def test_freed_blocks_are_reused_without_page_faults():
    # 64 MiB is above glibc's largest dynamic mmap threshold (32 MiB): by default every such
    # array is a fresh mapping whose pages fault in again; with the options it is heap memory
    # that stays mapped after free.
    measure = """
import resource
import numpy as np
def touch():
    a = np.empty(64 << 20, np.uint8); a[::4096] = 1; del a
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""
    faults = {}
    for arm, setup in (("on", LOAD), ("off", "import json")):
        done = subprocess.run([sys.executable, "-c", setup + "\n" + measure], env=clean_environment(),
                              capture_output=True, text=True, check=True)
        faults[arm] = json.loads(done.stdout)
    assert faults["on"] < 5 < faults["off"], faults


@pytest.fixture
def fresh_module_state(monkeypatch):
    """The module as if never configured, in an environment with no malloc settings."""
    monkeypatch.setattr(runtime, "_malloc", {"applied": False, "reason": "", "options": {}})
    for name in allocator.USER_MALLOC_VARIABLES + (allocator.OPT_OUT_VARIABLE, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)

    def use_libc(glibc_version, libc):
        monkeypatch.setattr(runtime, "_glibc_version", lambda: glibc_version)
        monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: libc)

    return use_libc


class FakeLibc:
    """Records mallopt calls and answers `result` (glibc: 1 accepted, 0 refused)."""

    def __init__(self, result):
        self.result, self.calls = result, []

    def mallopt(self, parameter, value):
        self.calls.append((parameter.value, value.value))
        return self.result


def test_not_glibc_is_a_no_op(fresh_module_state):
    libc = FakeLibc(1)
    fresh_module_state(None, libc)
    assert allocator.configure() == {"applied": False, "reason": "not glibc: nothing to set",
                                     "options": {}}
    assert libc.calls == []
    assert allocator.format_info() == "malloc=defaults (not glibc: nothing to set)"


def test_configure_applies_once(fresh_module_state):
    libc = FakeLibc(1)
    fresh_module_state("2.36", libc)
    first = allocator.configure()
    assert allocator.configure() == first
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                          (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    assert allocator.format_info() == "malloc=M_MMAP_THRESHOLD=1024MiB,M_TRIM_THRESHOLD=never"


def test_refused_mmap_threshold_falls_back_to_glibc_ceiling(fresh_module_state):
    class CeilingLibc(FakeLibc):
        def mallopt(self, parameter, value):
            super().mallopt(parameter, value)
            return int(value.value <= allocator.MMAP_THRESHOLD_FALLBACK
                       or parameter.value == allocator.M_TRIM_THRESHOLD)

    libc = CeilingLibc(None)
    fresh_module_state("2.17", libc)
    assert allocator.configure()["options"] == {"M_MMAP_THRESHOLD": allocator.MMAP_THRESHOLD_FALLBACK,
                                                "M_TRIM_THRESHOLD": allocator.TRIM_THRESHOLD}
    assert [value for _, value in libc.calls] == [allocator.MMAP_THRESHOLD, allocator.MMAP_THRESHOLD_FALLBACK,
                                                  allocator.TRIM_THRESHOLD]


def test_refused_option_is_reported(fresh_module_state):
    fresh_module_state("2.36", FakeLibc(0))
    assert allocator.configure() == {"applied": False, "options": {},
                                     "reason": "glibc 2.36 refused mallopt: defaults kept"}


def test_allocator_names_are_the_runtime_ones():
    assert allocator.configure is runtime.configure_malloc
    assert allocator.info is runtime.malloc_info and allocator.format_info is runtime.format_malloc_info
    assert allocator.OPT_OUT_VARIABLE == "TENSORLITE_KEEP_MALLOC"
    assert allocator.info() == runtime.applied()["malloc"]
