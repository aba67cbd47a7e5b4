"""The sources pass `ruff check` with the configuration in pyproject.toml.

ruff ships as a binary in a Python package, so it is found with importlib and run as
`python -m ruff` from this interpreter's environment, not from whatever is on PATH."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINTED = ["tensorlite", "models", "tests", "benchmarks"]


def test_ruff_reports_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *LINTED],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"ruff check {' '.join(LINTED)} (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
