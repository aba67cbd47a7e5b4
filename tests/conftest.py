"""Shared pytest configuration: Hypothesis profiles and the kernel-set fixture.

Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:

* ``ci`` (default): 25 examples per property, so that the whole suite stays
  within a few minutes on a 2-core machine.
* ``intense``: 1000 examples per property, for a long hunt for bugs, e.g.
  ``HYPOTHESIS_PROFILE=intense pytest tests/test_ops.py``.
* ``dev``: 5 examples, for a quick edit-test loop.

Every profile prints the reproduction blob of a failing example, and none has
a deadline: the first call of a Numba kernel compiles it, which would trip one.
"""

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
