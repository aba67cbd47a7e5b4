"""tensorlite-convert --to-hf replaces its directory atomically (models/atomic_dir.py).

A real child process exporting over a previous export is killed with SIGKILL at each point of
the replacement; afterwards the directory holds the complete old export or the complete new one
(same files, same bytes), it loads, and the next run removes or restores what was left.
"""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("safetensors.numpy")
pytest.importorskip("regex")

from tensorlite.models import atomic_dir, convert  # noqa: E402
from tensorlite.models import checkpoint as ckpt_io  # noqa: E402
from tensorlite.models.gpt import GPT, GPTConfig  # noqa: E402
from tensorlite.models.gpt2_tokenizer import END_OF_TEXT, GPT2Tokenizer, bytes_to_unicode  # noqa: E402
from tensorlite.models.run_lock import RunLock  # noqa: E402
from tensorlite.models.tokenizer import CharTokenizer  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS = "abcdefgh \n."


def gpt2_tokenizer():
    symbols = list(bytes_to_unicode().values()) + ["he", END_OF_TEXT]
    return GPT2Tokenizer({s: i for i, s in enumerate(symbols)}, [("h", "e")])


def write_checkpoint(path, tokenizer, seed):
    np.random.seed(seed)
    import tensorlite as tl

    tl.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8)
    ckpt_io.save(path, GPT(config), optimizer=None, config=config, tokenizer=tokenizer, rng_state=None,
                 iteration=0)
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two checkpoints and their exports written without interruption: the old one with GPT-2's
    tokenizer (vocab.json, merges.txt and tensorlite_tokenizer.json), the new one a char model."""
    base = tmp_path_factory.mktemp("exports")
    old = write_checkpoint(base / "old.npz", gpt2_tokenizer(), seed=1)
    new = write_checkpoint(base / "new.npz", CharTokenizer(CHARS), seed=2)
    for name, ckpt in (("old", old), ("new", new)):
        assert convert.main(["--checkpoint", ckpt, "--to-hf", str(base / f"ref-{name}")]) == 0
    return {"old": old, "new": new, "old_files": snapshot(base / "ref-old"), "new_files": snapshot(base / "ref-new")}


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def leftovers(parent, name="hf"):
    """Names beside the export that are neither it nor its lock file."""
    return sorted(e for e in os.listdir(parent) if e.startswith((name, "." + name)) and e not in (name, name + ".lock"))


def loads(directory, tmp_path):
    """Converting the directory back gives a checkpoint: the export is usable, not just present."""
    out = tmp_path / f"back-{len(os.listdir(tmp_path))}.npz"
    assert convert.main(["--from-hf", str(directory), "--out", str(out)]) == 0
    return ckpt_io.load(out).tokenizer["type"]


# A child that exports checkpoint NEW over DIR and SIGKILLs itself at one point of the work.
DRIVER = textwrap.dedent(
    """
    import os, shutil, signal, sys
    sys.path.insert(0, {root!r})
    from tensorlite.models import atomic_dir, convert, gpt2_tokenizer, hf

    point, argv = {point!r}, {argv!r}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point.startswith("write:"):  # after the Nth file of the export is written
        real_write, written = hf.atomic_write, []

        def counting_write(path, write):
            real_write(path, write)
            written.append(path)
            if len(written) == int(point.split(":")[1]):
                die()

        hf.atomic_write = gpt2_tokenizer.atomic_write = counting_write

    real_exchange = atomic_dir._exchange

    def exchange(a, b):
        if point == "before-exchange":
            die()
        if point.startswith("renames"):
            return False  # a file system without RENAME_EXCHANGE: two renames instead
        swapped = real_exchange(a, b)
        assert swapped, "this file system cannot exchange"
        if point == "after-exchange":
            die()
        return swapped

    atomic_dir._exchange = exchange

    real_rename, renames = os.rename, []

    def rename(a, b):
        renames.append(a)
        if point == "renames:between" and len(renames) == 2:
            die()
        real_rename(a, b)
        if point == "renames:after" and len(renames) == 2:
            die()

    os.rename = rename

    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if point == "in-removal":  # part of the old contents gone, the rest still there
            os.remove(os.path.join(path, sorted(os.listdir(path))[0]))
            die()
        real_rmtree(path, *args, **kwargs)

    shutil.rmtree = rmtree
    sys.exit(convert.main(argv))
    """
)

# point -> what the directory holds right after the kill
KILL_POINTS = {
    "write:1": "old", "write:2": "old", "write:3": "old", "before-exchange": "old",
    "after-exchange": "new", "in-removal": "new", "renames:between": None, "renames:after": "new",
}


def kill_export(point, ckpt, target):
    argv = ["--checkpoint", ckpt, "--to-hf", str(target), "--overwrite"]
    child = subprocess.run([sys.executable, "-c", DRIVER.format(root=ROOT, point=point, argv=argv)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_export_leaves_the_old_or_the_new_one_whole(exports, tmp_path, capsys, point):
    target = tmp_path / "hf"
    assert convert.main(["--checkpoint", exports["old"], "--to-hf", str(target)]) == 0
    assert snapshot(target) == exports["old_files"]

    kill_export(point, exports["new"], target)
    holds = KILL_POINTS[point]
    if holds is None:
        # Between the two fallback renames the name is free and the old export waits whole
        # under DIR.old-*; the next run puts it back.
        assert not target.exists()
        (old,) = [e for e in leftovers(tmp_path) if e.startswith("hf.old-")]
        assert snapshot(tmp_path / old) == exports["old_files"]
        assert any("restored" in note for note in atomic_dir.recover(target))
        holds = "old"
    assert snapshot(target) == exports[f"{holds}_files"]
    assert loads(target, tmp_path) == ("gpt2" if holds == "old" else "char")
    left = leftovers(tmp_path)

    capsys.readouterr()
    assert convert.main(["--checkpoint", exports["new"], "--to-hf", str(target), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert snapshot(target) == exports["new_files"]
    assert leftovers(tmp_path) == []
    if left:
        assert f"removed {len(left)} leftover(s) of an interrupted export" in out


def test_no_overwrite_refuses_a_non_empty_directory_and_a_file(exports, tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "README.md").write_text("mine")
    code = convert.main(["--checkpoint", exports["new"], "--to-hf", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert code == 2 and "is not empty; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path / "hf") == {"README.md": b"mine"}
    (tmp_path / "file").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code = convert.main(["--checkpoint", exports["new"], "--to-hf", str(tmp_path / "file"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "exists and is not a directory" in err
        assert (tmp_path / "file").read_text() == "mine"
    # --overwrite replaces the whole directory: the stale file does not stay beside the export
    assert convert.main(["--checkpoint", exports["new"], "--to-hf", str(tmp_path / "hf"), "--overwrite"]) == 0
    assert snapshot(tmp_path / "hf") == exports["new_files"]
    assert leftovers(tmp_path) == []


def test_a_second_export_into_the_same_directory_is_refused(exports, tmp_path, capsys):
    target = tmp_path / "hf"
    assert convert.main(["--checkpoint", exports["old"], "--to-hf", str(target)]) == 0
    with RunLock(str(target) + ".lock", str(target)):  # another convert is writing DIR
        code = convert.main(["--checkpoint", exports["new"], "--to-hf", str(target), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is in use by another run" in err, err
    assert snapshot(target) == exports["old_files"]
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(atomic_dir.SYS_RENAMEAT2.get(os.uname().machine.lower()) is None or not sys.platform.startswith("linux"),
                    reason="renameat2 by system call number is known for Linux x86_64 and aarch64 only")
def test_exchange_through_the_raw_system_call(tmp_path):
    """The path taken where libc has no renameat2 wrapper (glibc before 2.28)."""
    renameat2 = atomic_dir._load_renameat2(libc_wrapper=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").write_text("a")
    (tmp_path / "b").write_text("a file")
    result = renameat2(atomic_dir.AT_FDCWD, os.fsencode(tmp_path / "a"), atomic_dir.AT_FDCWD,
                       os.fsencode(tmp_path / "b"), atomic_dir.RENAME_EXCHANGE)
    if result != 0:
        pytest.skip("this file system cannot exchange")
    assert (tmp_path / "a").read_text() == "a file"
    assert (tmp_path / "b" / "from-a").read_text() == "a"
