"""The package list, which setup.cfg cannot write: tensorlite's subpackages as found on disk,
plus the folder models/, installed as tensorlite.models (package_dir in setup.cfg). A listing
in setup.cfg would have to name each subpackage, and would silently leave out a new one."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["tensorlite", "tensorlite.*"]) + ["tensorlite.models"])
