"""A picture of the graph behind a tensor: `tl.viz.to_dot(t)` (DOT text, the same function as
`tl.to_dot`) and `tl.viz.draw(t, path)` (an SVG or PNG through Graphviz's `dot` program).

    import tensorlite as tl
    import tensorlite.viz
    loss = model(x, y)[1]
    loss.backward(retain_graph=True)          # keep saved values, so small ones are shown
    tl.viz.draw(loss, "graph.svg", params=dict(model.named_parameters()))

Each op is one ellipse (its name and the shape of its output); inputs are boxes: parameters in
green and named, other tensors that require grad in blue, constants in grey. Edges run the way
the data flows, inputs -> op -> output. Small values (at most `max_elements` of them) and the
gradients of leaves are written into the labels while they are still held.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

from tensorlite.autograd.graphviz import to_dot

__all__ = ["to_dot", "draw"]

# What `dot -T<format>` is asked for, by the suffix of the path given to `draw`.
_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def draw(tensor, path, params=None, max_elements: int = 8) -> Path:
    """Draw the graph behind `tensor` into `path` and return the path written.

    The suffix of `path` picks the format: `.svg`, `.png` or `.pdf` are rendered with Graphviz's
    `dot` program, `.dot` writes the DOT text itself. When `dot` is not on PATH, the DOT text
    is written beside `path` with the suffix `.dot`, a one-line warning says so (and how to
    render it later), and that `.dot` path is returned. `params` and `max_elements` are as in
    `to_dot`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".dot" and suffix not in _FORMATS:
        raise ValueError(f"tl.viz.draw: cannot tell the format from {str(path)!r}; end the path "
                         f"in .svg, .png, .pdf or .dot")
    text = to_dot(tensor, params=params, max_elements=max_elements)
    if suffix == ".dot":
        path.write_text(text, encoding="utf-8")
        return path
    program = shutil.which("dot")
    if program is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text, encoding="utf-8")
        warnings.warn(f"tl.viz.draw: Graphviz's `dot` is not on PATH, so wrote {dot_path} "
                      f"instead of {path} (install graphviz, then `dot -T{_FORMATS[suffix]} "
                      f"{dot_path} -o {path}`)", RuntimeWarning, stacklevel=2)
        return dot_path
    done = subprocess.run([program, f"-T{_FORMATS[suffix]}", "-o", str(path)],
                          input=text.encode("utf-8"), capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"tl.viz.draw: `dot` failed (exit {done.returncode}): "
                           f"{message[0] if message else 'no message'}")
    return path
