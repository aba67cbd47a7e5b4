"""Damaged and hostile files given to tl.load and to the checkpoint loader: every bit of every
member's .npy header flipped in turn, with the zip CRC left as written and with it recomputed
to match the damage; headers that lie about the size; dtypes the engine cannot hold; files that
are not regular files; cut-short files; and what is said about best.npz beside a damaged
ckpt.npz. Each ends in exactly one SerializationError / CheckpointError of one line naming the
file and the member, or in values identical to the bit to what was saved: never different
values, another exception, or a hang."""

import io
import json
import os
import struct
import threading
import zipfile
import zlib

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models import sample
from tensorlite.models.checkpoint import CheckpointError
from tensorlite.serialization import SerializationError

# ------------------------------------------------------------------------------------------
# helpers: find and damage the members of a zip archive


def npy_headers(raw):
    """(member name, start, end) of the .npy header (magic, version, header length and header
    text) of each member of the stored zip archive `raw`, as offsets into `raw`."""
    headers = []
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_length + extra_length
            assert raw[start:start + 6] == b"\x93NUMPY" and raw[start + 6] == 1
            (header_length,) = struct.unpack("<H", raw[start + 8:start + 10])
            headers.append((info.filename, start, start + 10 + header_length))
    return headers


def fix_crcs(raw):
    """`raw` with the CRC of every member, in its local header and in the central directory,
    recomputed from the bytes it holds now: damage the CRC cannot reveal."""
    raw = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        infos = archive.infolist()
        entry = archive.start_dir
    for info in infos:
        name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_length + extra_length
        crc = struct.pack("<I", zlib.crc32(raw[start:start + info.compress_size]))
        raw[info.header_offset + 14:info.header_offset + 18] = crc
        assert raw[entry:entry + 4] == b"PK\x01\x02"
        raw[entry + 16:entry + 20] = crc
        lengths = struct.unpack("<HHH", raw[entry + 28:entry + 34])
        entry += 46 + sum(lengths)
    return bytes(raw)


def replace_member(path, name, raw):
    """Rewrite the archive at `path` with member `name` holding `raw` (CRCs all valid)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = raw
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def member_bytes(path, name):
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def assert_identical(loaded, original, where="value"):
    """Equal types and values down to the bit (arrays: dtype, shape, memory layout, bytes)."""
    assert type(loaded) is type(original), where
    if isinstance(original, dict):
        assert list(loaded) == list(original), where
        for key in original:
            assert_identical(loaded[key], original[key], f"{where}/{key}")
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original), where
        for i, (a, b) in enumerate(zip(loaded, original)):
            assert_identical(a, b, f"{where}/{i}")
    elif isinstance(original, tl.Tensor):
        assert loaded.requires_grad == original.requires_grad, where
        assert_identical(loaded.data, original.data, where)
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape, where
        assert np.asarray(loaded).flags.f_contiguous == np.asarray(original).flags.f_contiguous, where
        assert np.asarray(loaded).tobytes() == np.asarray(original).tobytes(), where
    else:
        assert loaded == original, where


def checkpoint_contents(checkpoint):
    return {"model": checkpoint.model_state, "optimizer": checkpoint.optimizer_state,
            "config": checkpoint.config, "tokenizer": checkpoint.tokenizer, "rng": checkpoint.rng_state,
            "iteration": checkpoint.iteration, "extra": checkpoint.extra}


def load_outcome(load, path, error_type, original, member):
    """'identical' or 'error' for one load of a damaged file; anything else fails the test."""
    try:
        loaded = load(path)
    except error_type as error:
        message = str(error)
        assert type(error) is error_type, message
        assert "\n" not in message and str(path) in message and repr(member) in message, message
        return "error"
    assert_identical(loaded, original)
    return "identical"


def flip_every_header_bit(path, load, error_type, original, fix_crc):
    """Flip each bit of each member's .npy header in turn and load: {outcome: count}."""
    raw = path.read_bytes()
    outcomes = {"identical": 0, "error": 0}
    for member, start, end in npy_headers(raw):
        for bit in range((end - start) * 8):
            damaged = bytearray(raw)
            damaged[start + bit // 8] ^= 1 << (bit % 8)
            path.write_bytes(fix_crcs(damaged) if fix_crc else damaged)
            outcomes[load_outcome(load, path, error_type, original, member)] += 1
    path.write_bytes(raw)
    return outcomes


# ------------------------------------------------------------------------------------------
# small files of each kind


def tl_save_file(path):
    """A tl.save file with a float32 matrix, a Fortran-ordered float64 matrix, a 0-d int64 and
    a bool vector (five members with tree.json), and what it holds. The float32 matrix is
    larger than zipfile's 4 KiB read-ahead, which on its own would reach the end of a member
    and so check its CRC."""
    rng = np.random.default_rng(0)
    obj = {"w": rng.standard_normal((32, 64)).astype(np.float32),
           "f": np.asfortranarray(rng.standard_normal((2, 3))),
           "n": np.int64(-7), "mask": np.array([True, False, True, True, False])}
    tl.save(obj, path)
    return obj


def tiny_checkpoint(path, iteration=3):
    """A checkpoint of a one-matrix model with Adam-like state (three members with meta.json);
    the matrix is larger than zipfile's 4 KiB read-ahead, as in tl_save_file."""
    rng = np.random.default_rng(iteration)
    weight = rng.standard_normal((32, 64)).astype(np.float32)
    optimizer = {"state": {0: {"step": iteration, "exp_avg": rng.standard_normal((3, 4)).astype(np.float32)}},
                 "param_groups": [{"lr": 0.01, "params": [0]}]}
    ckpt_io.save(path, {"w": weight}, optimizer, {"n_embd": 4}, {"type": "char", "chars": "ab"}, None, iteration,
                 extra={"best_val_loss": 1.25})
    return checkpoint_contents(ckpt_io.load(path))


def tiny_gpt_checkpoint(path):
    """A checkpoint tensorlite-sample can sample from: a one-layer GPT over a small alphabet."""
    from tensorlite.models.gpt import GPT, GPTConfig
    from tensorlite.models.tokenizer import CharTokenizer

    tokenizer = CharTokenizer("\n abcdefgh")
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)
    tl.manual_seed(0)
    ckpt_io.save(path, GPT(config), None, config, tokenizer, None, 5)


def load_checkpoint(path):
    return checkpoint_contents(ckpt_io.load(path))


# ------------------------------------------------------------------------------------------
# every bit of every .npy header


@pytest.mark.parametrize("fix_crc", [False, True], ids=["crc-as-written", "crc-recomputed"])
def test_every_header_bit_flip_is_an_error_or_changes_nothing(tmp_path, fix_crc):
    saved = tmp_path / "state.npz"
    original = tl_save_file(saved)
    outcomes = flip_every_header_bit(saved, tl.load, SerializationError, original, fix_crc)
    assert outcomes["error"] > 0

    checkpoint = tmp_path / "ckpt.npz"
    original = tiny_checkpoint(checkpoint)
    outcomes = flip_every_header_bit(checkpoint, load_checkpoint, CheckpointError, original, fix_crc)
    assert outcomes["error"] > 0


# ------------------------------------------------------------------------------------------
# headers that lie


def rewrite_header(npy, old, new):
    """The .npy file `npy` with `old` replaced by `new` in its header text, the padding
    adjusted so that the header keeps its length."""
    (length,) = struct.unpack("<H", npy[8:10])
    text = npy[10:10 + length]
    changed = text.replace(old, new)
    assert changed != text and changed.endswith(b"\n")
    changed = changed[:-1].rstrip(b" ").ljust(length - 1, b" ") + b"\n"
    assert len(changed) == length
    return npy[:10] + changed + npy[10 + length:]


def test_header_claiming_a_trillion_elements_is_refused_without_allocating(tmp_path):
    huge = rewrite_header(npy_bytes(np.zeros((3, 4), dtype=np.float32)), b"(3, 4)", b"(1000000000000,)")
    assert len(huge) < 200

    saved = tmp_path / "state.npz"
    tl_save_file(saved)
    replace_member(saved, "obj/w.npy", huge)
    with pytest.raises(SerializationError) as info:
        tl.load(saved)
    message = str(info.value)
    assert "\n" not in message and "'obj/w.npy'" in message and "(1000000000000,)" in message, message

    checkpoint = tmp_path / "ckpt.npz"
    tiny_checkpoint(checkpoint)
    replace_member(checkpoint, "model/w.npy", huge)
    with pytest.raises(CheckpointError, match="truncated or corrupt .*'model/w.npy'"):
        ckpt_io.load(checkpoint)


def set_header_length(change):
    def damage(npy):
        (length,) = struct.unpack("<H", npy[8:10])
        return npy[:8] + struct.pack("<H", change(length)) + npy[10:]
    return damage


# (label, damage of a .npy file): each keeps the member's length, and the CRC is made to match.
DAMAGED_HEADERS = [
    ("unbalanced-bracket", lambda npy: rewrite_header(npy, b"), }", b" , }")),
    ("text-after-the-dict", lambda npy: rewrite_header(npy, b"}", b"} x")),
    ("not-a-dict", lambda npy: rewrite_header(rewrite_header(npy, b"{", b"["), b"}", b"]")),
    ("negative-shape", lambda npy: rewrite_header(npy, b"(32, 64)", b"(-32, 64)")),
    ("float-shape", lambda npy: rewrite_header(npy, b"(32, 64)", b"(32.0, 64)")),
    ("fortran-order-not-a-bool", lambda npy: rewrite_header(npy, b"False", b"0")),
    ("unknown-dtype", lambda npy: rewrite_header(npy, b"<f4", b"<q9")),
    ("byte-order-swapped", lambda npy: rewrite_header(npy, b"<f4", b">f4")),
    ("dtype-not-as-numpy-writes-it", lambda npy: rewrite_header(npy, b"<f4", b"=f4")),
    ("header-length-plus-one", set_header_length(lambda length: length + 1)),
    ("header-length-minus-16", set_header_length(lambda length: length - 16)),
    ("header-length-huge", set_header_length(lambda length: 0xFFFF)),
    ("version-3", lambda npy: npy[:6] + b"\x03" + npy[7:]),
]


@pytest.mark.parametrize("damage", [case[1] for case in DAMAGED_HEADERS], ids=[case[0] for case in DAMAGED_HEADERS])
def test_damaged_header_text_is_one_error(tmp_path, damage):
    saved = tmp_path / "state.npz"
    tl_save_file(saved)
    raw = member_bytes(saved, "obj/w.npy")
    damaged = damage(raw)
    assert damaged != raw and len(damaged) == len(raw)
    replace_member(saved, "obj/w.npy", damaged)
    with pytest.raises(SerializationError) as info:
        tl.load(saved)
    message = str(info.value)
    assert type(info.value) is SerializationError and "\n" not in message and "'obj/w.npy'" in message, message


def test_cut_short_files_and_members_are_one_error(tmp_path):
    saved = tmp_path / "state.npz"
    tl_save_file(saved)
    checkpoint = tmp_path / "ckpt.npz"
    tiny_checkpoint(checkpoint)
    for path, load, error_type in ((saved, tl.load, SerializationError), (checkpoint, ckpt_io.load, CheckpointError)):
        raw = path.read_bytes()
        for cut in range(0, len(raw), 29):  # the file cut short: no central directory
            path.write_bytes(raw[:cut])
            with pytest.raises(error_type) as info:
                load(path)
            assert type(info.value) is error_type and "\n" not in str(info.value), (cut, str(info.value))
        path.write_bytes(raw)

    # A member cut short, or too long, inside an intact archive whose CRC matches the damage.
    member = member_bytes(checkpoint, "model/w.npy")
    for cut in (1, 4, 47):
        replace_member(checkpoint, "model/w.npy", member[:-cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt .*'model/w.npy'"):
            ckpt_io.load(checkpoint)
        replace_member(checkpoint, "model/w.npy", member + b"\0" * cut)
        with pytest.raises(CheckpointError, match="truncated or corrupt .*'model/w.npy'"):
            ckpt_io.load(checkpoint)


# ------------------------------------------------------------------------------------------
# dtypes the engine cannot hold


def write_tl_file_with(path, array):
    tree = {"format": "tensorlite-save", "version": 1, "tree": {"x": {"__array__": "obj/x"}}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("obj/x.npy", npy_bytes(array) if array.dtype != object else _pickled_npy(array))
        archive.writestr("tree.json.npy", npy_bytes(np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)))


def _pickled_npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("array, what", [
    (np.array([1 + 2j, 3j]), "a complex array"),
    (np.array(["abc", "de"]), "a unicode string array"),
    (np.array([b"abc"]), "a byte-string array"),
    (np.array([{"a": 1}, None], dtype=object), "an object array"),
    (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "a structured array"),
    (np.zeros(3, dtype=">f8"), "non-native byte order"),
], ids=["complex", "unicode", "bytes", "object", "structured", "big-endian"])
def test_dtypes_the_engine_cannot_hold_are_refused_by_name(tmp_path, array, what):
    path = tmp_path / "state.npz"
    write_tl_file_with(path, array)
    with pytest.raises(SerializationError) as info:
        tl.load(path)
    message = str(info.value)
    assert type(info.value) is SerializationError and "\n" not in message, message
    assert what in message and "'obj/x.npy'" in message and str(path) in message, message


@pytest.mark.parametrize("value", [np.array([1j]), np.array(["text"]), np.complex64(1j), np.zeros(2, ">f4")],
                         ids=["complex", "unicode", "complex-scalar", "big-endian"])
def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path, value):
    path = tmp_path / "state.npz"
    with pytest.raises(TypeError, match="'obj/x'"):
        tl.save({"x": value}, path)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------
# not regular files, cut-short files, compressed archives


def load_in_thread(load, path, timeout=10):
    """load(path) in a thread; (returned value, raised exception). A load still blocked after
    `timeout` seconds fails the test (after unblocking a FIFO reader, so nothing is left hanging)."""
    result = {}

    def run():
        try:
            result["value"] = load(path)
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(timeout)
        pytest.fail(f"loading {path} blocked for {timeout} s")
    return result.get("value"), result.get("error")


@pytest.mark.parametrize("kind", ["fifo", "character-device", "directory"])
def test_tl_load_refuses_what_is_not_a_regular_file(tmp_path, kind):
    if kind == "fifo":
        path = str(tmp_path / "state.npz")
        os.mkfifo(path)
    elif kind == "character-device":
        path = "/dev/zero"
        if not os.path.exists(path):
            pytest.skip("no /dev/zero")
    else:
        path = str(tmp_path / "state.npz")
        os.mkdir(path)
    _, error = load_in_thread(tl.load, path)
    assert type(error) is SerializationError, repr(error)
    message = str(error)
    assert "\n" not in message and path in message and "not a regular file" in message, message


def test_compressed_archives_load_and_their_damage_is_an_error(tmp_path):
    original = tl_save_file(tmp_path / "plain.npz")
    arrays, tree = tl.serialization.split_arrays(original, "obj")
    document = {"format": "tensorlite-save", "version": 1, "tree": tree}
    arrays["tree.json"] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **arrays)
    assert_identical(tl.load(path), original)

    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("obj/w.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    for offset in range(start, start + info.compress_size, 13):
        for bit in (0, 3, 6):
            damaged = bytearray(raw)
            damaged[offset] ^= 1 << bit
            path.write_bytes(damaged)
            load_outcome(tl.load, path, SerializationError, original, "obj/w.npy")


# ------------------------------------------------------------------------------------------
# what a damaged ckpt.npz says about best.npz beside it


def damage_a_member(path, member="model/w.npy"):
    raw = bytearray(path.read_bytes())
    _, start, end = next(header for header in npy_headers(bytes(raw)) if header[0] == member)
    raw[end + 2] ^= 0x10  # a bit of the array's data: only the CRC can tell
    path.write_bytes(raw)


def test_a_damaged_ckpt_says_whether_best_beside_it_is_usable(tmp_path):
    latest, best = tmp_path / "ckpt.npz", tmp_path / "best.npz"
    tiny_checkpoint(best, iteration=40)
    tiny_checkpoint(latest, iteration=50)
    damage_a_member(latest)
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load(latest)
    message = str(info.value)
    assert type(info.value) is CheckpointError and "\n" not in message, message
    assert message.startswith("checkpoint is truncated or corrupt") and "'model/w.npy'" in message, message
    assert f"; {best} beside it is intact (iteration 40): use it instead (to --resume from it, copy it over {latest})" \
        in message, message

    damage_a_member(best, "optim/state/0/exp_avg.npy")
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load(latest)
    assert str(info.value).endswith(f"{latest}; {best} beside it is damaged too"), str(info.value)

    with pytest.raises(CheckpointError) as info:  # best.npz itself: nothing is said about ckpt.npz
        ckpt_io.load(best)
    assert "beside it" not in str(info.value)


# ------------------------------------------------------------------------------------------
# tensorlite-sample on a damaged checkpoint


@pytest.mark.parametrize("damage", [DAMAGED_HEADERS[0][1], set_header_length(lambda length: length - 16)],
                         ids=["header-that-does-not-parse", "header-length-in-the-padding"])
def test_sample_on_a_damaged_checkpoint_is_one_line(tmp_path, capsys, damage):
    path = tmp_path / "ckpt.npz"
    tiny_gpt_checkpoint(path)
    name = "model/transformer.h.0.mlp.c_fc.weight.npy"
    raw = member_bytes(path, name)
    damaged = damage(raw)
    assert damaged != raw and len(damaged) == len(raw)
    replace_member(path, name, damaged)  # with a CRC that matches the damage
    code = sample.main(["--checkpoint", str(path), "--num-tokens", "5"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("tensorlite-sample: error: checkpoint is truncated or corrupt"), lines[0]
    assert repr(name) in lines[0] and str(path) in lines[0], lines[0]


# ------------------------------------------------------------------------------------------
# metadata that parses as JSON but cannot be read


@pytest.mark.parametrize("field, what", [
    ("1" * 5000, "digits"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('"\\ud800"', "surrogate"),
], ids=["5000-digit-integer", "nested-100000-deep", "lone-surrogate"])
def test_hostile_metadata_is_one_checkpoint_error(tmp_path, field, what):
    path = tmp_path / "ckpt.npz"
    tiny_checkpoint(path)
    meta = member_bytes(path, "meta.json.npy")
    text = np.load(io.BytesIO(meta)).tobytes().decode("utf-8")
    text = text.replace('"iteration": 3', f'"iteration": {field}', 1)
    assert field in text
    replace_member(path, "meta.json.npy", npy_bytes(np.frombuffer(text.encode("utf-8"), np.uint8)))
    with pytest.raises(CheckpointError) as raised:
        ckpt_io.load(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and what in message
