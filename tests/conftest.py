"""Shared pytest configuration: Hypothesis profiles, the kernel-set fixture, and what the
command-line tests share (tiny model flags, a small corpus file, hiding an optional package).

Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE or with
Hypothesis's own pytest option, e.g. ``--hypothesis-profile=intense``:

* ``ci`` (default): 25 examples per property, so that the whole suite stays
  within a few minutes on a 2-core machine.
* ``intense``: 1000 examples per property, for a long hunt for bugs, e.g.
  ``HYPOTHESIS_PROFILE=intense pytest tests/test_ops.py``.
* ``dev``: 5 examples, for a quick edit-test loop.

Every profile prints the reproduction blob of a failing example, and none has
a deadline: the first call of a Numba kernel compiles it, which would trip one.
"""

import builtins
import os

import pytest
from hypothesis import HealthCheck, settings

# The kernel_set fixture below is function scoped but only switches a global
# flag, so re-using it across the examples of one property test is correct.
_common = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("ci", max_examples=25, **_common)
settings.register_profile("intense", max_examples=1000, **_common)
settings.register_profile("dev", max_examples=5, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


KERNEL_SETS = ["numpy", "numba"]


@pytest.fixture(params=KERNEL_SETS)
def kernel_set(request):
    """Run the test once with each kernel set, restoring the previous one after."""
    from tensorlite import kernels

    previous = kernels.active()
    kernels.use(request.param)
    assert kernels.active() == request.param
    try:
        yield request.param
    finally:
        kernels.use(previous)


# Flags of a model small enough that a training step takes a few milliseconds, and of a run that
# evaluates, logs and warms up almost at once. Tests take them with ``from conftest import ...``.
TINY_MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4"]
QUICK = ["--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1", "--warmup-iters", "1", "--no-progress"]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """About 20 000 characters of the built-in corpus as a data file (read-only)."""
    from tensorlite.models.data import default_corpus_text

    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(default_corpus_text()[:20_000], encoding="utf-8")
    return str(path)


@pytest.fixture
def hide_package(monkeypatch):
    """``hide_package("matplotlib")``: importing it or its submodules raises ImportError for the
    rest of the test, as if the optional package were not installed."""
    real_import = builtins.__import__

    def hide(prefix):
        def import_without(name, *args, **kwargs):
            if name.startswith(prefix):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", import_without)

    return hide
