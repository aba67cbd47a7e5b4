"""The guided learning path in docs/ stays true: every chapter's ```python blocks run.

Each chapter's Python blocks are joined in order and run as one script in a fresh process, in
a temporary working directory, with matplotlib's Agg backend and TENSORLITE_DOCS_QUICK=1 (so
heavy chapters use small settings). Blocks fenced as ```sh or ```text are shown, not run. The
index (docs/README.md) must list every chapter, and every image a chapter shows must exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHAPTERS = sorted(p for p in DOCS.glob("[0-9][0-9]-*.md"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return FENCE.findall(text)


def test_chapters_exist():
    assert len(CHAPTERS) >= 8, [p.name for p in CHAPTERS]


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
    env = dict(os.environ, MPLBACKEND="Agg", TENSORLITE_DOCS_QUICK="1",
               PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"{path.name} failed (exit {done.returncode}):\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")


def main(argv: list[str]) -> int:
    """`python tests/test_docs.py docs/03-broadcasting.md ...`: run chapters with their full
    settings in a temporary directory and copy the pictures they draw into docs/images/."""
    import shutil
    import tempfile

    for name in argv or [str(p) for p in CHAPTERS]:
        path = Path(name).resolve()
        code = "\n".join(python_blocks(path.read_text(encoding="utf-8")))
        env = dict(os.environ, MPLBACKEND="Agg")
        env.pop("TENSORLITE_DOCS_QUICK", None)
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
