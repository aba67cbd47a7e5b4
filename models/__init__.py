"""Models built on tensorlite: a GPT language model (``models.gpt``) and the tools to train and
sample it."""

# tensorlite first: importing it before NumPy lets it choose OpenBLAS's kernel set (see
# tensorlite/__init__.py), and every entry point (tensorlite-train, python -m models.train)
# passes through this package.
import tensorlite  # noqa: F401
