"""The graph behind a tensor as Graphviz DOT text (`tl.to_dot`, `tl.viz.to_dot`, `Tensor.to_dot`).

The recorded graph holds ops and leaves, never intermediate tensors (see function.py), so an
op's output shape is read from where it is used (its consumer's `input_shapes`) and its value
from whatever kept it: the op itself, when its backward saved its output, or a consumer that
saved that input. Both are gone once a backward without `retain_graph` has freed them.
"""

from __future__ import annotations

import numpy as np

from tensorlite.tensor import Tensor

__all__ = ["to_dot"]

_OUTPUT = -1  # as in function.py: a saved array that is the op's own output

_LEAF_STYLE = 'shape=box, style=filled, fillcolor="lightblue"'
_PARAMETER_STYLE = 'shape=box, style="filled,bold", fillcolor="palegreen"'
_OP_STYLE = "shape=ellipse"


def _dot_label(text: str) -> str:
    """Text made safe inside a double-quoted DOT string: backslashes and quotes escaped, a
    newline as DOT's line break, other control characters written out as `\\xNN` text."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "".join(c if c >= " " and c != "\x7f" else f"\\\\x{ord(c):02x}" for c in text)


def _small(array, max_elements: int):
    """`array` on one line when it has at most `max_elements` elements, else None."""
    if array is None:
        return None
    array = np.asarray(array)
    if array.size > max_elements:
        return None
    return " ".join(np.array2string(array, precision=4, separator=", ").split())


def _parameter_names(params):
    """id(tensor) -> name, from a dict of name -> tensor or a Module (named_parameters)."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = dict(params.named_parameters())
    if not isinstance(params, dict):
        raise TypeError(f"to_dot: params must be a dict of name -> tensor or a Module, "
                        f"not {type(params).__name__}")
    return {id(tensor): str(name) for name, tensor in params.items()}


def _walk(root_op):
    """The ops and leaves behind `root_op` in the order first reached, each op's output
    shape (from its consumers), and each op's output value where a consumer kept it."""
    order, index = [], {}
    output_shape, output_value = {}, {}
    stack = [root_op]
    while stack:
        node = stack.pop()
        if id(node) in index:
            continue
        index[id(node)] = len(order)
        order.append(node)
        if isinstance(node, Tensor):
            continue
        sources = getattr(node, "saved_sources", ())
        for position, (parent, shape) in enumerate(zip(node.parents, node.input_shapes)):
            if parent is None:
                continue
            output_shape.setdefault(id(parent), tuple(shape))
            for source, array in zip(sources, node.saved_arrays):
                if source == position:
                    output_value.setdefault(id(parent), array)
            stack.append(parent)
        for source, array in zip(sources, node.saved_arrays):
            if source == _OUTPUT:
                output_value.setdefault(id(node), array)
    return order, index, output_shape, output_value


def to_dot(root: Tensor, params=None, max_elements: int = 8) -> str:
    """The graph behind `root` as Graphviz DOT text, one node per op and per input.

    Ops are ellipses labelled with their name and output shape; the inputs that need a
    gradient are boxes with their name (if any), shape and dtype, parameters in green and the
    rest in blue. `params` (a dict of name -> tensor, such as `dict(model.named_parameters())`,
    or a Module) names the parameters. Edges follow the data, inputs -> op -> output, labelled
    with the shape that flows along them; the node of `root` itself has a double outline.
    Values with at most `max_elements` elements, and the gradients of leaves, are shown beside
    their node while still held (after `backward(retain_graph=True)`, not after a plain
    backward). Render with `tl.viz.draw`, or `dot -Tsvg graph.dot -o graph.svg`."""
    if not isinstance(root, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(root).__name__}")
    from tensorlite.nn.parameter import Parameter  # nn imports the engine, not the reverse

    names = _parameter_names(params)
    lines = ["digraph tensorlite {", "  rankdir=TB;", "  forcelabels=true;",
             '  node [fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
    start = root if root._ctx is None else root._ctx
    order, index, output_shape, output_value = _walk(start)
    output_shape[id(start)] = tuple(root.shape)
    if root._ctx is not None:
        output_value.setdefault(id(start), root._data)
    for node in order:
        number = index[id(node)]
        notes = []
        if isinstance(node, Tensor):
            name = names.get(id(node)) or node.name
            label = f"{name + ' ' if name else ''}{tuple(node.shape)} {node.dtype}"
            is_parameter = id(node) in names or isinstance(node, Parameter)
            style = _PARAMETER_STYLE if is_parameter else _LEAF_STYLE
            value, grad = node._data, node._grad
        else:
            shape = output_shape.get(id(node))
            label = node.name if shape is None else f"{node.name}\n{shape}"
            if getattr(node, "released", False):
                label += "\n(freed by backward)"
            style = _OP_STYLE
            value = output_value.get(id(node))
            grad = root._grad if node is start else None
        value_text = _small(value, max_elements)
        if value_text is not None:
            notes.append(f"value {value_text}")
        grad_text = _small(None if grad is None else grad._data, max_elements)
        if grad_text is not None:
            notes.append(f"grad {grad_text}")
        extra = ", peripheries=2" if node is start else ""
        if notes:
            extra += f', xlabel="{_dot_label(chr(10).join(notes))}"'
        lines.append(f'  n{number} [{style}{extra}, label="{_dot_label(label)}"];')
    for node in order:
        if isinstance(node, Tensor):
            continue
        for parent, shape in zip(node.parents, node.input_shapes):
            if parent is not None:
                lines.append(f'  n{index[id(parent)]} -> n{index[id(node)]} '
                             f'[label="{_dot_label(str(tuple(shape)))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
