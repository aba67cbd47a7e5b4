"""tl.viz: the graph behind a tensor as DOT text, and drawn with or without Graphviz."""

import re
import shutil

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.viz

# One DOT statement per line, as to_dot writes them: a node `n3 [attrs];` or an edge
# `n1 -> n2 [attrs];`. A quoted string is "..." with \" and \\ escaped inside.
_STRING = r'"(?:[^"\\]|\\.)*"'
_ATTRS = rf"\[((?:\s*\w+=(?:{_STRING}|[\w.]+),?)*)\s*\];"
_NODE = re.compile(rf"^\s*(n\d+) {_ATTRS}$")
_EDGE = re.compile(rf"^\s*(n\d+) -> (n\d+) {_ATTRS}$")
_ATTR = re.compile(rf"(\w+)=({_STRING}|[\w.]+)")


def _unquote(value):
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])


def parse(dot):
    """(nodes: name -> attributes, edges: [(from, to, attributes)]), checking the structure."""
    lines = dot.strip().splitlines()
    assert lines[0] == "digraph tensorlite {" and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if match := _EDGE.match(line):
            edges.append((match[1], match[2], dict((k, _unquote(v))
                                                   for k, v in _ATTR.findall(match[3]))))
        elif match := _NODE.match(line):
            assert match[1] not in nodes, f"node {match[1]} declared twice"
            nodes[match[1]] = {k: _unquote(v) for k, v in _ATTR.findall(match[2])}
        else:
            assert re.match(r"^\s*(\w+=[\w.]+|(node|edge) \[.*\]);$", line), line
    for source, target, _ in edges:
        assert source in nodes and target in nodes, (source, target)
    return nodes, edges


def _by_label(nodes, start):
    found = [name for name, attrs in nodes.items() if attrs["label"].startswith(start)]
    assert len(found) == 1, (start, nodes)
    return found[0]


def test_to_dot_is_one_function_under_both_names():
    assert tl.viz.to_dot is tl.to_dot


def test_ops_leaves_and_parameters_with_shapes_and_data_flow_edges():
    layer = tl.nn.Linear(3, 2)
    x = tl.Tensor(np.ones((4, 3)), requires_grad=True)
    x.name = "x"
    loss = layer(x).relu().sum()
    nodes, edges = parse(tl.viz.to_dot(loss, params=dict(layer.named_parameters())))
    weight, bias, leaf = (_by_label(nodes, "weight"), _by_label(nodes, "bias"),
                          _by_label(nodes, "x (4, 3)"))
    assert nodes[weight]["fillcolor"] != nodes[leaf]["fillcolor"]  # parameters stand out
    assert nodes[weight]["shape"] == nodes[leaf]["shape"] == "box"
    ops = {name: attrs for name, attrs in nodes.items() if attrs["shape"] == "ellipse"}
    assert len(ops) >= 3 and all(name not in ops for name in (weight, bias, leaf))
    relu = _by_label(ops, "Relu")
    assert ops[relu]["label"] == "Relu\n(4, 2)"  # the op's output shape
    root = _by_label(ops, "Sum")
    assert nodes[root].get("peripheries") == "2"
    # data-flow order: leaves only send, the output only receives
    assert {e[0] for e in edges} >= {weight, bias, leaf}
    assert all(target not in (weight, bias, leaf) for _, target, _ in edges)
    assert all(source != root for source, _, _ in edges)
    assert (relu, root) in {(s, t) for s, t, _ in edges}


def test_small_values_and_gradients_shown_while_retained():
    x = tl.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = (x.tanh() * 3.0).sum()
    y.backward(retain_graph=True)
    nodes, _ = parse(tl.viz.to_dot(y))
    leaf = nodes[_by_label(nodes, "(2,)")]
    assert "value [ 1., -2.]" in leaf["xlabel"] and "grad [" in leaf["xlabel"]
    tanh = nodes[_by_label(nodes, "Tanh")]
    assert "0.7616" in tanh["xlabel"]  # tanh saved its output for backward
    big = tl.Tensor(np.ones(20), requires_grad=True)
    nodes, _ = parse(tl.viz.to_dot((big * 2.0).sum()))
    assert "xlabel" not in nodes[_by_label(nodes, "(20,)")]


def test_freed_graph_still_parses():
    x = tl.Tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).exp().sum()
    y.backward()
    nodes, edges = parse(tl.viz.to_dot(y))
    assert "freed" in nodes[_by_label(nodes, "Sum")]["label"]


@pytest.mark.parametrize("name", ['say "hi"', "back\\slash", "two\nlines", "tab\tbell\x07",
                                  "{braces}; [x] -> <y>", "\\n is not a newline", "ünïcode"])
def test_odd_names_are_escaped_and_round_trip(name):
    x = tl.Tensor(np.ones(2), requires_grad=True)
    x.name = name
    nodes, _ = parse(tl.viz.to_dot(x * 2.0))
    label = nodes[_by_label(nodes, name.split("\t")[0][:3])]["label"]
    shown = name.replace("\t", "\\x09").replace("\x07", "\\x07")  # control chars written out
    assert label == f"{shown} (2,) float64"


def test_a_lone_leaf_is_one_node():
    nodes, edges = parse(tl.viz.to_dot(tl.Tensor(np.ones(2), requires_grad=True)))
    assert len(nodes) == 1 and edges == []


def test_draw_without_dot_writes_the_dot_file_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    x = tl.Tensor(np.ones(2), requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"`dot` is not on PATH.*graph\.dot") as caught:
        written = tl.viz.draw((x * 2.0).sum(), tmp_path / "graph.svg")
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert written == tmp_path / "graph.dot" and not (tmp_path / "graph.svg").exists()
    parse(written.read_text())


def test_draw_refuses_an_unknown_suffix(tmp_path):
    x = tl.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"\.svg, \.png"):
        tl.viz.draw(x * 2.0, tmp_path / "graph.jpeg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", b"\x89PNG")])
def test_draw_renders_with_dot(tmp_path, suffix, magic):
    x = tl.Tensor(np.ones(2), requires_grad=True)
    x.name = 'odd "name" \\ here\n'
    written = tl.viz.draw((x * 2.0).sum(), tmp_path / f"graph{suffix}")
    assert written == tmp_path / f"graph{suffix}"
    assert magic in written.read_bytes()[:400]
