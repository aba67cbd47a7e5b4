"""Switches read by every op: grad mode (per thread), anomaly mode, the active profiler, and the
random generator behind `randn`, initialisation and dropout.

They live apart from the engine because everything reads them and they depend on nothing.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "detect_anomaly", "is_anomaly_enabled",
           "manual_seed", "rng"]


class _State:
    anomaly_enabled = False
    generator = np.random.default_rng()
    profiler = None  # a tensorlite.profiler.Profiler while one is active


class _ThreadState(threading.local):
    """The switches each thread has its own copy of, as in PyTorch: `no_grad` in one thread
    does not stop another thread recording its graph, and a backward pass (which turns
    recording off unless create_graph) does not hide the graph another thread is building."""
    grad_enabled = True
    # The op whose backward is being recorded by a create_graph pass (None otherwise): while it is
    # set, turning a graph-carrying Tensor into an array would silently drop second derivatives.
    recording_backward_of = None


_thread_state = _ThreadState()


def is_grad_enabled() -> bool:
    """True unless this thread is inside `no_grad()`."""
    return _thread_state.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def _recreate_cm(self):
        # Used as a decorator: a fresh object per call, so that calls running at once (in
        # threads, or nested) each restore their own previous mode.
        return type(self)(self.enabled)

    def __enter__(self):
        self.previous = _thread_state.grad_enabled
        _thread_state.grad_enabled = self.enabled

    def __exit__(self, *exc_info):
        _thread_state.grad_enabled = self.previous
        return False


def no_grad():
    """Context manager (or decorator) in which operations record no graph. Like PyTorch's, it
    holds for the thread that enters it; other threads keep their own mode."""
    return _GradMode(False)


def enable_grad():
    """Context manager (or decorator) that turns graph recording back on inside `no_grad`."""
    return _GradMode(True)


def is_anomaly_enabled() -> bool:
    return _State.anomaly_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Inside this block every op checks its results: the first op whose forward output or
    backward gradient contains NaN or inf, although its own inputs were finite, raises a
    RuntimeError naming that op. Slow; meant for hunting down where a NaN was born."""
    previous = _State.anomaly_enabled
    _State.anomaly_enabled = True
    try:
        yield
    finally:
        _State.anomaly_enabled = previous


def manual_seed(seed: int) -> None:
    """Seed the generator behind `randn`, parameter initialisation and dropout."""
    _State.generator = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    """The generator behind `randn`, parameter initialisation and dropout."""
    return _State.generator

