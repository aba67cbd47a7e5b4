"""The guided learning path in docs/ stays true: every chapter's ```python blocks run.

Each chapter's Python blocks are joined in order and run as one script in a fresh process, in
a temporary working directory, with matplotlib's Agg backend and TENSORLITE_DOCS_QUICK=1 (so
heavy chapters use small settings), and with no other TENSORLITE_* or NUMBA_* variable from the
calling environment, so every chapter runs with the library's defaults. Blocks fenced as ```sh
or ```text (or bare) are shown, not run; any other fence, or an indented one, fails, since it
would be silently skipped. After a run, every picture the chapter shows under images/ must have
been written by that run. The chapters are an exact list, the index (docs/README.md) must link
every one, and the programs of chapter 11 must be those of tests/test_torch_programs_unchanged.py.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DOCS = TESTS.parent / "docs"
EXPECTED_CHAPTERS = [
    "01-derivatives.md", "02-the-graph.md", "03-broadcasting.md", "04-your-own-op.md",
    "05-kernels.md", "06-higher-order.md", "07-training.md", "08-convnets.md", "09-gpt.md",
    "10-scaling-out.md", "11-pytorch-programs.md",
]
CHAPTERS = sorted(p for p in DOCS.glob("[0-9][0-9]-*.md"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FENCE_LANGUAGES = {"python", "sh", "text", ""}
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return FENCE.findall(text)


def chapter_environment(quick: bool) -> dict:
    """os.environ without TENSORLITE_* and NUMBA_* settings, with Agg and, if quick, quick mode."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TENSORLITE_", "NUMBA_"))}
    env.update(MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    if quick:
        env["TENSORLITE_DOCS_QUICK"] = "1"
    return env


def bad_fences(text: str) -> list[str]:
    """Fence lines of a Markdown text that are indented or name a language other than
    python, sh or text; such a block would not be run, and nothing would say so."""
    bad, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped.startswith("```"):
            continue
        if line != line.lstrip():
            bad.append(f"line {number}: indented fence {line!r}")
        if inside:
            if stripped != "```":
                bad.append(f"line {number}: a closing fence with text {line!r}")
            inside = False
        else:
            if stripped[3:].strip() not in FENCE_LANGUAGES:
                bad.append(f"line {number}: fence {stripped!r} (use python, sh, text or none)")
            inside = True
    if inside:
        bad.append("a fence is never closed")
    return bad


def shown_images(text: str) -> list[str]:
    """The local images/... pictures a Markdown text shows."""
    return [ref for ref in IMAGE.findall(text) if ref.startswith("images/")]


def test_chapters_exist():
    assert [p.name for p in CHAPTERS] == EXPECTED_CHAPTERS


def test_bad_fences_are_found():
    good = "```python\nx = 1\n```\n```sh\nls\n```\n```\nplain\n```\n```text\nout\n```\n"
    assert bad_fences(good) == []
    for wrong in ("```py\nx\n```\n", "```Python\nx\n```\n", "  ```python\nx\n  ```\n",
                  "```python\nx\n"):
        assert bad_fences(wrong), wrong


@pytest.mark.parametrize("path", [DOCS / "README.md", *CHAPTERS], ids=lambda p: p.name)
def test_fences(path):
    bad = bad_fences(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.name}: " + "; ".join(bad)


def test_python_blocks_are_found():
    text = "intro\n```python\nx = 1\n```\n```sh\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


def test_index_lists_every_chapter():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = set(LINK.findall(index))
    missing = [p.name for p in CHAPTERS if p.name not in linked]
    assert not missing, f"docs/README.md does not link {missing}"
    dangling = [name for name in linked if not (DOCS / name).exists()]
    assert not dangling, f"docs/README.md links missing files {dangling}"


@pytest.mark.parametrize("path", [DOCS / "README.md", *CHAPTERS], ids=lambda p: p.name)
def test_images_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = [ref for ref in IMAGE.findall(text)
               if not ref.startswith("http") and not (path.parent / ref).exists()]
    assert not missing, f"{path.name} shows images that are not in docs/: {missing}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_runs(path, tmp_path):
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{path.name} has no ```python blocks"
    script = tmp_path / "chapter.py"
    script.write_text("\n".join(f"# --- block {i + 1}\n{block}" for i, block in enumerate(blocks)),
                      encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                          env=chapter_environment(quick=True),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"{path.name} failed (exit {done.returncode}):\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    expected = shown_images(path.read_text(encoding="utf-8"))
    if path.name == "02-the-graph.md" and shutil.which("dot") is None:
        # Without Graphviz, tl.viz.draw writes images/02-graph.dot instead of the svg.
        expected = [ref for ref in expected if ref != "images/02-graph.svg"]
    missing = [ref for ref in expected if not (tmp_path / ref).is_file()]
    assert not missing, f"{path.name} shows pictures its run did not write: {missing}"


# Chapter 11's programs, in the order the chapter shows them, as tests/test_torch_programs_
# unchanged.py names them.
PROGRAMS = ["MANUAL", "AUTOGRAD", "CUSTOM_FUNCTION", "NN_MODULES", "OPTIM", "CUSTOM_MODULE",
            "DYNAMIC"]
TORCH_IMPORT = re.compile(r"^import torch(\S*)(.*)$", re.MULTILINE)


def to_tensorlite(source: str) -> str:
    """`import torch[.x] [as y]` pointed at tensorlite, as as_tensorlite in
    tests/test_torch_programs_unchanged.py does (that module needs torch to import)."""
    def swap(match):
        submodule, alias = match.group(1), match.group(2)
        if not submodule and not alias.strip():
            return "import tensorlite as torch"
        return f"import tensorlite{submodule}{alias}"
    return TORCH_IMPORT.sub(swap, source)


def through_training_loop(source: str) -> str:
    """A program up to the end of its last top-level `for step in ...` loop. What follows it
    differs by design: the test collects `result = {...}`, the chapter prints and asserts."""
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("for step in ")]
    assert starts, "no training loop"
    end = starts[-1] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    return "\n".join(lines[:end]).rstrip() + "\n"


def test_chapter_11_programs_are_the_tested_ones():
    tree = ast.parse((TESTS / "test_torch_programs_unchanged.py").read_text(encoding="utf-8"))
    sources = {node.targets[0].id: node.value.value for node in tree.body
               if isinstance(node, ast.Assign) and len(node.targets) == 1
               and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)
               and isinstance(node.value.value, str)}
    chapter = (DOCS / "11-pytorch-programs.md").read_text(encoding="utf-8")
    shown = [block for block in python_blocks(chapter)
             if block.startswith("import tensorlite as torch\n")]
    assert len(shown) == len(PROGRAMS), f"chapter 11 shows {len(shown)} programs"
    for name, block in zip(PROGRAMS, shown):
        assert through_training_loop(block) == through_training_loop(
            to_tensorlite(sources[name])), f"chapter 11's program differs from {name}"


def main(argv: list[str]) -> int:
    """`python tests/test_docs.py docs/03-broadcasting.md ...`: run chapters with their full
    settings in a temporary directory and copy the pictures they draw into docs/images/."""
    import tempfile

    for name in argv or [str(p) for p in CHAPTERS]:
        path = Path(name).resolve()
        code = "\n".join(python_blocks(path.read_text(encoding="utf-8")))
        env = chapter_environment(quick=False)
        print(f"== {path.name}", flush=True)
        with tempfile.TemporaryDirectory() as workdir:
            done = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env)
            if done.returncode:
                return done.returncode
            for picture in sorted(Path(workdir, "images").glob("*")):
                shutil.copy(picture, DOCS / "images" / picture.name)
                print(f"-> docs/images/{picture.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
