"""The graph behind a tensor as Graphviz DOT text (`tl.to_dot`, `Tensor.to_dot`)."""

from __future__ import annotations

from tensorlite.tensor import Tensor

__all__ = ["to_dot"]


def _dot_label(text: str) -> str:
    """Text made safe inside a double-quoted DOT string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(root: Tensor) -> str:
    """The graph behind `root` as Graphviz DOT text: ops as ellipses, leaf tensors as boxes
    (blue: requires grad), each edge labelled with the shape that flows along it. Render with
    `dot -Tsvg graph.dot > graph.svg`. (After a backward without retain_graph the graph is freed.)"""
    lines = ["digraph tensorlite {", "  rankdir=BT;", '  node [fontname="Helvetica"];',
             f'  out [shape=box, label="output {tuple(root.shape)} {root.dtype}"];']
    if root._ctx is None:
        lines.append("}")
        return "\n".join(lines) + "\n"
    lines.append(f'  n{id(root._ctx)} -> out [label="{tuple(root.shape)}"];')
    seen = set()
    stack = [root._ctx]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Tensor):
            label = _dot_label(f"{node.name + ' ' if node.name else ''}{tuple(node.shape)} "
                               f"{node.dtype}")
            lines.append(f'  n{id(node)} [shape=box, style=filled, fillcolor="lightblue", '
                         f'label="{label}"];')
            continue
        lines.append(f'  n{id(node)} [shape=ellipse, label="{_dot_label(node.name)}"];')
        for parent, shape in zip(node.parents, node.input_shapes):
            if parent is not None:
                lines.append(f'  n{id(parent)} -> n{id(node)} [label="{shape}"];')
                stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"
